"""Rule ``evaluate``: method §7 metrics of one trained run on the held-out test sets."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..train.checkpoint import load_model
from ..ired.closed_form import supports
from ..ired.data import load_heldout
from ..ired.evaluation import EvalSettings, evaluate_set, per_problem_rows, predict, solution_metrics
from .runtime import log, setup_torch, write_json

STATUS_KEYS = ("run", "seed", "mode", "status", "diverged_at", "steps_done", "train_seconds", "seconds_per_step",
               "cost_seconds_per_step", "device", "torch")


def eval_settings(settings: Mapping[str, Any]) -> EvalSettings:
    """Map the config's ``evaluation`` block (schema-validated) onto :class:`EvalSettings`."""
    probes = settings.get("landscape_probes", {})
    return EvalSettings(default_inner=settings["default_inner"], inner_scale=settings["inner_scale"],
                        inner_steps=tuple(settings["inner_steps"]), batch_size=settings["batch_size"],
                        landscape_size=settings["landscape_size"], landscape=settings.get("landscape", True),
                        **{f"landscape_{k}": tuple(v) if isinstance(v, list) else v for k, v in probes.items()})


def evaluate_run(*, model_path: str, test_paths: Mapping[str, str], metrics_path: str, per_problem_path: str,
                 settings: Mapping[str, Any], rank: int, device: str = "auto", threads: int = 2) -> dict[str, Any]:
    """method §7 on every test set for one trained run; a diverged run gets NaN metrics and its status.

    The metrics carry the run's seed and mode but no strategy name: a run is shared by every study
    whose config trains it, and each study labels it (see :func:`diffusion_lib.jobs.study.aggregate`).
    """
    dev = setup_torch(threads, device)
    es = eval_settings(settings)
    sets = {name: load_heldout(path, rank=rank) for name, path in test_paths.items()}
    ema, raw, status = load_model(model_path, dev)
    log.info("energy gradients: %s", "the closed form (SPEC §3's network), checked against autograd in float64 at "
             "its first use" if ema.uses_closed_form() else f"autograd: {supports(ema.model.ebm)}")
    metrics: dict[str, Any] = {**{k: status.get(k) for k in STATUS_KEYS},
                               "flops_per_step": status.get("flops_per_step", math.nan),
                               "default_inner": es.default_inner, "sets": {},
                               "landscape": [], "raw_model_mse": {}}
    rows: list[dict[str, Any]] = []
    if status["status"] == "completed":
        for name, heldout in sets.items():
            t0 = time.time()
            ev = evaluate_set(ema, heldout, es, name=name)
            metrics["sets"][name] = {str(k): ev.summary(k) for k in es.all_inner_steps}
            if name == "test_id":
                metrics["landscape"] = ev.landscape
                pred, _ = predict(raw, heldout, es.default_inner, es.inner_scale, es.batch_size, es.seed)
                metrics["raw_model_mse"][name] = solution_metrics(pred, heldout)["mse"].mean().item()
            rows += per_problem_rows(ev)
            log.info("%s: MSE %s (inner steps -> MSE) in %.1f s", name,
                     {k: round(v["mse"], 6) for k, v in metrics["sets"][name].items()}, time.time() - t0)
    else:
        log.warning("run %s is %s; writing empty metrics", status.get("run"), status["status"])
    per_problem = pd.DataFrame(rows, columns=["set", "inner_steps", "problem", "mse", "residual", "rel_err"])
    per_problem.insert(0, "seed", status["seed"])
    per_problem.insert(0, "run", status.get("run"))
    Path(per_problem_path).parent.mkdir(parents=True, exist_ok=True)
    per_problem.to_csv(per_problem_path, index=False)
    write_json(metrics, metrics_path)
    return metrics
