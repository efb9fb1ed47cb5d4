"""Synthetic per-run and per-rung evaluation files, and the whole aggregation over them.

Every arm's per-seed test MSEs have an exact mean and relative spread (:func:`values`), so a test
fixes the relative change it expects. A run's files follow the format of
:mod:`diffusion_lib.jobs.evaluate` (ID/OOD test sets, 0 and 5 inference inner steps); a rung model's
files are the same, one folder per (strategy, seed, rung, kind).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from diffusion_lib.jobs.study import TABLES, aggregate

ROLES = {"baseline": "baseline", "random": "random", "adversarial": "adversarial"}
TRIVIAL = {s: {"zeros": 0.02, "entry_mean": 0.014} for s in ("test_id", "test_ood")}
BATCH = 64


def values(mean: float, spread: float = 0.01, n: int = 5) -> list[float]:
    """``n`` values with exactly this mean and relative sample standard deviation."""
    z = np.linspace(-1, 1, n)
    return list(mean * (1 + spread * (z - z.mean()) / z.std(ddof=1)))


def write_model(folder: Path, mode: str, seed: int, test_mse: float, *, falling: bool = False, cost: float = 0.01,
                status: str = "completed", steps: int = 1000, unplateaued: bool = False,
                no_loop: float = 2.0) -> dict[str, str]:
    """metrics.json and curve.csv of one synthetic model in ``folder``. ``falling``: a validation
    curve still falling steeply at the end; ``unplateaued``: one that still falls 6% over its last
    three evaluations (fails a ±2% window on its own); ``no_loop``: the test MSE without the
    inference inner loop, as a multiple of that with it."""
    folder.mkdir(parents=True)
    sets = {} if status != "completed" else {
        s: {str(k): {"mse": test_mse * (1 if k else no_loop) * (10 if s == "test_ood" else 1), "residual_mean": 16.0,
                     "residual_median": 16.0, "rel_err_mean": 0.5, "infer_ms_per_problem": 1.0, "accept_rate": 0.6}
            for k in (0, 5)} for s in ("test_id", "test_ood")}
    metrics = {"run": folder.name, "seed": seed, "mode": mode, "status": status, "diverged_at": None,
               "steps_done": steps, "train_seconds": 10.0, "seconds_per_step": cost, "cost_seconds_per_step": cost,
               "flops_per_step": 1e9 * cost / 0.01, "device": "cpu", "torch": "test", "default_inner": 5,
               "sets": sets, "landscape": [], "raw_model_mse": {"test_id": test_mse * 1.1}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    at = np.linspace(steps / 5, steps, 5).astype(int)
    shape = ([3.0, 1.8, 1.3, 1.12, 1.0] if falling else [3.0, 1.2, 1.06, 1.03, 1.0] if unplateaued
             else [3.0, 1.2, 1.003, 1.0, 1.001])
    pd.DataFrame({"step": at, "loss": 0.5, "loss_mse": 0.3, "loss_energy": 0.1, "val_mse_ema": test_mse * np.array(shape),
                  "val_mse_raw": test_mse * np.array(shape), "train_flops": at * 1e9 * cost / 0.01,
                  "train_cpu_seconds": at * cost, "grad_norm": 3.0, "clip_frac": 1.0,
                  "saturated_frac": 0.0 if mode == "none" else 0.85}).to_csv(folder / "curve.csv", index=False)
    return {"metrics": str(folder / "metrics.json"), "curve": str(folder / "curve.csv")}


def study(tmp_path: Path, arms: Mapping[str, tuple[str, float, Mapping[str, Any]]], *,
          ladder: Sequence[int] = (250, 500, 1000), rung_scale: Mapping[str, Sequence[float]] = {},
          compute_matched: Mapping[str, tuple[int, float]] = {}, delete: Sequence[str] = (),
          spread: float = 0.01, seeds: int = 5, sweep_points: Mapping[str, Mapping[str, Any]] = {}) -> dict[str, Any]:
    """Aggregate synthetic runs and rungs; returns the verdict dict.

    ``arms``: strategy -> (mode, mean test MSE at the full budget, :func:`write_model` kwargs, and
    ``unplateaued_seeds``: the seeds whose run alone fails the plateau check).
    ``ladder``: rung steps, the last the full budget (the run itself). ``rung_scale``: per strategy,
    the factor on its MSE at each smaller rung (default 1: the same values). ``compute_matched``:
    per mining strategy, (steps, factor on its full-budget MSE). ``delete``: rung folder names
    whose files are removed after writing (missing rung models). ``sweep_points``: as the config's
    (strategy -> base and swept values), for the ablation table."""
    runs, rungs, expected = [], [], []
    for strategy, (mode, mse, arm_kw) in arms.items():
        for seed, value in enumerate(values(mse, spread, seeds)):
            name = f"{strategy}-{seed}"
            kw = {k: v for k, v in arm_kw.items() if k != "unplateaued_seeds"}
            if seed in arm_kw.get("unplateaued_seeds", ()):
                kw["unplateaued"] = True
            paths = write_model(tmp_path / "runs" / name, mode, seed, value, steps=ladder[-1], **kw)
            runs.append({"strategy": strategy, "seed": seed, "run": name, **paths})
            expected.append((strategy, seed))
            budgets = [(steps, "ladder", rung_scale.get(strategy, [1.0] * len(ladder))[i] if i < len(ladder) - 1
                        else None) for i, steps in enumerate(ladder)]
            if strategy in compute_matched:
                budgets.append((compute_matched[strategy][0], "compute_matched", compute_matched[strategy][1]))
            for steps, kind, scale in budgets:
                if scale is None:  # the full rung is the run itself
                    rung_paths = paths
                else:
                    rung_kw = {k: v for k, v in kw.items() if k not in ("falling", "unplateaued")}
                    rung_paths = write_model(tmp_path / "rungs" / f"{name}@{steps}-{kind}", mode, seed, value * scale,
                                             steps=steps, **rung_kw)
                rungs.append({"strategy": strategy, "seed": seed, "run": name, "rung": steps, "kind": kind,
                              "samples": steps * BATCH, **rung_paths})
    for folder in delete:
        for f in (tmp_path / "rungs" / folder).iterdir():
            f.unlink()
    ref = tmp_path / "reference.json"
    ref.write_text(json.dumps({"trivial_mse": TRIVIAL}))
    verdict_path = tmp_path / "verdict.json"
    aggregate(runs=runs, expected=expected, reference_path=str(ref),
              tables={t: str(tmp_path / f"{t}.csv") for t in TABLES}, verdict_path=str(verdict_path),
              roles=ROLES, default_inner=5, primary={"set": "test_id", "inner_steps": None}, delta=0.05, alpha=0.05,
              convergence={"method": "window", "evals": 3, "tolerance": 0.02}, sweep_points=sweep_points,
              training={"steps": ladder[-1], "batch_size": BATCH, "rank": 20, "lr": 5e-4,
                        "lr_schedule": {"kind": "wsd", "warmup_steps": 10, "min_lr_ratio": 0.05}}, name="t", rungs=rungs,
              ladder={"rungs": list(ladder), "decay_fraction": 0.2, "batch_size": BATCH, "paper_samples": 204_800_000,
                      "compute_matched": {s: c[0] for s, c in compute_matched.items()}})
    return json.loads(verdict_path.read_text())
