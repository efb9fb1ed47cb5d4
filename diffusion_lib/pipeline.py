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
from . import tables as tab
from .convergence import ConvergenceRule, gap_trend, run_gate, strategy_gate
from .data import load_heldout, make_heldout, reference_mean_target, save_heldout, trivial_predictor_mse
from .diffusion import MiningConfig
from .evaluation import EvalSettings, evaluate_set, per_problem_rows, predict, solution_metrics
from .seeding import derive_seed, resolve_device
from .training import CURVE_COLUMNS, TrainConfig, Trainer1D, build_diffusion
from .verdict import Arm, decide

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
    """Thread count, device, and denormal flushing on the CPU.

    Training drives some float32 values into the denormal range (below 1.2e-38), where x86 CPUs
    take a slow path: measured here, adversarial training at batch 64 fell from 29 to 8 steps/s
    after about 200 steps. Flushing them to zero (a CPU-only setting) keeps the speed; it changes
    values far below anything the loss can resolve, and runs stay deterministic.
    """
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
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
    schedule = train.get("lr_schedule", {})
    keys = {"steps", "batch_size", "lr", "grad_clip", "timesteps", "eval_every", "val_size", "val_inner_steps",
            "log_every", "checkpoint_every", "max_loss", "validate_raw"}
    return TrainConfig(**{k: train[k] for k in keys if k in train}, betas=tuple(train.get("betas", (0.9, 0.99))),
                       lr_schedule=schedule.get("kind", "constant"), warmup_steps=schedule.get("warmup_steps", 0),
                       min_lr_ratio=schedule.get("min_lr_ratio", 0.0),
                       warmdown_fraction=schedule.get("warmdown_fraction", 0.5),
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
              "cpu_seconds_per_step": result.cpu_seconds_per_step, "flops_per_step": result.flops_per_step,
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
    probes = settings.get("landscape_probes", {})
    es = EvalSettings(default_inner=settings["default_inner"], inner_scale=settings["inner_scale"],
                      inner_steps=tuple(settings["inner_steps"]), batch_size=settings["batch_size"],
                      landscape_size=settings["landscape_size"],
                      **{f"landscape_{k}": tuple(v) if isinstance(v, list) else v for k, v in probes.items()})
    sets = {name: load_heldout(path, rank=rank) for name, path in test_paths.items()}
    ema, raw, status = load_model(model_path, dev)
    metrics: dict[str, Any] = {**{k: status[k] for k in ("strategy", "seed", "mode", "status", "diverged_at",
                                                         "steps_done", "train_seconds", "seconds_per_step",
                                                         "cost_seconds_per_step", "device", "torch")},
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
        log.warning("run %s seed %d is %s; writing empty metrics", strategy, seed, status["status"])
    per_problem = pd.DataFrame(rows, columns=["set", "inner_steps", "problem", "mse", "residual", "rel_err"])
    per_problem.insert(0, "seed", seed)
    per_problem.insert(0, "strategy", strategy)
    Path(per_problem_path).parent.mkdir(parents=True, exist_ok=True)
    per_problem.to_csv(per_problem_path, index=False)
    _write_json(metrics, metrics_path)
    return metrics


# --------------------------------------------------------------------------- report
TABLES = ("runs", "strategies", "endpoints", "contrasts", "landscape", "test_time", "curves", "convergence",
          "convergence_runs", "compute_matched", "diagnostics", "cost", "ablation")


def aggregate(*, runs: Sequence[Mapping[str, str]], expected: Sequence[tuple[str, int]], reference_path: str,
              tables: Mapping[str, str], verdict_path: str, roles: Mapping[str, str], default_inner: int,
              primary: Mapping[str, Any], delta: float, alpha: float, convergence: Mapping[str, Any],
              sweep_points: Mapping[str, Any], training: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Combine per-run files (dicts with 'metrics' and 'curve' paths) into the study's tables and verdict."""
    metrics, curves = [], []
    for paths in runs:
        m, curve = tab.load_run(paths["metrics"], paths["curve"])
        metrics.append(m)
        cost = "train_cpu_seconds" if str(m.get("device", "cpu")).startswith("cpu") else "train_seconds"
        curves.append(curve.assign(strategy=m["strategy"], seed=m["seed"], mode=m["mode"],
                                   compute_seconds=curve.get(cost, math.nan)))
    found = {(m["strategy"], m["seed"]) for m in metrics}
    missing = [f"{s}/seed{k}" for s, k in expected if (s, k) not in found]
    if missing:
        log.warning("missing runs (excluded): %s", ", ".join(missing))
    if not metrics:
        raise ValueError("no evaluated runs to aggregate")
    with open(reference_path) as fh:
        trivial = {k: v for k, v in json.load(fh)["trivial_mse"].items() if k in ("test_id", "test_ood")}
    rule = ConvergenceRule.from_mapping(convergence)
    primary_ep = tab.Endpoint(primary["set"], default_inner if primary["inner_steps"] is None else primary["inner_steps"])
    runs_df = tab.runs_table(metrics, sweep_points)
    curves_df = pd.concat(curves, ignore_index=True)
    values = tab.endpoint_values(runs_df, tab.endpoint_family(primary_ep, default_inner))
    base = roles["baseline"]
    present = list(dict.fromkeys(runs_df["strategy"]))
    mining_roles = [roles[r] for r in ("adversarial", "random") if roles.get(r) in present]
    primary_confidence = 1 - alpha / max(len(mining_roles), 1)
    pairs = [(s, base, "verdict") for s in mining_roles]
    pairs += [(s, base, "exploratory") for s in present if s != base and s not in mining_roles]
    if len(mining_roles) == 2:
        pairs.append((roles["adversarial"], roles["random"], "exploratory"))
    contrasts = tab.contrasts_table(values, pairs, primary_ep, delta, alpha, primary_confidence)
    gates = strategy_gate(curves_df, rule)
    matched = [tab.compute_matched_table(curves_df, base, measure) for measure in ("train_flops", "compute_seconds")]
    out = {
        "runs": runs_df,
        "strategies": tab.strategies_table(runs_df, trivial),
        "endpoints": values,
        "contrasts": contrasts,
        "landscape": tab.landscape_table(metrics),
        "test_time": tab.test_time_table(runs_df),
        "curves": curves_df,
        "convergence": gates,
        "convergence_runs": run_gate(curves_df, rule),
        "compute_matched": pd.concat([m for m in matched if not m.empty] or [pd.DataFrame()], ignore_index=True),
        "diagnostics": tab.diagnostics_table(curves_df, runs_df, default_inner),
        "cost": tab.cost_table(runs_df, base),
        "ablation": tab.ablation_table(runs_df, sweep_points, default_inner),
    }
    for key, df in out.items():
        Path(tables[key]).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(tables[key], index=False)

    def arm(strategy: str) -> Arm:
        per_seed = runs_df[runs_df["strategy"] == strategy].drop_duplicates("seed")
        sel = values[(values["strategy"] == strategy) & (values["endpoint"] == primary_ep.key)]
        gate = gates[gates["strategy"] == strategy]
        return Arm(strategy, str(per_seed["mode"].iloc[0]), sel["value"].tolist(), len(per_seed),
                   int((per_seed["status"] == "diverged").sum()),
                   gate.iloc[0].to_dict() if len(gate) else {"converged": None, "evals_seen": 0},
                   gap_trend(curves_df, strategy, base, rule) if strategy != base else {})

    if base in present:
        v = decide(arm(base), [arm(s) for s in mining_roles], primary_ep.label, delta, alpha).as_dict()
    else:
        v = {"outcome": "inconclusive", "sentence": f"Inconclusive: the baseline strategy {base!r} has no runs.",
             "scenario": None, "strategy": None, "confidence": primary_confidence, "contrasts": [],
             "reasons": []}
    environment = runs_df.drop_duplicates(["strategy", "seed"])[["device", "torch"]].astype(str)
    _write_json({**v, "primary": {"key": primary_ep.key, "label": primary_ep.label}, "delta": delta, "alpha": alpha,
                 "convergence_rule": rule.describe(), "missing": missing, "trivial_mse": trivial,
                 "inner_loop_flips": tab.inner_loop_flips(contrasts[contrasts["role"] == "verdict"], default_inner,
                                                          alpha),
                 "training": dict(training), "name": name, "default_inner": default_inner, "roles": dict(roles),
                 "devices": sorted(set(environment["device"])), "torch": sorted(set(environment["torch"]))},
                verdict_path)
    log.info("verdict: %s", v["sentence"])
    return v


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
    """Draw the main figures from cached tables (see :mod:`diffusion_lib.figures`)."""
    from . import figures as fig

    t, v = _cached(tables, verdict_path)
    fig.plot_forest(t["contrasts"], v, figures["forest"], options)
    fig.plot_mse(t["runs"], v["trivial_mse"], v["default_inner"], figures["mse"], options)
    fig.plot_learning_curves(t["curves"], v["trivial_mse"], figures["curves"], options)
    fig.plot_compute_curves(t["curves"], figures["compute"], options)
    fig.plot_diagnostics(t["curves"], figures["diagnostics"], options)
    fig.plot_landscape(t["landscape"], figures["landscape"], options)
    fig.plot_test_time(t["runs"], figures["test_time"], options)


def draw_ablation(*, tables: Mapping[str, str], verdict_path: str, parameter: str, figure: str,
                  options: Mapping[str, Any]) -> None:
    """Draw the ablation figure of one swept parameter from cached tables."""
    from . import figures as fig

    t, v = _cached(tables, verdict_path)
    fig.plot_ablation(t["ablation"], t["runs"], v["roles"]["baseline"], parameter, v["default_inner"], figure, options)


def write_report(*, tables: Mapping[str, str], verdict_path: str, figures: Mapping[str, str], report_path: str,
                 html_path: str | None = None) -> None:
    """Write ``report.md`` (figure links relative to its folder) and, if asked, the self-contained
    ``report.html`` page (figures embedded) that the Snakemake HTML report shows."""
    t, v = _cached(tables, verdict_path)
    doc = rep.build_report(v, t, figures)
    here = Path(report_path).parent.resolve()
    Path(report_path).write_text(rep.to_markdown(doc, lambda p: os.path.relpath(Path(p).resolve(), here), figures))
    if html_path:
        Path(html_path).write_text(rep.to_html(doc, figures))
