"""Gap stability across the budget ladder: the gate that annealing cannot pass (SPEC §8.1).

A validation curve flattens whenever the learning rate is annealed, so a plateau at the end of one
decayed schedule does not show that more training would leave the comparison unchanged. The ladder
trains every run to several budgets, each with its own decay, and this module asks whether the
primary contrast (a mining arm's relative change versus the baseline) has stopped moving:

* the contrast is **stable** when its estimate at the last two rungs differs by less than delta/2
  and every compared run (the arm's and the baseline's) passed the plateau check on the last
  rung's curve (:func:`convergence.run_gate`, per run, not only the seed-mean curve);
* with a single rung stability cannot be assessed, and the contrast is not stable;
* when the estimates move monotonically over three or more rungs, a least-squares line of the
  estimate against log samples says at which budget (beyond the ladder) the gap would cross 0 and
  ±delta. It is labelled an extrapolation, never a finding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .budget import samples_text, share_text

EXTRAPOLATION_LABEL = "extrapolation (log-linear fit over the rungs), not a finding"


def _pct(x: float) -> str:
    return f"{x:+.1%}" if math.isfinite(x) else "n/a"


def log_linear_crossings(samples: Sequence[float], estimates: Sequence[float],
                         targets: Mapping[str, float]) -> dict[str, float | None]:
    """Where the least-squares line of ``estimates`` against log ``samples`` reaches each target,
    in samples; None when it does not reach it beyond the last rung (flat line, the crossing
    already behind, or beyond 1e30 samples)."""
    x, y = np.log(np.asarray(samples, dtype=float)), np.asarray(estimates, dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    out: dict[str, float | None] = {}
    for name, target in targets.items():
        at = (target - intercept) / slope if slope != 0 else math.inf
        out[name] = float(math.exp(at)) if x[-1] < at < math.log(1e30) else None
    return out


@dataclass(frozen=True)
class GapStability:
    """The primary contrast of ``strategy`` versus ``versus`` across the ladder's rungs (ascending)."""

    strategy: str
    versus: str
    delta: float
    steps: tuple[int, ...]
    samples: tuple[int, ...]
    estimates: tuple[float, ...]
    runs_plateaued: int
    runs: int
    unplateaued: tuple[str, ...] = ()  # "strategy/seedN" of the runs that failed the plateau check

    @property
    def assessable(self) -> bool:
        """Two or more rungs, the last two with an estimate."""
        return len(self.estimates) >= 2 and all(math.isfinite(e) for e in self.estimates[-2:])

    @property
    def change(self) -> float:
        """Estimate at the last rung minus that at the one before (NaN if not assessable)."""
        return self.estimates[-1] - self.estimates[-2] if self.assessable else math.nan

    @property
    def plateaued(self) -> bool:
        return self.runs > 0 and self.runs_plateaued == self.runs

    @property
    def settled(self) -> bool:
        """The estimate moved by less than delta/2 over the last two rungs."""
        return self.assessable and abs(self.change) < self.delta / 2

    @property
    def stable(self) -> bool:
        return self.settled and self.plateaued

    @property
    def direction(self) -> str:
        """``shrinking``, ``growing`` (in magnitude), ``changing sign`` over the last two rungs, or
        ``unknown``."""
        if not self.assessable:
            return "unknown"
        before, last = self.estimates[-2:]
        if before * last < 0:
            return "changing sign"
        return "shrinking" if abs(last) < abs(before) else "growing" if abs(last) > abs(before) else "steady"

    @property
    def monotone(self) -> bool:
        """Three or more finite estimates, each step in the same direction."""
        e = np.asarray(self.estimates, dtype=float)
        steps = np.diff(e)
        return len(e) >= 3 and bool(np.isfinite(e).all()) and (bool((steps > 0).all()) or bool((steps < 0).all()))

    def crossings(self) -> dict[str, float | None] | None:
        """Extrapolated budgets (samples) where the gap would cross 0, +delta and -delta; None unless
        the estimates move monotonically."""
        if not self.monotone:
            return None
        d = self.delta
        return log_linear_crossings(self.samples, self.estimates, {"0": 0.0, f"+{d:.0%}": d, f"-{d:.0%}": -d})

    def trajectory(self) -> str:
        """``+13.9% at 46.4K → +8.0% at 92.8K → +6.2% at 186K samples``."""
        return " → ".join(f"{_pct(e)} at {samples_text(s)}" for e, s in zip(self.estimates, self.samples)) + " samples"

    def extrapolation_text(self, paper_samples: float) -> str | None:
        """The labelled extrapolation sentence, or None when the estimates do not move monotonically."""
        cross = self.crossings()
        if cross is None:
            return None
        head = (f"Extrapolation, not a finding (log-linear fit of the estimate against log samples over "
                f"{len(self.estimates)} rungs): the {self.strategy} vs {self.versus} gap")
        fitted = self.fitted_last()
        if abs(fitted - self.estimates[-1]) >= self.delta / 2:
            # the line misses the last rung by more than the stability tolerance: its crossings say nothing
            return (f"{head} is not described by that line (it gives {_pct(fitted)} at the last rung, where "
                    f"{_pct(self.estimates[-1])} was measured), so no crossing budget is extrapolated.")
        ahead = [f"{name} at about {samples_text(s)} samples ({share_text(s / paper_samples)} of the paper's)"
                 for name, s in sorted(((n, s) for n, s in cross.items() if s is not None), key=lambda c: c[1])]
        what = ("would cross " + ", then ".join(ahead)) if ahead else "would cross neither 0 nor ±delta beyond the ladder"
        return f"{head} {what}."

    def fitted_last(self) -> float:
        """The log-linear fit's value at the last rung (how well the line describes the estimates)."""
        x = np.log(np.asarray(self.samples, dtype=float))
        slope, intercept = np.polyfit(x, np.asarray(self.estimates, dtype=float), 1)
        return float(slope * x[-1] + intercept)

    def ladder_reason(self) -> str:
        """Why the estimates do not show a settled gap (empty when they do)."""
        if not self.assessable:
            at = f" ({self.trajectory()})" if self.estimates else ""
            return (f"the {self.strategy} vs {self.versus} gap cannot be checked for stability across budgets with "
                    f"{len(self.estimates)} rung{'s' if len(self.estimates) != 1 else ''}{at}: the ladder needs at "
                    "least two")
        if not self.settled:
            return (f"the {self.strategy} vs {self.versus} gap is still moving ({self.direction}): "
                    f"{self.trajectory()}, a change of {abs(self.change) * 100:.1f} points over the last two rungs, "
                    f"not less than delta/2 = {self.delta * 50:.1f}")
        return ""

    def plateau_reason(self) -> str:
        """Which compared runs failed the plateau check at the last rung (empty when none)."""
        if self.plateaued:
            return ""
        who = f" ({', '.join(self.unplateaued)})" if self.unplateaued else ""
        return (f"{self.runs - self.runs_plateaued} of the {self.runs} {self.strategy} and {self.versus} runs fail "
                f"the plateau check at the last rung{who}")

    def reason(self) -> str:
        """Why the contrast is not stable (empty when it is)."""
        return "; ".join(r for r in (self.ladder_reason(), self.plateau_reason()) if r)

    def as_dict(self) -> dict[str, Any]:
        cross = self.crossings()
        return {"strategy": self.strategy, "versus": self.versus, "rungs": list(self.steps),
                "samples": list(self.samples), "estimates": list(self.estimates), "change": self.change,
                "direction": self.direction, "settled": self.settled, "runs_plateaued": self.runs_plateaued,
                "runs": self.runs, "unplateaued": list(self.unplateaued), "stable": self.stable,
                "monotone": self.monotone, "crossings": cross,
                "extrapolation": EXTRAPOLATION_LABEL if cross is not None else None}


