"""The gap's trend per doubling of budget, and whether an answer is final (method §8.1).

A contrast measured at one budget says what holds there. Whether it still holds at twice the budget
is a second question, answered by how fast the contrast's log ratio moves as the budget doubles. It
is read in two places, both with the training run (seed) as the unit:

* **rungs** (:func:`rung_trend`): each run's change of log MSE between the last two usable rungs
  (a run's rungs share its trunk), divided by their distance in doublings, log2 of their ratio;
  with three or more usable rungs, each run's least-squares slope of log MSE on log2 steps;
* **trunk** (:func:`trunk_trend`): each run's least-squares slope of log validation MSE (EMA model)
  on log2 step over the informative part of its constant-lr trunk: from the first evaluation after
  which every run of both arms keeps a validation skill of at least 5% against the per-entry-mean
  predictor, to the full budget's branch point; at least :data:`MIN_TRUNK_EVALS` evaluations.

Either way the arms' mean per-run values are differenced and Welch's t gives the 95% CI
(:func:`welch_difference`): a :class:`Trend`, in log ratio per doubling. The threshold is per
doubling, so it means the same for rungs 1.33× or 4× apart.

**Final** (:func:`finality`): both readings exist, both CIs lie within ±delta/2 per doubling, and
moving the contrast's CIs by one doubling at either end of either trend's CI leaves its label
(:func:`~diffusion_lib.analysis.statistics.classify`) unchanged; otherwise **still moving**, with
its direction and rate, and the labelled extrapolation of what the trend implies at 2x the budget and
at the paper's (:func:`implied_at`), never a finding.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .statistics import shifted_label, welch_df

CONFIDENCE = 0.95
#: fewest trunk evaluations the trunk reading is taken over (the plateau check's count, method §8.1)
MIN_TRUNK_EVALS = 6
#: a step counts for the trunk reading when every run of both arms has this validation skill
INFORMATIVE_SKILL = 0.05
TRUNK, RUNGS = "trunk", "rungs"


def welch_difference(a: Sequence[float], b: Sequence[float],
                     confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """mean(``a``) − mean(``b``) with Welch's two-sided CI at ``confidence`` (NaN with fewer than two
    values in an arm; a zero-width CI when neither arm varies)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if len(x) < 2 or len(y) < 2:
        return math.nan, math.nan, math.nan
    estimate = float(x.mean() - y.mean())
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(va + vb)
    if se == 0:
        return estimate, estimate, estimate
    half = float(stats.t.ppf(0.5 + confidence / 2, welch_df(va, vb, len(x), len(y)))) * se
    return estimate, estimate - half, estimate + half


