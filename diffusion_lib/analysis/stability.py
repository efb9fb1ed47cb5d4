"""Gap stability across the budget ladder: the gate that annealing cannot pass (SPEC §8.1).

A validation curve flattens whenever the learning rate is annealed, so a plateau at the end of one
decayed schedule does not show that more training would leave the comparison unchanged. The ladder
trains every run to several budgets, each with its own decay, and this module asks whether the
primary contrast (a mining arm's relative change versus the baseline) has stopped moving:

* **informative rungs**: a rung counts only if every run of both arms beats the per-entry-mean
  predictor by at least 5% on the primary endpoint (skill ``1 − MSE / MSE_mean``, per run). A rung
  where some run has not yet left burn-in measures learning speed, not the method: it stays in the
  tables and the figure, labelled, and is left out of everything below. So is a rung at which a run
  of either arm is *unstable* (:mod:`diffusion_lib.analysis.instability`);
* **stable** (the gate): over the last two usable rungs, the change of the contrast, computed per
  seed as the paired change of log MSE between the two rungs (a seed's rungs share its trunk),
  differenced between the arms (Welch), is below delta/2 and its 95% CI lies within ±delta
  (delta read on the log scale, where it is the relative change to first order). Fewer than two
  usable rungs: not stable, and the reason says where each arm stands;
* when the usable estimates move monotonically over three or more rungs, a least-squares line of
  the log ratio against log samples says at which budget (beyond the ladder) the gap would cross 0
  and ±delta. It is labelled an extrapolation, never a finding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..settings.budget import samples_text, share_text

EXTRAPOLATION_LABEL = "extrapolation (log-linear fit of the log ratio over the informative rungs), not a finding"
#: a rung is informative for a contrast when every run of both arms has at least this skill (SPEC §8.1)
INFORMATIVE_SKILL = 0.05
STABILITY_CONFIDENCE = 0.95


def _pct(x: float) -> str:
    return f"{x:+.1%}" if math.isfinite(x) else "n/a"


def log_linear_crossings(samples: Sequence[float], estimates: Sequence[float],
                         targets: Mapping[str, float]) -> dict[str, float | None]:
    """Where the least-squares line of the log ratio ``log(1 + estimate)`` against log ``samples``
    reaches each target (a relative change), in samples; None when it does not reach it beyond the
    last rung (flat line, the crossing already behind, or beyond 1e30 samples)."""
    x, y = np.log(np.asarray(samples, dtype=float)), np.log1p(np.asarray(estimates, dtype=float))
    slope, intercept = np.polyfit(x, y, 1)
    out: dict[str, float | None] = {}
    for name, target in targets.items():
        at = (math.log1p(target) - intercept) / slope if slope != 0 else math.inf
        out[name] = float(math.exp(at)) if x[-1] < at < math.log(1e30) else None
    return out


@dataclass(frozen=True)
class PairedChange:
    """The change of the contrast's log ratio between two rungs, from per-seed paired changes:
    ``estimate`` = mean over the arm's seeds of Δlog MSE minus the baseline's, with its Welch CI."""

    estimate: float
    ci_low: float
    ci_high: float
    n_a: int
    n_b: int

    @classmethod
    def of(cls, changes_a: Sequence[float], changes_b: Sequence[float],
           confidence: float = STABILITY_CONFIDENCE) -> "PairedChange":
        a, b = np.asarray(changes_a, dtype=float), np.asarray(changes_b, dtype=float)
        if len(a) < 2 or len(b) < 2:
            return cls(math.nan, math.nan, math.nan, len(a), len(b))
        estimate = float(a.mean() - b.mean())
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se = math.sqrt(va + vb)
        if se == 0:
            return cls(estimate, estimate, estimate, len(a), len(b))
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
        half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
        return cls(estimate, estimate - half, estimate + half, len(a), len(b))


@dataclass(frozen=True)
class GapStability:
    """The primary contrast of ``strategy`` versus ``versus`` across the ladder's rungs (ascending):
    every rung's estimate, which rungs are informative (and not unstable), the lowest per-run skill of
    each arm per rung, and the paired change between the last two usable rungs."""

    strategy: str
    versus: str
    delta: float
    steps: tuple[int, ...]
    samples: tuple[int, ...]
    estimates: tuple[float, ...]
    informative: tuple[bool, ...]
    skill: tuple[tuple[float, float], ...]  # per rung: (lowest run skill of strategy, of versus)
    paired: PairedChange | None = None      # between the last two usable rungs
    unstable: tuple[bool, ...] = ()         # per rung: a run of either arm is unstable there

    def _unstable(self, i: int) -> bool:
        return bool(self.unstable[i]) if i < len(self.unstable) else False

    @property
    def usable(self) -> tuple[int, ...]:
        """Indices of the rungs that count: informative, not unstable, with a finite estimate."""
        return tuple(i for i in range(len(self.steps)) if self.informative[i] and not self._unstable(i)
                     and math.isfinite(self.estimates[i]))

    @property
    def assessable(self) -> bool:
        """Two or more usable rungs and a paired change between the last two."""
        return len(self.usable) >= 2 and self.paired is not None and math.isfinite(self.paired.estimate)

    @property
    def change(self) -> float:
        """The paired change of the log ratio over the last two usable rungs (NaN if not assessable)."""
        return self.paired.estimate if self.assessable and self.paired else math.nan

    @property
    def stable(self) -> bool:
        """The change is below delta/2 and its 95% CI lies within ±delta."""
        if not self.assessable or self.paired is None:
            return False
        p = self.paired
        return abs(p.estimate) < self.delta / 2 and -self.delta < p.ci_low and p.ci_high < self.delta

    settled = stable  # the verdict's word for it

    @property
    def direction(self) -> str:
        """``shrinking``, ``growing`` (in magnitude), ``changing sign`` over the last two usable rungs,
        or ``unknown``."""
        if len(self.usable) < 2:
            return "unknown"
        before, last = (self.estimates[i] for i in self.usable[-2:])
        if before * last < 0:
            return "changing sign"
        return "shrinking" if abs(last) < abs(before) else "growing" if abs(last) > abs(before) else "steady"

    def _usable_series(self) -> tuple[list[int], list[float]]:
        return [self.samples[i] for i in self.usable], [self.estimates[i] for i in self.usable]

    @property
    def monotone(self) -> bool:
        """Three or more usable estimates, each step in the same direction."""
        e = np.asarray(self._usable_series()[1], dtype=float)
        steps = np.diff(e)
        return len(e) >= 3 and (bool((steps > 0).all()) or bool((steps < 0).all()))

    def crossings(self) -> dict[str, float | None] | None:
        """Extrapolated budgets (samples) where the gap would cross 0, +delta and -delta; None unless
        the usable estimates move monotonically."""
        if not self.monotone:
            return None
        d = self.delta
        samples, estimates = self._usable_series()
        return log_linear_crossings(samples, estimates, {"0": 0.0, f"+{d:.0%}": d, f"-{d:.0%}": -d})

    def trajectory(self) -> str:
        """``+13.9% at 46.4K (uninformative) → +8.0% at 92.8K → +6.2% at 186K samples``."""
        def label(i: int) -> str:
            tags = [t for t, on in (("unstable", self._unstable(i)), ("uninformative", not self.informative[i])) if on]
            return f" ({', '.join(tags)})" if tags else ""
        return " → ".join(f"{_pct(e)} at {samples_text(s)}{label(i)}"
                          for i, (e, s) in enumerate(zip(self.estimates, self.samples))) + " samples"

    def standing(self) -> str:
        """Where each arm stands at each rung: its lowest per-run skill."""
        return "; ".join(f"at {steps:,} steps the lowest run skill is {_pct(a)} ({self.strategy}) and {_pct(b)} "
                         f"({self.versus})" for steps, (a, b) in zip(self.steps, self.skill))

    def extrapolation_text(self, paper_samples: float) -> str | None:
        """The labelled extrapolation sentence, or None when the usable estimates are not monotone."""
        cross = self.crossings()
        if cross is None:
            return None
        head = (f"Extrapolation, not a finding (log-linear fit of the log ratio against log samples over "
                f"{len(self.usable)} informative rungs): the {self.strategy} vs {self.versus} gap")
        fitted = self.fitted_last()
        last = self._usable_series()[1][-1]
        if abs(math.log1p(fitted) - math.log1p(last)) >= self.delta / 2:
            # the line misses the last rung by more than the stability tolerance: its crossings say nothing
            return (f"{head} is not described by that line (it gives {_pct(fitted)} at the last informative rung, "
                    f"where {_pct(last)} was measured), so no crossing budget is extrapolated.")
        ahead = [f"{name} at about {samples_text(s)} samples ({share_text(s / paper_samples)} of the paper's)"
                 for name, s in sorted(((n, s) for n, s in cross.items() if s is not None), key=lambda c: c[1])]
        what = ("would cross " + ", then ".join(ahead)) if ahead else "would cross neither 0 nor ±delta beyond the ladder"
        return f"{head} {what}."

    def fitted_last(self) -> float:
        """The log-linear fit's relative change at the last usable rung (how well the line fits)."""
        samples, estimates = self._usable_series()
        x = np.log(np.asarray(samples, dtype=float))
        slope, intercept = np.polyfit(x, np.log1p(np.asarray(estimates, dtype=float)), 1)
        return float(math.expm1(slope * x[-1] + intercept))

    def ladder_reason(self) -> str:
        """Why the gap is not stable (empty when it is)."""
        n = len(self.usable)
        if n < 2:
            return (f"the ladder has fewer than two informative rungs for {self.strategy} vs {self.versus} ({n} of "
                    f"{len(self.steps)}: a rung counts when every run of both arms has skill ≥ "
                    f"{INFORMATIVE_SKILL:.0%} and none is unstable; {self.standing()}; {self.trajectory()})")
        if not self.assessable or self.paired is None:
            return (f"the {self.strategy} vs {self.versus} gap's change between its last two informative rungs "
                    f"cannot be estimated (fewer than two seeds per arm at both rungs; {self.trajectory()})")
        if self.stable:
            return ""
        p = self.paired
        r1, r2 = (self.steps[i] for i in self.usable[-2:])
        return (f"the {self.strategy} vs {self.versus} gap is still moving ({self.direction}): {self.trajectory()}; "
                f"between {r1:,} and {r2:,} steps its log ratio changed by {p.estimate:+.3f} "
                f"({STABILITY_CONFIDENCE:.0%} CI {p.ci_low:+.3f} to {p.ci_high:+.3f}, paired per seed), where stable "
                f"needs a change below {self.delta / 2:.3f} and the CI within ±{self.delta:.2f}")

    reason = ladder_reason

    def as_dict(self) -> dict[str, Any]:
        cross = self.crossings()
        p = self.paired
        return {"strategy": self.strategy, "versus": self.versus, "rungs": list(self.steps),
                "samples": list(self.samples), "estimates": list(self.estimates),
                "informative": list(self.informative), "unstable": [self._unstable(i) for i in range(len(self.steps))],
                "informative_rungs": [self.steps[i] for i in self.usable], "change": self.change,
                "change_ci_low": p.ci_low if p and self.assessable else math.nan,
                "change_ci_high": p.ci_high if p and self.assessable else math.nan,
                "change_confidence": STABILITY_CONFIDENCE, "direction": self.direction, "stable": self.stable,
                "monotone": self.monotone, "crossings": cross,
                "extrapolation": EXTRAPOLATION_LABEL if cross is not None else None}