def gap_stability(primary: pd.DataFrame, last_rung_gates: pd.DataFrame, strategy: str, versus: str,
                  delta: float) -> GapStability:
    """The stability of ``strategy`` vs ``versus`` from the ladder's primary contrasts (rows with
    ``strategy``, ``versus``, ``rung``, ``samples``, ``estimate``; ladder rungs only) and the per-run
    plateau check of the last rung (:func:`convergence.run_gate` rows: ``strategy``, ``seed``,
    ``converged``) of both arms."""
    rows = primary[(primary["strategy"] == strategy) & (primary["versus"] == versus)].sort_values("rung")
    gates = last_rung_gates[last_rung_gates["strategy"].isin([strategy, versus])]
    failing = gates[gates["converged"] != True]  # noqa: E712 (None: too few evaluations, fails)
    return GapStability(strategy, versus, delta, tuple(int(r) for r in rows["rung"]),
                        tuple(int(s) for s in rows["samples"]), tuple(float(e) for e in rows["estimate"]),
                        len(gates) - len(failing), len(gates),
                        tuple(f"{s}/seed{int(k)}" for s, k in zip(failing["strategy"], failing["seed"])))


def stability_table(stabilities: Sequence[GapStability], paper_samples: float) -> pd.DataFrame:
    """One row per compared mining arm: the estimates per rung, the change over the last two, the
    per-run plateau count, whether the contrast is stable, and the labelled extrapolation."""
    rows = []
    for g in stabilities:
        d = g.as_dict()
        cross = d.pop("crossings") or {}
        rows.append({**{k: v for k, v in d.items() if k not in ("rungs", "samples", "estimates", "unplateaued")},
                     "trajectory": g.trajectory(), "unplateaued": ", ".join(g.unplateaued),
                     **{f"crossing_{k}": v for k, v in cross.items()},
                     "extrapolation_text": g.extrapolation_text(paper_samples)})
    return pd.DataFrame(rows)
