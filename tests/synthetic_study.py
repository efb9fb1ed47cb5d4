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

from diffusion_lib.jobs.study import aggregate
from diffusion_lib.plan.files import TABLES

ROLES = {"baseline": "baseline", "random": "random", "adversarial": "adversarial"}
TRIVIAL = {s: {"zeros": 0.02, "entry_mean": 0.014} for s in ("test_id", "test_ood")}
BATCH = 64


def values(mean: float, spread: float = 0.01, n: int = 5) -> list[float]:
    """``n`` values with exactly this mean and relative sample standard deviation."""
    z = np.linspace(-1, 1, n)
    return list(mean * (1 + spread * (z - z.mean()) / z.std(ddof=1)))


#: validation curves (multiples of the final test MSE) at ten evaluations, every tenth of the run; under
#: the studies' wsd schedule with decay fraction 0.2 the first eight are the constant-lr trunk
SHAPES = {
    # flat over the trunk's last six evaluations (within 0.2%), then the decay gains 6%: passes the
    # trunk's plateau check although the run's own last evaluations fall (the decay is never read)
    "plateaued": [3.0, 1.5, 1.062, 1.058, 1.061, 1.059, 1.062, 1.06, 1.02, 1.0],
    "falling": [3.0, 2.6, 2.2, 1.9, 1.7, 1.5, 1.35, 1.2, 1.1, 1.0],  # still falling on the trunk
    # its trunk falls 4% per evaluation over the last six (about 10% per doubling): fails the slope check
    "unplateaued": [3.0, 1.5, 1.28, 1.23, 1.18, 1.13, 1.09, 1.05, 1.02, 1.0],
    "blowup": [3.0, 1.5, 1.062, 1.058, 1.061, 1.059, 3.0, 8.0, 10.0, 10.0],  # leaves its best and climbs 9x, no NaN
}
PROBLEMS = 16


def write_model(folder: Path, mode: str, seed: int, test_mse: float, *, falling: bool = False, cost: float = 0.01,
                status: str = "completed", steps: int = 1000, unplateaued: bool = False, blowup: bool = False,
                no_loop: float = 2.0, failure: float | None = None, trunk_drift: float = 0.0) -> dict[str, str]:
    """metrics.json and curve.csv of one synthetic model in ``folder``, its validation curve one of
    :data:`SHAPES`: ``falling`` (still falling steeply on the trunk), ``unplateaued`` (its trunk still
    falls about 10% per doubling: fails the slope check on its own), ``blowup`` (climbs 9x
    above its best without a NaN), else ``plateaued``; ``no_loop``: the test MSE without the inference
    inner loop, as a multiple of that with it. ``per_problem.csv`` holds :data:`PROBLEMS` problems of
    the primary endpoint whose mean is the test MSE: equal, or with ``failure`` one of them that many
    times the others. ``trunk_drift``: the validation curve times step^drift (a trend per doubling
    of ``drift`` in log MSE)."""
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
    others = PROBLEMS * test_mse / (PROBLEMS - 1 + failure) if failure else test_mse
    mse = [others * failure if failure and i == 0 else others for i in range(PROBLEMS)]
    pd.DataFrame({"run": folder.name, "seed": seed, "set": "test_id", "inner_steps": 5, "problem": range(PROBLEMS),
                  "mse": mse, "residual": 16.0, "rel_err": 0.5}).to_csv(folder / "per_problem.csv", index=False)
    at = np.linspace(steps / 10, steps, 10).astype(int)
    shape = SHAPES["falling" if falling else "unplateaued" if unplateaued else "blowup" if blowup else "plateaued"]
    curve = test_mse * np.array(shape) * (at / at[-1]) ** (trunk_drift / np.log(2))
    pd.DataFrame({"step": at, "loss": 0.5, "loss_mse": 0.3, "loss_energy": 0.1, "val_mse_ema": curve,
                  "val_mse_raw": curve, "train_flops": at * 1e9 * cost / 0.01,
                  "train_cpu_seconds": at * cost, "grad_norm": 3.0, "clip_frac": 1.0,
                  "saturated_frac": 0.0 if mode == "none" else 0.85}).to_csv(folder / "curve.csv", index=False)
    return {"metrics": str(folder / "metrics.json"), "curve": str(folder / "curve.csv"),
            "per_problem": str(folder / "per_problem.csv")}