def every_run_informative(values: Sequence[float], entry_mean: float) -> bool:
    """Whether every run's value (MSE) beats the per-entry-mean predictor's ``entry_mean`` by at least
    :data:`INFORMATIVE_SKILL` (False without values)."""
    x = np.asarray(list(values), dtype=float)
    return bool(len(x)) and bool(np.all(1 - x / entry_mean >= INFORMATIVE_SKILL))


def _run_skill(values: pd.DataFrame, entry_mean: float) -> pd.DataFrame:
    return values.assign(skill=1 - values["value"] / entry_mean)


def gap_stability(primary: pd.DataFrame, rung_values: pd.DataFrame, entry_mean: float, strategy: str, versus: str,
                  delta: float, unstable_rungs: Sequence[int] = ()) -> GapStability:
    """The stability of ``strategy`` vs ``versus`` from the ladder's primary contrasts (rows with
    ``strategy``, ``versus``, ``rung``, ``samples``, ``estimate``; ladder rungs only), the per-seed
    primary values of every ladder rung (``strategy``, ``seed``, ``rung``, ``value``) and the
    per-entry-mean predictor's MSE on the primary set (``entry_mean``, for skill). ``unstable_rungs``:
    the rungs (steps) at which a run of either arm is unstable."""
    rows = primary[(primary["strategy"] == strategy) & (primary["versus"] == versus)].sort_values("rung")
    steps = [int(r) for r in rows["rung"]]
    per_run = _run_skill(rung_values[rung_values["strategy"].isin([strategy, versus])], entry_mean)
    informative, skill = [], []
    for rung in steps:
        at = per_run[per_run["rung"] == rung]
        lows = tuple(float(at.loc[at["strategy"] == s, "skill"].min()) if (at["strategy"] == s).any() else math.nan
                     for s in (strategy, versus))
        skill.append(lows)
        informative.append(all((at["strategy"] == s).any() for s in (strategy, versus))
                           and every_run_informative(at["value"], entry_mean))
    unstable = tuple(r in set(unstable_rungs) for r in steps)
    gap = GapStability(strategy, versus, delta, tuple(steps), tuple(int(s) for s in rows["samples"]),
                       tuple(float(e) for e in rows["estimate"]), tuple(informative), tuple(skill), None, unstable)
    if len(gap.usable) >= 2:
        r1, r2 = (steps[i] for i in gap.usable[-2:])
        changes = []
        for arm in (strategy, versus):
            v = per_run[per_run["strategy"] == arm].pivot_table(index="seed", columns="rung", values="value")
            both = v[[r1, r2]].dropna() if {r1, r2} <= set(v.columns) else v.iloc[0:0]
            changes.append(np.log(both[r2].to_numpy(dtype=float)) - np.log(both[r1].to_numpy(dtype=float)))
        gap = GapStability(**{**gap.__dict__, "paired": PairedChange.of(*changes)})
    return gap


def stability_table(stabilities: Sequence[GapStability], paper_samples: float) -> pd.DataFrame:
    """One row per compared mining arm: the estimates per rung (labelled), the informative rungs, the
    paired change over the last two with its CI, whether the contrast is stable, and the labelled
    extrapolation."""
    rows = []
    for g in stabilities:
        d = g.as_dict()
        cross = d.pop("crossings") or {}
        rows.append({**{k: v for k, v in d.items() if k not in ("rungs", "samples", "estimates", "informative",
                                                                 "unstable", "informative_rungs")},
                     "trajectory": g.trajectory(),
                     "informative_rungs": ", ".join(f"{r:,}" for r in d["informative_rungs"]),
                     **{f"crossing_{k}": v for k, v in cross.items()},
                     "extrapolation_text": g.extrapolation_text(paper_samples)})
    return pd.DataFrame(rows)
