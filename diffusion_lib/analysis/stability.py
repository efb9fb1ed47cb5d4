"""The gate of the budget ladder (method §8.1): which rungs a contrast may be read at, and its trend.

A validation curve flattens whenever the learning rate is annealed, so a plateau at the end of one
decayed schedule does not show that more training would leave the comparison unchanged. The ladder
trains every run to several budgets, each with its own decay, and this module says, per mining arm
versus the baseline (:class:`GapStability`, built by :func:`ladder_gate`):

* **informative rungs**: a rung counts only if every run of both arms beats the per-entry-mean
  predictor by at least 5% on the primary endpoint (skill ``1 − MSE / MSE_mean``, per run). A rung
  where some run has not yet left burn-in measures learning speed, not the method: it stays in the
  tables and the figure, labelled, and is left out of everything below. So is a rung at which a run
  of either arm is *unstable* (:mod:`diffusion_lib.analysis.instability`);
* **readable**: the verdict reads the full-budget rung only, and only when it is usable, with at
  least two usable rungs in all (:meth:`GapStability.decision_reason` says which rung failed);
* **the trend per doubling**: the rungs' reading and the trunk's (:mod:`diffusion_lib.analysis.trend`),
  from which :meth:`GapStability.finality` says whether the contrast's label is final or still moving;
* when the usable estimates move monotonically over three or more rungs, a least-squares line of
  the log ratio against log samples says at which budget (beyond the ladder) the gap would cross 0
  and ±delta. It is labelled an extrapolation, never a finding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..settings.budget import samples_text, share_text
from . import tables as tab
from .instability import mark_unstable
from .ladder_tables import LADDER, every_run_informative, ladder_contrasts_table, unstable_rungs
from .trend import INFORMATIVE_SKILL, Finality, Trend, finality, rung_trend

EXTRAPOLATION_LABEL = "extrapolation (log-linear fit of the log ratio over the informative rungs), not a finding"


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
class GapStability:
    """The primary contrast of ``strategy`` versus ``versus`` across the ladder's rungs (ascending):
    every rung's estimate, which rungs are informative (and not unstable), the lowest per-run skill of
    each arm per rung, the full budget ``full`` (steps), and the two trend readings per doubling
    (:mod:`diffusion_lib.analysis.trend`)."""

    strategy: str
    versus: str
    delta: float
    steps: tuple[int, ...]
    samples: tuple[int, ...]
    estimates: tuple[float, ...]
    informative: tuple[bool, ...]
    skill: tuple[tuple[float, float], ...]  # per rung: (lowest run skill of strategy, of versus)
    unstable: tuple[bool, ...] = ()         # per rung: a run of either arm is unstable there
    full: int | None = None                 # the full budget (steps); None: the largest rung
    rungs_trend: Trend | None = None
    trunk_trend: Trend | None = None

    def _unstable(self, i: int) -> bool:
        return bool(self.unstable[i]) if i < len(self.unstable) else False

    @property
    def usable(self) -> tuple[int, ...]:
        """Indices of the rungs that count: informative, not unstable, with a finite estimate."""
        return tuple(i for i in range(len(self.steps)) if self.informative[i] and not self._unstable(i)
                     and math.isfinite(self.estimates[i]))

    @property
    def full_steps(self) -> int:
        return int(self.full) if self.full is not None else (max(self.steps) if self.steps else 0)

    def decision_reason(self) -> str:
        """Why the verdict may not read this contrast (empty when it may): the full-budget rung must be
        usable, with at least two usable rungs in all (method §8.1, §8.2 rule 2)."""
        full = self.full_steps
        if full not in self.steps:
            return f"the {self.strategy} vs {self.versus} contrast has no estimate at the full budget ({full:,} steps)"
        i = self.steps.index(full)
        why = [w for w, on in (("unstable", self._unstable(i)), ("uninformative", not self.informative[i])) if on]
        if i not in self.usable:
            return (f"the full-budget rung ({full:,} steps) of {self.strategy} vs {self.versus} is "
                    f"{' and '.join(why) or 'without an estimate'} (a rung counts when every run of both arms has "
                    f"skill ≥ {INFORMATIVE_SKILL:.0%} and none is unstable; {self.standing()})")
        if len(self.usable) < 2:
            return (f"the ladder has fewer than two informative rungs for {self.strategy} vs {self.versus} "
                    f"({len(self.usable)} of {len(self.steps)}; {self.standing()}; {self.trajectory()})")
        return ""

    def trends(self) -> list[Trend]:
        return [t for t in (self.trunk_trend, self.rungs_trend) if t is not None]

    def finality(self, change: Mapping[str, Any]) -> Finality:
        """Whether ``change`` (the full budget's judged contrast) is final (:func:`~diffusion_lib.analysis.trend.finality`)."""
        return finality(change, self.trends(), self.delta)

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
        """The labelled crossing sentence, or None when the usable estimates are not monotone."""
        cross = self.crossings()
        if cross is None:
            return None
        head = (f"Extrapolation, not a finding (log-linear fit of the log ratio against log samples over "
                f"{len(self.usable)} informative rungs): the {self.strategy} vs {self.versus} gap")
        fitted = self.fitted_last()
        last = self._usable_series()[1][-1]
        if abs(math.log1p(fitted) - math.log1p(last)) >= self.delta / 2:
            # the line misses the last rung by more than the finality tolerance: its crossings say nothing
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

    def as_dict(self) -> dict[str, Any]:
        cross = self.crossings()
        empty = Trend("", math.nan, math.nan, math.nan)
        return {"strategy": self.strategy, "versus": self.versus, "rungs": list(self.steps),
                "samples": list(self.samples), "estimates": list(self.estimates),
                "informative": list(self.informative), "unstable": [self._unstable(i) for i in range(len(self.steps))],
                "informative_rungs": [self.steps[i] for i in self.usable], "full": self.full_steps,
                "decision_reason": self.decision_reason(), "direction": self.direction, "monotone": self.monotone,
                **(self.rungs_trend or empty).as_dict("rungs_trend_"),
                **(self.trunk_trend or empty).as_dict("trunk_trend_"),
                "rungs_trend_text": self.rungs_trend.short() if self.rungs_trend else "",
                "trunk_trend_text": self.trunk_trend.short() if self.trunk_trend else "",
                "crossings": cross, "extrapolation": EXTRAPOLATION_LABEL if cross is not None else None}


def _run_skill(values: pd.DataFrame, entry_mean: float) -> pd.DataFrame:
    return values.assign(skill=1 - values["value"] / entry_mean)


def gap_stability(primary: pd.DataFrame, rung_values: pd.DataFrame, entry_mean: float, strategy: str, versus: str,
                  delta: float, unstable_rungs: Sequence[int] = (), full: int | None = None,
                  trunk: Trend | None = None) -> GapStability:
    """The gate of ``strategy`` vs ``versus`` from the ladder's primary contrasts (rows with
    ``strategy``, ``versus``, ``rung``, ``samples``, ``estimate``; ladder rungs only), the per-seed
    primary values of every ladder rung (``strategy``, ``seed``, ``rung``, ``value``) and the
    per-entry-mean predictor's MSE on the primary set (``entry_mean``, for skill). ``unstable_rungs``:
    the rungs (steps) at which a run of either arm is unstable; ``full``: the full budget (steps);
    ``trunk``: the trunk's trend reading (:func:`~diffusion_lib.analysis.trend.trunk_trend`)."""
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
                       tuple(float(e) for e in rows["estimate"]), tuple(informative), tuple(skill), unstable, full,
                       None, trunk)
    usable = [steps[i] for i in gap.usable]
    return GapStability(**{**gap.__dict__, "rungs_trend": rung_trend(per_run, strategy, versus, usable)})


