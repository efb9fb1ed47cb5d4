"""Task-level entry points of the workflow: one function per rule, plain arguments, files in/out.

``workflow/scripts/*.py`` only unpack the ``snakemake`` object and call these, so every step can
also be run (and tested) from Python without Snakemake.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pandas as pd
import torch

from . import checkpoint as ckpt
from . import report as rep
from .data import load_heldout, make_heldout, reference_mean_target, save_heldout, trivial_predictor_mse
from .diffusion import MiningConfig
from .evaluation import EvalSettings, evaluate_set, per_problem_rows, predict, solution_metrics
from .seeding import derive_seed, resolve_device
from .training import CURVE_COLUMNS, TrainConfig, Trainer1D, build_diffusion

log = logging.getLogger("diffusion_lib")
MODEL_FORMAT = "ired-model-v1"
SPLITS = ("val_id", "val_ood", "test_id", "test_ood")


@contextlib.contextmanager
def logging_to(path: str | os.PathLike | None, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send ``diffusion_lib`` logging to ``path`` (and stderr); log any exception before re-raising."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="a"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    for h in handlers:
        h.setFormatter(fmt)
        log.addHandler(h)
    log.setLevel(level)
    try:
        yield log
    except BaseException as exc:
        if not (isinstance(exc, SystemExit) and exc.code in (0, None)):
            log.error("failed: %s\n%s", exc, traceback.format_exc())
        raise
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()


def _write_json(obj: Any, path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=2, default=float)
        fh.write("\n")


def _setup_torch(threads: int, device: str) -> torch.device:
    torch.set_num_threads(threads)
    dev = resolve_device(device)
    log.info("device %s, %d torch threads, torch %s", dev, torch.get_num_threads(), torch.__version__)
    return dev


# --------------------------------------------------------------------------- data
def make_data(outputs: Mapping[str, str], *, rank: int, seed: int, id_eps: float, ood_eps: float,
              val_size: int, test_size: int, reference_size: int, reference_path: str) -> None:
    """Write the four held-out sets (each from its own seed derived from ``seed``) and the
    trivial-predictor reference (zeros and per-entry-mean MSE per set)."""
    eps = {"id": id_eps, "ood": ood_eps}
    reference: dict[str, Any] = {"trivial_mse": {}}
    means = {kind: reference_mean_target(rank, e, derive_seed(seed, f"reference-{kind}"), reference_size)
             for kind, e in eps.items()}
    for split in SPLITS:
        kind = split.split("_")[1]
        size = val_size if split.startswith("val") else test_size
        heldout = make_heldout(size, rank, eps[kind], derive_seed(seed, split), name=split)
        save_heldout(heldout, outputs[split])
        reference["trivial_mse"][split] = trivial_predictor_mse(heldout, means[kind])
        log.info("%s: %d problems, eps %.3g, max |AY-I| %.2e, trivial MSE %s", split, size, eps[kind],
                 heldout.meta["max_abs_residual"], reference["trivial_mse"][split])
    _write_json(reference, reference_path)


# --------------------------------------------------------------------------- training
def train_config(train: Mapping[str, Any], *, seed: int, rank: int, id_eps: float) -> TrainConfig:
    """Map the config's ``train`` block (schema-validated) onto :class:`TrainConfig`."""
    ema = train.get("ema", {})
    keys = {"steps", "batch_size", "lr", "grad_clip", "timesteps", "eval_every", "val_size", "val_inner_steps",
            "log_every", "checkpoint_every", "max_loss"}
    return TrainConfig(**{k: train[k] for k in keys if k in train}, betas=tuple(train.get("betas", (0.9, 0.99))),
                       ema_decay=ema.get("decay", 0.995), ema_update_every=ema.get("update_every", 10),
                       ema_update_after_step=ema.get("update_after_step", 100), ema_power=ema.get("power", 2 / 3),
                       rank=rank, train_eps=id_eps, seed=seed)