@dataclass(frozen=True)
class Trend:
    """One reading of a contrast's trend: the change of its log ratio per doubling of budget
    (``estimate``, with its CI), from ``source`` (``trunk`` or ``rungs``) over ``points`` evaluations
    or rungs between steps ``first`` and ``last``, ``n_a`` and ``n_b`` runs; ``note`` says why a
    reading has no estimate."""

    source: str
    estimate: float
    ci_low: float
    ci_high: float
    n_a: int = 0
    n_b: int = 0
    points: int = 0
    first: int = 0
    last: int = 0
    note: str = ""
    confidence: float = CONFIDENCE

    @property
    def assessable(self) -> bool:
        return all(math.isfinite(x) for x in (self.estimate, self.ci_low, self.ci_high))

    @property
    def span(self) -> float:
        """Doublings between the first and last step read."""
        return math.log2(self.last / self.first) if self.first > 0 and self.last > 0 else math.nan

    def within(self, tolerance: float) -> bool:
        """Its CI lies within ±``tolerance`` per doubling."""
        return self.assessable and -tolerance <= self.ci_low and self.ci_high <= tolerance

    def direction(self, current: float) -> str:
        """Which way the gap moves: ``closing`` (towards 0), ``widening``, or ``no measurable
        direction`` (the CI includes 0), given the ``current`` relative change."""
        if not self.assessable or self.ci_low <= 0 <= self.ci_high:
            return "no measurable direction"
        if current == 0 or not math.isfinite(current):
            return "moving up" if self.estimate > 0 else "moving down"
        return "closing" if (self.estimate > 0) != (current > 0) else "widening"

    def text(self) -> str:
        """``−0.072 per doubling (95% CI −0.116 to −0.028; trunk, 6 evaluations, steps 3,190-4,640)``."""
        where = (f"{self.source}, {self.points} {'evaluations' if self.source == TRUNK else 'rungs'}, steps "
                 f"{self.first:,}-{self.last:,}")
        if not self.assessable:
            return f"not measured ({where if self.points else self.source}: {self.note or 'too few runs'})"
        return (f"{self.estimate:+.3f} per doubling ({self.confidence:.0%} CI {self.ci_low:+.3f} to "
                f"{self.ci_high:+.3f}; {where})")

    def short(self) -> str:
        """``−0.132 [−0.157, −0.107] (trunk, 7 evaluations, steps 2,900-4,640)``."""
        if not self.assessable:
            return f"not measured ({self.source}: {self.note or 'too few runs'})"
        unit = "evaluations" if self.source == TRUNK else "rungs"
        return (f"{self.estimate:+.3f} [{self.ci_low:+.3f}, {self.ci_high:+.3f}] ({self.source}, {self.points} {unit}, "
                f"steps {self.first:,}-{self.last:,})")

    def as_dict(self, prefix: str = "") -> dict[str, Any]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def _slopes(frame: pd.DataFrame, x: str, y: str) -> dict[int, float]:
    """Each seed's least-squares slope of ``y`` on ``x`` (seeds with fewer than two points left out)."""
    out = {}
    for seed, g in frame.groupby("seed"):
        if len(g) >= 2 and np.ptp(g[x].to_numpy(dtype=float)) > 0:
            out[int(seed)] = float(np.polyfit(g[x].to_numpy(dtype=float), g[y].to_numpy(dtype=float), 1)[0])
    return out


def _reading(source: str, per_run: Mapping[str, Mapping[int, float]], strategy: str, versus: str, points: int,
             first: int, last: int, note: str = "") -> Trend:
    a, b = list(per_run[strategy].values()), list(per_run[versus].values())
    estimate, low, high = welch_difference(a, b)
    return Trend(source, estimate, low, high, len(a), len(b), points, first, last,
                 note or ("" if math.isfinite(estimate) else "fewer than two runs per arm"))


def rung_trend(values: pd.DataFrame, strategy: str, versus: str, rungs: Sequence[int]) -> Trend:
    """The rung reading over ``rungs`` (steps, the usable ones, ascending) from per-seed values
    (``strategy``, ``seed``, ``rung``, ``value``: the primary endpoint's MSE)."""
    rungs = sorted(int(r) for r in rungs)
    if len(rungs) < 2:
        return Trend(RUNGS, math.nan, math.nan, math.nan, points=len(rungs),
                     note=f"{len(rungs)} usable rung{'' if len(rungs) == 1 else 's'}, two needed")
    use = rungs[-2:] if len(rungs) == 2 else rungs
    on = values[values["rung"].isin(use) & (values["value"] > 0)].assign(
        x=lambda d: np.log2(d["rung"].astype(float)), y=lambda d: np.log(d["value"].astype(float)))
    per_run = {}
    for arm in (strategy, versus):
        g = on[on["strategy"] == arm]
        complete = g.groupby("seed")["rung"].nunique()
        per_run[arm] = _slopes(g[g["seed"].isin(complete[complete == len(use)].index)], "x", "y")
    return _reading(RUNGS, per_run, strategy, versus, len(use), use[0], use[-1])


def informative_steps(curves: pd.DataFrame, arms: Sequence[str], metric: str, entry_mean: float) -> list[int]:
    """The trunk's informative part: the steps (shared by every run of ``arms``) from the first after
    which every run keeps a skill 1 − value / ``entry_mean`` of at least :data:`INFORMATIVE_SKILL`."""
    on = curves[curves["strategy"].isin(list(arms))].dropna(subset=[metric])
    if on.empty or not math.isfinite(entry_mean):
        return []
    wide = on.pivot_table(index="step", columns=["strategy", "seed"], values=metric).dropna().sort_index()
    ok = (1 - wide / entry_mean >= INFORMATIVE_SKILL).all(axis=1).to_numpy()
    steps = [int(s) for s in wide.index]
    start = len(ok)
    while start > 0 and ok[start - 1]:
        start -= 1
    return steps[start:]


