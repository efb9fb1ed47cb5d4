"""The plateau check (method §8.1): is a validation curve still falling where training stopped?

A comparison of runs stopped while one strategy is still improving measures learning speed, not
the method, so the verdict is "not decided" when a compared strategy fails the check.

The rule (:class:`ConvergenceRule`, from the config's ``comparison.convergence``) measures a slope,
not a spread: the least-squares slope of log validation MSE (EMA model) over the last ``evals``
(≥ 6) evaluations, against log2(step) (``per: doubling``, the default) or the step in thousands
(``per: 1000 steps``), with its 95% Student-t CI. A curve passes when that CI lies within
±``tolerance``. (A spread test on 3 points passes any curve that falls by up to ~4% per window.) A
curve with fewer than ``evals`` evaluations cannot be judged and does not pass.

Per strategy the rule reads the mean over seeds of the curves (one evaluation schedule is shared by
every run), whose noise is smaller: that is the verdict's check; per run it reads that run's curve,
a diagnostic reported beside it.

**Where it looks** (method §8.1): never at a decay segment, whose last evaluations measure the
annealing gain, not convergence. Under warmup-stable-decay the rule reads the constant-learning-rate
trunk's evaluations up to the full budget's branch point (:func:`plateau_window_end`: ``until``);
with a constant schedule, the run's last evaluations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from ..settings.lr_schedule import decay_start

PER = ("doubling", "1000 steps")
#: the fewest evaluations a slope is read over (method §8.1)
MIN_EVALS = 6
CONFIDENCE = 0.95


def slope_ci(x: Any, y: Any, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """The least-squares slope of ``y`` on ``x`` and its two-sided Student-t CI at ``confidence``
    (NaN with fewer than three points)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0:
        return math.nan, math.nan, math.nan
    fit = stats.linregress(x, y)
    stderr = 0.0 if np.ptp(y) == 0 else float(fit.stderr)  # an exactly flat line has no spread (scipy: NaN)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 2)) * stderr
    return float(fit.slope), float(fit.slope - half), float(fit.slope + half)


@dataclass(frozen=True)
class ConvergenceRule:
    """Plateau rule; see the module docstring."""

    evals: int = MIN_EVALS
    tolerance: float = 0.025
    per: str = "doubling"
    metric: str = "val_mse_ema"

    def __post_init__(self) -> None:
        if self.per not in PER:
            raise ValueError(f"config field 'comparison.convergence.per': {self.per!r} is not one of {list(PER)}")
        if self.evals < MIN_EVALS:
            raise ValueError(f"config field 'comparison.convergence.evals': {self.evals} is too few; the slope is read "
                             f"over at least {MIN_EVALS} evaluations (method §8.1)")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> "ConvergenceRule":
        return cls(**dict(cfg or {}))

    def describe(self) -> str:
        return (f"the slope of log validation MSE (EMA model) over the last {self.evals} evaluations, per {self.per}, "
                f"its {CONFIDENCE:.0%} CI within ±{self.tolerance:g}")

    def _x(self, steps: np.ndarray) -> np.ndarray:
        return np.log2(steps) if self.per == "doubling" else steps / 1000.0

    def assess(self, steps: Any, values: Any) -> dict[str, Any]:
        """``converged`` (True/False, None when too few evaluations), the ``slope`` of log MSE per
        unit with its CI (``slope_low``, ``slope_high``), the window's first and last step, and the
        fitted relative change over the window (``tail_change``)."""
        s, v = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
        keep = np.isfinite(v) & (v > 0) & (s > 0)
        s, v = s[keep], v[keep]
        blank = {"slope": math.nan, "slope_low": math.nan, "slope_high": math.nan, "tail_change": math.nan,
                 "from_step": math.nan, "to_step": math.nan}
        if len(v) < self.evals:
            return {"converged": None, **blank, "evals_seen": int(len(v))}
        s, v = s[-self.evals:], v[-self.evals:]
        x = self._x(s)
        slope, low, high = slope_ci(x, np.log(v))
        converged = bool(-self.tolerance <= low and high <= self.tolerance)
        return {"converged": converged, "slope": slope, "slope_low": low, "slope_high": high,
                "tail_change": math.expm1(slope * (x[-1] - x[0])), "from_step": int(s[0]), "to_step": int(s[-1]),
                "evals_seen": int(len(v))}

    def text(self, row: Mapping[str, Any]) -> str:
        """``slope −0.092 per doubling (95% CI −0.120 to −0.064) over steps 3,190-4,640``."""
        if row.get("converged") is None or not math.isfinite(float(row.get("slope", math.nan))):
            return f"too few validation evaluations to judge ({int(row.get('evals_seen', 0))} seen, {self.evals} needed)"
        return (f"slope {row['slope']:+.3f} per {self.per} ({CONFIDENCE:.0%} CI {row['slope_low']:+.3f} to "
                f"{row['slope_high']:+.3f}) over steps {int(row['from_step']):,}-{int(row['to_step']):,}")


ASSESSED = ["converged", "slope", "slope_low", "slope_high", "tail_change", "from_step", "to_step", "evals_seen"]


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
    return pd.DataFrame(rows, columns=["strategy", "seed", *ASSESSED])


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
                     "runs": int(g["seed"].nunique()), "until": until, "per": rule.per, "tolerance": rule.tolerance})
    return pd.DataFrame(rows, columns=["strategy", *ASSESSED, "runs_converged", "runs", "until", "per", "tolerance"])