def study(tmp_path: Path, arms: Mapping[str, tuple[str, float, Mapping[str, Any]]], *,
          ladder: Sequence[int] = (250, 500, 1000), rung_scale: Mapping[str, Sequence[float]] = {},
          compute_matched: Mapping[str, tuple[int, float]] = {}, delete: Sequence[str] = (),
          spread: float = 0.01, seeds: int = 5, sweep_points: Mapping[str, Mapping[str, Any]] = {},
          instability: Mapping[str, Any] | None = None, growth: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Aggregate synthetic runs and rungs; returns the verdict dict.

    ``arms``: strategy -> (mode, mean test MSE at the full budget, :func:`write_model` kwargs, and
    ``unplateaued_seeds`` / ``blowup_seeds`` / ``failure_seeds``: the seeds whose run alone fails the
    plateau check / blows up at the full budget / has one inference failure 30x its other problems).
    ``ladder``: rung steps, the last the full budget (the run itself). ``rung_scale``: per strategy,
    the factor on its MSE at each smaller rung (default 1: the same values). ``compute_matched``:
    per mining strategy, (steps, factor on its full-budget MSE). ``delete``: rung folder names
    whose files are removed after writing (missing rung models). ``sweep_points``: as the config's
    (strategy -> base and swept values), for the ablation table."""
    runs, rungs, expected = [], [], []
    for strategy, (mode, mse, arm_kw) in arms.items():
        for seed, value in enumerate(values(mse, spread, seeds)):
            name = f"{strategy}-{seed}"
            kw = {k: v for k, v in arm_kw.items() if k not in ("unplateaued_seeds", "blowup_seeds", "failure_seeds")}
            for flag in ("unplateaued", "blowup"):
                if seed in arm_kw.get(f"{flag}_seeds", ()):
                    kw[flag] = True
            if seed in arm_kw.get("failure_seeds", ()):
                kw["failure"] = 30.0
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
                    rung_kw = {k: v for k, v in kw.items() if k not in ("falling", "unplateaued", "blowup", "failure")}
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
              comparison={**ROLES, "primary": {"set": "test_id", "inner_steps": None}, "delta": 0.05, "alpha": 0.05,
                          "convergence": {"evals": 6, "tolerance": 0.025}, "instability": instability or {}},
              default_inner=5, sweep_points=sweep_points,
              training={"steps": ladder[-1], "batch_size": BATCH, "rank": 20, "lr": 5e-4,
                        "lr_schedule": {"kind": "wsd", "warmup_steps": 10, "min_lr_ratio": 0.05}}, name="t", rungs=rungs,
              ladder={"rungs": list(ladder), "decay_fraction": 0.2, "batch_size": BATCH, "paper_samples": 204_800_000,
                      "compute_matched": {s: c[0] for s, c in compute_matched.items()}}, growth=growth)
    return json.loads(verdict_path.read_text())


def trend(source: str, estimate: float, half: float = 0.005, first: int = 3000, last: int = 6000) -> "Trend":
    """A :class:`~diffusion_lib.analysis.trend.Trend` reading with this estimate and CI half-width."""
    from diffusion_lib.analysis.trend import Trend

    return Trend(source, estimate, estimate - half, estimate + half, 5, 5, 6 if source == "trunk" else 2, first, last)


def gap(name: str, estimates: Sequence[float], samples: Sequence[int] = (46_400, 92_800, 185_600),
        rungs: tuple[float, float] | None = (0.0, 0.005), trunk: tuple[float, float] | None = (0.0, 0.005),
        informative: Sequence[bool] | None = None, unstable: Sequence[bool] = ()) -> "GapStability":
    """A :class:`~diffusion_lib.analysis.stability.GapStability` of ``name`` vs the baseline with these
    estimates at rungs of ``samples`` (batch 64; the last the full budget), every rung informative
    unless said, and its two trend readings per doubling, each (estimate, CI half-width), or None
    for a reading that was not taken: flat and tight by default."""
    from diffusion_lib.analysis.stability import GapStability

    informative = tuple(informative) if informative is not None else (True,) * len(estimates)
    steps = tuple(s // BATCH for s in samples)
    return GapStability(name, "baseline", 0.05, steps, tuple(samples), tuple(estimates), informative,
                        tuple((0.3, 0.3) for _ in estimates), tuple(unstable), steps[-1],
                        trend("rungs", *rungs) if rungs else None, trend("trunk", *trunk) if trunk else None)
