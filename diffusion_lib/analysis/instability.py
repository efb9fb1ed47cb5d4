"""Runs that blow up without a NaN (method §8.2, outcome 1: training unstable).

A run whose loss turns NaN/inf or exceeds ``train.max_loss`` is stopped as *diverged* by the engine.
A run can also leave a good solution and climb far above it while every number stays finite (seen
at twice the pilot's budget: baseline and random runs at constant lr 5e-4 rose 10-60x from their
best validation MSE). Averaging such a run into a contrast reports a blow-up as an effect, so:

* a run is **unstable** at the first validation evaluation whose MSE (EMA model) exceeds ``factor``
  times the lowest it reached before (:class:`InstabilityRule`, config ``comparison.instability``;
  default 2x, far outside the evaluation noise of a settled run, a few percent);
* how far an unstable run rose and whether it came back (:meth:`InstabilityRule.excursion`) is
  described beside the rule, never decided by it;
* a rung of a run (its own curve: the trunk to its branch point, then its decay) is unstable when
  that curve is; the full budget's rung is the run itself.

The verdict's outcome 1 names the unstable runs of the compared arms at the full budget (step and
rung); a contrast at a rung where a run of either arm is unstable is not reported as an estimate and
is left out of stability and extrapolation (:mod:`diffusion_lib.analysis.stability`). While training, the
validation MSE over its best so far (:func:`ratio_to_best`) is what the
heartbeat, the status table and the trackers show.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd


UNSTABLE = "unstable"


@dataclass(frozen=True)
class InstabilityRule:
    """Unstable once the validation MSE exceeds ``factor`` × its running minimum."""

    factor: float = 2.0
    metric: str = "val_mse_ema"

    def __post_init__(self) -> None:
        if not self.factor > 1:
            raise ValueError(f"comparison.instability.factor: must be above 1, got {self.factor}")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> "InstabilityRule":
        return cls(**dict(cfg or {}))

    def describe(self) -> str:
        return (f"a run is unstable from the first validation evaluation whose MSE (EMA model) exceeds {self.factor:g}x "
                "the lowest it reached before")

    def first(self, steps: Iterable[Any], values: Iterable[Any]) -> dict[str, Any] | None:
        """The first unstable evaluation of a curve: ``step``, ``value``, ``best`` (the running minimum
        before it), ``best_step`` and ``ratio``; None if the curve never leaves the rule's bound."""
        best, best_step = math.inf, None
        for step, value in zip(steps, values):
            value = float(value)
            if not math.isfinite(value):
                continue
            if value > self.factor * best:
                return {"step": int(step), "value": value, "best": best, "best_step": best_step,
                        "ratio": _over(value, best)}
            if value < best:
                best, best_step = value, int(step)
        return None

    def excursion(self, values: Iterable[Any]) -> dict[str, float]:
        """How far a curve rose and where it ended, in the rule's terms (descriptive, never a test):
        ``peak``, the largest ratio of a value to the lowest before it (1 where it never rose above
        its running minimum), and ``end``, its last value over the lowest it ever reached (1: it ended
        at its best; above ``factor``: it ended out of the rule's bound). Non-finite values are skipped,
        as :meth:`first` skips them; NaN for a curve with fewer than two finite values."""
        finite = [float(v) for v in values if math.isfinite(float(v))]
        if len(finite) < 2:
            return {"peak": math.nan, "end": math.nan}
        best, peak = finite[0], 1.0
        for value in finite[1:]:
            peak, best = max(peak, _over(value, best)), min(best, value)
        return {"peak": peak, "end": _over(finite[-1], best)}

    def curve(self, curve: pd.DataFrame) -> dict[str, Any] | None:
        """:meth:`first` on a learning-curve table (``step`` and the rule's metric)."""
        if self.metric not in curve:
            return None
        c = curve.dropna(subset=[self.metric]).sort_values("step")
        return self.first(c["step"], c[self.metric])

    def runs(self, curves: pd.DataFrame, keys: Sequence[str] = ("strategy", "seed")) -> pd.DataFrame:
        """One row per unstable curve of ``curves`` (grouped by ``keys``) with :meth:`first`'s fields."""
        rows = []
        for key, g in curves.groupby(list(keys), sort=False):
            hit = self.curve(g)
            if hit is not None:
                rows.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,))), **hit})
        return pd.DataFrame(rows, columns=[*keys, "step", "value", "best", "best_step", "ratio"])


def _over(value: float, best: float) -> float:
    """``value`` / ``best`` for an MSE and the lowest before it: infinite above a best of 0, 1 at it."""
    if best > 0:
        return value / best
    return math.inf if value > best else 1.0


def describe_run(strategy: str, seed: int, hit: Mapping[str, Any], rung: int | None = None) -> str:
    """``baseline seed 1: validation MSE 0.454 at step 5,220, 43x its best 0.0105 (step 2,900)``."""
    at = f" (rung {rung:,})" if rung is not None else ""
    return (f"{strategy} seed {int(seed)}{at}: validation MSE {hit['value']:.3g} at step {int(hit['step']):,}, "
            f"{hit['ratio']:.1f}x its best {hit['best']:.3g} (step {int(hit['best_step']):,})")


#: the columns of a contrast that are not reported where a run of either arm is unstable
ESTIMATE_COLUMNS = ("estimate", "ci_low", "ci_high", "eq_low", "eq_high", "p", "p_holm", "df", "se_log")


def mark_unstable(contrasts: pd.DataFrame, unstable: pd.DataFrame, rung: int | None = None,
                  kind: str = "ladder") -> pd.DataFrame:
    """``contrasts`` with an ``unstable`` column: True where a run of ``strategy`` or ``versus`` is
    unstable at the row's rung (its ``rung`` column, else ``rung``; rungs of ``kind``), whose estimate,
    CIs and p-values are then blanked and whose outcome reads ``unstable`` (not an estimate)."""
    out = contrasts
    hits = unstable[unstable["kind"] == kind] if len(unstable) else unstable
    blown = {(s, int(r)) for s, r in zip(hits.get("strategy", []), hits.get("rung", []))}
    at = out["rung"] if "rung" in out else pd.Series(rung, index=out.index)
    flags = [bool({(row_s, int(r)), (row_v, int(r))} & blown) if r is not None and r == r else False
             for row_s, row_v, r in zip(out.get("strategy", []), out.get("versus", []), at)]
    return blank_unstable(out, flags)


def blank_unstable(contrasts: pd.DataFrame, flags: Sequence[bool]) -> pd.DataFrame:
    """``contrasts`` with ``unstable`` = ``flags`` and, on those rows, the estimate, CIs and p-values
    blanked and the outcome ``unstable``."""
    out = contrasts.copy()
    out["unstable"] = pd.Series(list(flags), index=out.index, dtype=bool)
    for column in ESTIMATE_COLUMNS:
        if column in out:
            out[column] = out[column].astype(float).where(~out["unstable"])
    if "outcome" in out:
        out["outcome"] = out["outcome"].where(~out["unstable"], UNSTABLE)
    return out


def ratio_to_best(curve: Sequence[Mapping[str, Any]], metric: str = "val_mse_ema") -> float:
    """The latest validation MSE over the lowest before it (NaN before two evaluations): what a live
    view shows of a run's stability (:mod:`diffusion_lib.analysis.instability` decides with it)."""
    values = [float(r[metric]) for r in curve if r.get(metric) is not None and math.isfinite(float(r[metric]))]
    if len(values) < 2:
        return math.nan
    return _over(values[-1], min(values[:-1]))
