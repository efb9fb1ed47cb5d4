"""The convergence gate (SPEC §8): has a validation curve reached a plateau when training stopped?

A comparison of runs stopped while one strategy is still improving measures learning speed, not
the method, so the verdict is "not decided at this budget" when a compared strategy fails the gate.

The rule (:class:`ConvergenceRule`, from the config's ``comparison.convergence``) looks at the last
``evals`` validation evaluations of the EMA model's MSE:

* ``window`` (default): converged when every one of them lies within ±``tolerance`` (relative) of
  their mean;
* ``slope``: converged when the 95% CI of the least-squares slope of log MSE against the step, over
  those evaluations, includes 0 or lies above it (the curve is no longer measurably falling).

Per strategy the rule reads the mean over seeds of the curves (one evaluation schedule is shared by
every run), whose noise is smaller: that is the gate of the verdict's rule 2; per run it reads that
run's curve, a diagnostic reported beside it (and required of every compared run before a win is
declared). A curve with fewer than ``evals`` evaluations cannot be judged and does not pass.

**Where it looks** (SPEC §8.1): never at a decay segment, whose last evaluations measure the
annealing gain, not convergence. Under warmup-stable-decay the rule reads the constant-learning-rate
trunk's evaluations up to the last rung's branch point (:func:`plateau_window_end`: ``until``); with a
constant schedule, the run's last evaluations.

:func:`gap_trend` reports which way a strategy's gap to the baseline (relative, on the seed-mean
validation curves) moved over the same evaluations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from ..settings.lr_schedule import decay_start

METHODS = ("window", "slope")


@dataclass(frozen=True)
class ConvergenceRule:
    """Plateau rule; see the module docstring."""

    method: str = "window"
    evals: int = 3
    tolerance: float = 0.02
    metric: str = "val_mse_ema"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"convergence.method': {self.method!r} is not one of {list(METHODS)}")
        if self.evals < 2 or (self.method == "slope" and self.evals < 3):
            raise ValueError(f"convergence.evals': {self.evals} is too few for method {self.method!r} "
                             "(window needs 2, slope 3)")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> "ConvergenceRule":
        return cls(**dict(cfg or {}))

    def describe(self) -> str:
        if self.method == "window":
            return (f"the last {self.evals} validation MSEs (EMA model) all within ±{self.tolerance:.1%} "
                    "of their mean")
        return f"the 95% CI of the slope of log validation MSE over the last {self.evals} evaluations includes 0"

    def assess(self, steps: Any, values: Any) -> dict[str, Any]:
        """``converged`` (True/False, None when too few evaluations), the relative change from the
        first to the last of the window (``tail_change``) and the window's relative ``spread``."""
        s, v = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
        keep = np.isfinite(v) & (v > 0)
        s, v = s[keep], v[keep]
        if len(v) < self.evals:
            return {"converged": None, "tail_change": math.nan, "spread": math.nan, "evals_seen": int(len(v))}
        s, v = s[-self.evals:], v[-self.evals:]
        tail_change = float(v[-1] / v[0] - 1)
        spread = float(np.max(np.abs(v - v.mean())) / v.mean())
        if self.method == "window":
            converged = spread <= self.tolerance
        else:
            fit = stats.linregress(s, np.log(v))
            half = float(stats.t.ppf(0.975, len(v) - 2)) * fit.stderr
            converged = bool(fit.slope + half >= 0)
        return {"converged": bool(converged), "tail_change": tail_change, "spread": spread,
                "evals_seen": int(len(v))}


def plateau_window_end(schedule: str, full_budget: int, decay_fraction: float) -> int | None:
    """The last step the plateau check may read: the full budget's branch point under ``wsd`` (the
    end of the constant-lr trunk), None (the whole curve) otherwise."""
    return decay_start(full_budget, decay_fraction) if schedule == "wsd" else None


def _until(curves: pd.DataFrame, until: int | None) -> pd.DataFrame:
    return curves if until is None else curves[curves["step"] <= until]


def _mean_curve(curves: pd.DataFrame, metric: str) -> pd.Series:
    return curves.dropna(subset=[metric]).groupby("step")[metric].mean().sort_index()


def run_gate(curves: pd.DataFrame, rule: ConvergenceRule, until: int | None = None) -> pd.DataFrame:
    """One row per (strategy, seed) with the rule's result on that run's validation curve up to
    step ``until`` (the trunk's end, :func:`plateau_window_end`; None: the whole curve)."""
    rows = []
    curves = _until(curves, until)
    for (strategy, seed), g in curves.dropna(subset=[rule.metric]).groupby(["strategy", "seed"], sort=False):
        g = g.sort_values("step")
        rows.append({"strategy": strategy, "seed": seed, **rule.assess(g["step"], g[rule.metric])})
    return pd.DataFrame(rows, columns=["strategy", "seed", "converged", "tail_change", "spread", "evals_seen"])


def strategy_gate(curves: pd.DataFrame, rule: ConvergenceRule, until: int | None = None) -> pd.DataFrame:
    """One row per strategy: the rule on the seed-mean curve up to step ``until`` (the verdict's
    gate) and how many of its runs pass on their own."""
    curves = _until(curves, until)
    per_run = run_gate(curves, rule)
    rows = []
    for strategy, g in curves.groupby("strategy", sort=False):
        mean = _mean_curve(g, rule.metric)
        runs = per_run[per_run["strategy"] == strategy]
        rows.append({"strategy": strategy, **rule.assess(mean.index, mean.to_numpy()),
                     "runs_converged": int((runs["converged"] == True).sum()),  # noqa: E712 (None-safe)
                     "runs": int(g["seed"].nunique()), "until": until})
    return pd.DataFrame(rows, columns=["strategy", "converged", "tail_change", "spread", "evals_seen",
                                       "runs_converged", "runs", "until"])


def gap_trend(curves: pd.DataFrame, strategy: str, baseline: str, rule: ConvergenceRule,
              until: int | None = None) -> dict[str, Any]:
    """The relative gap mean(strategy)/mean(baseline) - 1 of the validation curves at the last
    ``rule.evals`` evaluation steps both share up to ``until``, and whether it is ``shrinking``,
    ``growing`` or ``steady`` in magnitude (a change of less than a quarter of the tolerance is steady)."""
    curves = _until(curves, until)
    a = _mean_curve(curves[curves["strategy"] == strategy], rule.metric)
    b = _mean_curve(curves[curves["strategy"] == baseline], rule.metric)
    common = a.index.intersection(b.index)[-rule.evals:]
    if len(common) < 2:
        return {"steps": [], "gaps": [], "direction": "unknown"}
    gaps = (a[common] / b[common] - 1).tolist()
    change = abs(gaps[-1]) - abs(gaps[0])
    direction = "steady" if abs(change) < rule.tolerance / 4 else ("shrinking" if change < 0 else "growing")
    return {"steps": [int(s) for s in common], "gaps": gaps, "direction": direction}