def train_run(*, val_path: str, model_path: str, curve_path: str, status_path: str, resume_path: str,
              strategy: str, mining: Mapping[str, Any], train: Mapping[str, Any], seed: int, rank: int,
              id_eps: float, device: str = "auto", threads: int = 2) -> dict[str, Any]:
    """Train one (strategy, seed); write the model (raw + EMA), the learning curve and a status file."""
    dev = _setup_torch(threads, device)
    cfg = train_config(train, seed=seed, rank=rank, id_eps=id_eps)
    mining_cfg = MiningConfig.from_mapping(mining)
    val = load_heldout(val_path, rank=rank)
    torch.manual_seed(derive_seed(seed, "init"))
    diffusion = build_diffusion(rank, cfg.timesteps, mining_cfg)
    log.info("training %s seed %d: %s; %s", strategy, seed, mining_cfg, cfg)
    trainer = Trainer1D(diffusion, cfg, val, device=dev, resume_path=resume_path)
    start = time.time()
    result = trainer.train()
    status = {"strategy": strategy, "seed": seed, "mode": mining_cfg.mode, "status": result.status,
              "diverged_at": result.diverged_at, "steps_done": result.steps_done, "steps": cfg.steps,
              "train_seconds": result.train_seconds, "seconds_per_step": result.seconds_per_step,
              "cpu_seconds_per_step": result.cpu_seconds_per_step,
              # the time criterion's cost: CPU time on a CPU (robust to jobs sharing cores), wall time on a GPU
              "cost_seconds_per_step": result.cpu_seconds_per_step if dev.type == "cpu" else result.seconds_per_step,
              "resumed_from": result.resumed_from, "wall_seconds_this_attempt": time.time() - start,
              "device": str(dev), "threads": torch.get_num_threads(), "torch": str(torch.__version__)}
    torch.save({"format": MODEL_FORMAT, "rank": rank, "timesteps": cfg.timesteps, "mining": mining_cfg.__dict__,
                "model": trainer.diffusion.state_dict(), "ema": trainer.ema.ema_model.state_dict(),
                "status": status}, model_path)
    pd.DataFrame(result.curve, columns=CURVE_COLUMNS).to_csv(curve_path, index=False)
    _write_json(status, status_path)
    ckpt.remove(resume_path)
    if result.status == "diverged":
        log.error("run %s seed %d DIVERGED at step %s; outputs are marked diverged", strategy, seed, result.diverged_at)
    else:
        log.info("run %s seed %d completed: %d steps, %.1f s training (%.2f ms/step)", strategy, seed,
                 result.steps_done, result.train_seconds, 1000 * result.seconds_per_step)
    return status


def load_model(path: str | os.PathLike, device: torch.device) -> tuple[Any, Any, dict[str, Any]]:
    """(EMA diffusion, raw diffusion, status) from a model file written by :func:`train_run`."""
    try:
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"model file {path} is unreadable or truncated ({type(exc).__name__}); "
                         "rerun its training job") from None
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise ValueError(f"model file {path} is not a {MODEL_FORMAT} file")
    models = []
    for key in ("ema", "model"):
        d = build_diffusion(blob["rank"], blob["timesteps"], blob["mining"])
        d.load_state_dict(blob[key])
        models.append(d.to(device).eval())
    return models[0], models[1], blob["status"]