def trunk_trend(curves: pd.DataFrame, strategy: str, versus: str, entry_mean: float, until: int | None,
                metric: str = "val_mse_ema", min_evals: int = MIN_TRUNK_EVALS) -> Trend:
    """The trunk reading of ``strategy`` vs ``versus`` from the runs' validation ``curves`` (``strategy``,
    ``seed``, ``step``, ``metric``) up to step ``until`` (the full budget's branch point; None: every
    step), skill against ``entry_mean`` (the per-entry-mean predictor's MSE on the same distribution)."""
    on = curves if until is None else curves[curves["step"] <= until]
    steps = informative_steps(on, (strategy, versus), metric, entry_mean)
    if len(steps) < min_evals:
        return Trend(TRUNK, math.nan, math.nan, math.nan, points=len(steps), first=steps[0] if steps else 0,
                     last=steps[-1] if steps else 0,
                     note=f"{len(steps)} informative trunk evaluations, {min_evals} needed")
    on = on[on["step"].isin(steps) & on["strategy"].isin([strategy, versus])].dropna(subset=[metric])
    on = on.assign(x=np.log2(on["step"].astype(float)), y=np.log(on[metric].astype(float)))
    per_run = {arm: _slopes(on[on["strategy"] == arm], "x", "y") for arm in (strategy, versus)}
    return _reading(TRUNK, per_run, strategy, versus, len(steps), steps[0], steps[-1])


@dataclass(frozen=True)
class Finality:
    """Whether a contrast's label is final (see the module docstring): ``final``, the ``reasons`` it is
    not, the ``label`` now and the labels one doubling along each trend's CI ends (``after``)."""

    final: bool
    label: str
    reasons: tuple[str, ...] = ()
    after: Mapping[str, str] = field(default_factory=dict)

    @property
    def could_become(self) -> list[str]:
        """The other labels one more doubling along a trend's CI end would give, in order of appearance."""
        return list(dict.fromkeys(v for v in self.after.values() if v != self.label))

    def summary(self) -> str:
        """Why it is not final, in one clause (empty when it is)."""
        parts = [r for r in self.reasons if not r.startswith("one more doubling")]
        if self.could_become:
            parts.append("one more doubling along them could make it " + " or ".join(repr(x) for x in self.could_become))
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"final": self.final, "label": self.label, "reasons": list(self.reasons), "after": dict(self.after),
                "summary": self.summary()}


def finality(change: Mapping[str, Any], trends: Sequence[Trend], delta: float) -> Finality:
    """The finality of a contrast (``change``: a :func:`~diffusion_lib.analysis.statistics.judged_change`
    dict) given its trend readings (both the trunk's and the rungs' are required), at tolerance
    delta/2 per doubling."""
    label, tolerance = str(change["outcome"]), delta / 2
    reasons, after = [], {}
    for source in (TRUNK, RUNGS):
        if not any(t.source == source for t in trends):
            reasons.append(f"no {source} reading")
    for t in trends:
        if not t.assessable:
            reasons.append(f"its {t.source} trend is {t.short()}")
            continue
        if not t.within(tolerance):
            reasons.append(f"its {t.source} reading's CI is not within ±{tolerance:.3f} per doubling")
        for end in (t.ci_low, t.ci_high):
            after[f"{t.source} {end:+.3f}"] = moved = shifted_label(change, end, delta)
            if moved != label:
                reasons.append(f"one more doubling at {end:+.3f} per doubling ({t.source}) would make it {moved!r}")
    return Finality(not reasons, label, tuple(reasons), after)


def implied_at(change: Mapping[str, Any], trend: Trend, doublings: float) -> tuple[float, float, float]:
    """The relative change the trend implies ``doublings`` doublings beyond the current budget: the
    current estimate moved along the trend's estimate and its CI ends (an extrapolation)."""
    if not trend.assessable or not math.isfinite(change["estimate"]):
        return math.nan, math.nan, math.nan
    base = math.log1p(change["estimate"])
    return tuple(math.expm1(base + s * doublings) for s in (trend.estimate, trend.ci_low, trend.ci_high))