def with_informative(contrasts: pd.DataFrame, stabilities: Iterable[GapStability]) -> pd.DataFrame:
    """``contrasts`` (per rung) with an ``informative`` column: whether the rung counts for the row's
    verdict contrast (NaN for rows no gate covers)."""
    flags = {(g.strategy, g.versus, rung): informative for g in stabilities
             for rung, informative in zip(g.steps, g.informative)}
    out = contrasts.copy()
    out["informative"] = [flags.get((s, v, int(r))) for s, v, r in zip(out["strategy"], out["versus"], out["rung"])]
    return out


def ladder_gate(rung_vals: pd.DataFrame, unstable: pd.DataFrame, verdict_pairs: Sequence[tuple[str, str, str]],
                primary_ep: tab.Endpoint, delta: float, alpha: float, confidence: float, paper: float,
                trivial: Mapping[str, Mapping[str, float]], full: int | None = None,
                trunks: Mapping[str, Trend] | None = None) -> tuple[pd.DataFrame, dict[str, GapStability]]:
    """The ladder's contrasts (unstable rungs blanked, informative rungs marked) and each verdict
    arm's gate (by strategy), with its trunk reading from ``trunks``: what the verdict and each
    ``until_stable`` look read."""
    ladder_contrasts = mark_unstable(ladder_contrasts_table(rung_vals, verdict_pairs, primary_ep, delta, alpha,
                                                            confidence, paper), unstable)
    on_primary = ladder_contrasts[ladder_contrasts["endpoint_role"] == "primary"]
    entry_mean = float(trivial.get(primary_ep.set, {}).get("entry_mean", float("nan")))
    on_ladder = rung_vals[(rung_vals["kind"] == LADDER) & (rung_vals["endpoint"] == primary_ep.key)]
    stabilities = {s: gap_stability(on_primary, on_ladder, entry_mean, s, base, delta,
                                    unstable_rungs=unstable_rungs(unstable, (s, base)), full=full,
                                    trunk=(trunks or {}).get(s))
                   for s, base, _ in verdict_pairs}
    return with_informative(ladder_contrasts, stabilities.values()), stabilities


def stability_table(stabilities: Sequence[GapStability], paper_samples: float) -> pd.DataFrame:
    """One row per compared mining arm: the estimates per rung (labelled), the informative rungs, both
    trend readings per doubling with their CIs, why the verdict may not read it, and the labelled
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