# --------------------------------------------------------------------------- evaluation
def evaluate_run(*, model_path: str, test_paths: Mapping[str, str], metrics_path: str, per_problem_path: str,
                 settings: Mapping[str, Any], rank: int, strategy: str, seed: int, device: str = "auto",
                 threads: int = 2) -> dict[str, Any]:
    """SPEC §7 on every test set for one trained run; a diverged run gets NaN metrics and its status."""
    dev = _setup_torch(threads, device)
    es = EvalSettings(default_inner=settings["default_inner"], inner_scale=settings["inner_scale"],
                      inner_steps=tuple(settings["inner_steps"]), batch_size=settings["batch_size"],
                      landscape_size=settings["landscape_size"])
    sets = {name: load_heldout(path, rank=rank) for name, path in test_paths.items()}
    ema, raw, status = load_model(model_path, dev)
    metrics: dict[str, Any] = {**{k: status[k] for k in ("strategy", "seed", "mode", "status", "diverged_at",
                                                         "steps_done", "train_seconds", "seconds_per_step",
                                                         "cost_seconds_per_step")},
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
        log.warning("run %s seed %d is %s; writing empty metrics", strategy, seed, status["status"])
    per_problem = pd.DataFrame(rows, columns=["set", "inner_steps", "problem", "mse", "residual", "rel_err"])
    per_problem.insert(0, "seed", seed)
    per_problem.insert(0, "strategy", strategy)
    Path(per_problem_path).parent.mkdir(parents=True, exist_ok=True)
    per_problem.to_csv(per_problem_path, index=False)
    _write_json(metrics, metrics_path)
    return metrics


# --------------------------------------------------------------------------- report
TABLES = ("runs", "strategies", "pairwise", "landscape", "test_time", "curves", "convergence", "ablation")


def aggregate(*, runs: Sequence[Mapping[str, str]], expected: Sequence[tuple[str, int]], reference_path: str,
              tables: Mapping[str, str], verdict_path: str, roles: Mapping[str, str], default_inner: int,
              improvement: float, alpha: float, sweep_points: Mapping[str, Any], training: Mapping[str, Any],
              name: str) -> dict[str, Any]:
    """Combine per-run files (each a dict with 'metrics', 'per_problem', 'curve' paths) into tables."""
    metrics, per_problem, curves = [], [], []
    for paths in runs:
        m, pp, curve = rep.load_run(paths["metrics"], paths["per_problem"], paths["curve"])
        metrics.append(m)
        per_problem.append(pp)
        curves.append(curve.assign(strategy=m["strategy"], seed=m["seed"], mode=m["mode"]))
    found = {(m["strategy"], m["seed"]) for m in metrics}
    missing = [f"{s}/seed{k}" for s, k in expected if (s, k) not in found]
    if missing:
        log.warning("missing runs (excluded): %s", ", ".join(missing))
    if not metrics:
        raise ValueError("no evaluated runs to aggregate")
    runs_df = rep.runs_table(metrics, sweep_points)
    pp_df = pd.concat(per_problem, ignore_index=True)
    curves_df = pd.concat(curves, ignore_index=True)
    out = {
        "runs": runs_df,
        "strategies": rep.strategies_table(runs_df),
        "pairwise": rep.pairwise_table(runs_df, pp_df, roles["baseline"],
                                       extra_pairs=[(roles.get("adversarial"), roles.get("random"))]),
        "landscape": rep.landscape_table(metrics),
        "test_time": rep.test_time_table(runs_df),
        "curves": curves_df,
        "convergence": rep.convergence(curves_df),
        "ablation": rep.ablation_table(runs_df, sweep_points, default_inner),
    }
    for key, df in out.items():
        Path(tables[key]).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(tables[key], index=False)
    verdict_info = rep.decide(runs_df, roles, default_inner, improvement, alpha)
    with open(reference_path) as fh:
        trivial = json.load(fh)["trivial_mse"]
    _write_json({**verdict_info, "missing": missing, "trivial_mse": {k: trivial[k] for k in ("test_id", "test_ood")},
                 "training": dict(training), "name": name, "default_inner": default_inner,
                 "roles": dict(roles)}, verdict_path)
    log.info("verdict: %s", verdict_info["scenario"])
    return verdict_info


def _cached(tables: Mapping[str, str], verdict_path: str) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The aggregate rule's cached tables (an empty CSV gives an empty frame) and its verdict."""
    frames = {}
    for key, path in tables.items():
        try:
            frames[key] = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            frames[key] = pd.DataFrame()
    with open(verdict_path) as fh:
        return frames, json.load(fh)


def draw_figures(*, tables: Mapping[str, str], verdict_path: str, figures: Mapping[str, str],
                 options: Mapping[str, Any]) -> None:
    """Draw the main figures ('mse', 'curves', 'landscape', 'test_time') from cached tables."""
    t, v = _cached(tables, verdict_path)
    rep.plot_mse(t["runs"], v["trivial_mse"], v["default_inner"], figures["mse"], options)
    rep.plot_learning_curves(t["curves"], figures["curves"], options)
    rep.plot_landscape(t["landscape"], figures["landscape"], options)
    rep.plot_test_time(t["runs"], figures["test_time"], options)


def draw_ablation(*, tables: Mapping[str, str], verdict_path: str, parameter: str, figure: str,
                  options: Mapping[str, Any]) -> None:
    """Draw the ablation figure of one swept parameter from cached tables."""
    t, v = _cached(tables, verdict_path)
    rep.plot_ablation(t["ablation"], t["runs"], v["roles"]["baseline"], parameter, v["default_inner"], figure, options)


def write_report(*, tables: Mapping[str, str], verdict_path: str, figures: Mapping[str, str], report_path: str) -> None:
    """Write ``report.md`` (figure links relative to the report's folder)."""
    t, v = _cached(tables, verdict_path)
    here = Path(report_path).parent.resolve()
    rel = {k: os.path.relpath(Path(p).resolve(), here) for k, p in figures.items()}
    text = rep.render_markdown(name=v["name"], verdict_info=v, strategies=t["strategies"], pairwise=t["pairwise"],
                               test_time=t["test_time"], convergence_table=t["convergence"], trivial=v["trivial_mse"],
                               training=v["training"], missing=v["missing"], default_inner=v["default_inner"],
                               figures=rel, ablation=t["ablation"])
    Path(report_path).write_text(text)
