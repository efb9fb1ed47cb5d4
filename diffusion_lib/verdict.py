"""The verdict of SPEC §8: one outcome, decided on the primary endpoint declared in the config.

Inputs are per-seed values of the primary endpoint (one number per training run), each compared
strategy's diverged-run count, and its convergence gate (:mod:`diffusion_lib.convergence`). The
outcome is the first that applies:

1. ``training unstable``: a run of a compared strategy (or of the baseline) diverged;
2. ``not decided at this budget``: a compared strategy (or the baseline) fails the convergence gate;
   the verdict names it and which way its gap to the baseline is moving;
3. ``mining helps``: the CI of a mining strategy's relative change lies entirely below -delta
   (naming the strategy; with both helping, the one with the lower estimate);
4. otherwise the research question's own contrast decides: that of the adversarial strategy (or
   the only mining strategy): ``no meaningful difference`` if its CI lies inside (-delta, +delta),
   ``baseline better`` if it lies entirely above 0, ``inconclusive`` otherwise, with the seeds per
   arm the observed variance would need. The other contrast's outcome is stated beside it.

Multiplicity: with m mining strategies compared on the primary endpoint (adversarial and random:
m = 2), each CI of the verdict is taken at level 1 - alpha/m (Bonferroni), so the family of primary
contrasts keeps its error rate at alpha. Training cost, residuals and the secondary endpoints are
reported beside the verdict and never change it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .statistics import EQUIVALENT, HELPS, INCONCLUSIVE, WORSE, classify, relative_change_ci, seeds_needed

UNSTABLE = "training unstable"
NOT_DECIDED = "not decided at this budget"
MINING_HELPS = "mining helps"
NO_DIFFERENCE = "no meaningful difference"
BASELINE_BETTER = "baseline better"
UNDECIDED = "inconclusive"
OUTCOMES = (MINING_HELPS, NO_DIFFERENCE, BASELINE_BETTER, UNDECIDED, NOT_DECIDED, UNSTABLE)
#: The seed design's scenarios (SPEC §8) each outcome supports; None: the data support none yet.
SCENARIOS = {NO_DIFFERENCE: "baseline best", BASELINE_BETTER: "baseline best", UNSTABLE: "training instability"}


@dataclass
class Arm:
    """One compared strategy: its per-seed primary-endpoint values and its health."""

    name: str
    mode: str
    values: list[float]
    runs: int
    diverged: int = 0
    gate: Mapping[str, Any] = field(default_factory=dict)   # convergence.ConvergenceRule.assess of the mean curve
    trend: Mapping[str, Any] = field(default_factory=dict)  # convergence.gap_trend versus the baseline


@dataclass
class Verdict:
    outcome: str
    sentence: str
    scenario: str | None
    strategy: str | None = None
    confidence: float = 0.95
    contrasts: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "sentence": self.sentence, "scenario": self.scenario,
                "strategy": self.strategy, "confidence": self.confidence, "contrasts": self.contrasts,
                "reasons": self.reasons}


def _pct(x: float) -> str:
    return f"{x:+.1%}" if math.isfinite(x) else "n/a"


def _ci(c: Mapping[str, Any]) -> str:
    return f"{c['confidence']:.1%} CI {_pct(c['ci_low'])} to {_pct(c['ci_high'])}"


def _unconverged_reason(arm: Arm, baseline: str) -> str:
    gate = arm.gate
    if gate.get("converged") is None:
        why = (f"too few validation evaluations to judge ({gate.get('evals_seen', 0)} seen)")
    else:
        why = (f"its validation MSE still moved {_pct(gate['tail_change'])} over the last evaluations "
               f"(spread ±{gate['spread']:.1%})")
    text = f"{arm.name} has not converged: {why}"
    trend = arm.trend
    if arm.name != baseline and trend.get("gaps"):
        gaps = " → ".join(_pct(g) for g in trend["gaps"])
        text += f"; its gap to {baseline} is {trend['direction']} ({gaps} at steps {', '.join(map(str, trend['steps']))})"
    return text


def decide(baseline: Arm, mining: Sequence[Arm], endpoint: str, delta: float, alpha: float = 0.05,
           max_seeds: int = 1000) -> Verdict:
    """The verdict on ``endpoint`` (its label, for the sentence) of each arm in ``mining`` versus
    ``baseline``; see the module docstring for the order of the rules."""
    m = max(len(mining), 1)
    confidence = 1 - alpha / m
    contrasts = []
    for arm in mining:
        rc = relative_change_ci(arm.values, baseline.values, confidence)
        outcome = classify(rc.ci_low, rc.ci_high, delta)
        contrasts.append({"strategy": arm.name, "mode": arm.mode, "versus": baseline.name, **rc.as_dict(),
                          "outcome": outcome,
                          "seeds_needed": seeds_needed(arm.values, baseline.values, delta, confidence, max_seeds)
                          if outcome == INCONCLUSIVE else None})
    reasons = [f"{c['strategy']} vs {baseline.name}: {_pct(c['estimate'])} ({_ci(c)}; Welch p = {c['p']:.3g}; "
               f"{c['n_a']} vs {c['n_b']} seeds): {c['outcome']}" for c in contrasts]

    def verdict(outcome: str, sentence: str, strategy: str | None = None, scenario: str | None = None) -> Verdict:
        return Verdict(outcome, sentence, scenario if scenario is not None else SCENARIOS.get(outcome), strategy,
                       confidence, contrasts, reasons)

    arms = [baseline, *mining]
    unstable = [a for a in arms if a.diverged]
    if unstable:
        what = "; ".join(f"{a.diverged} of {a.runs} {a.name} runs diverged" for a in unstable)
        return verdict(UNSTABLE, f"Training unstable: {what} (NaN/inf or exploding loss).")
    unconverged = [a for a in arms if a.gate.get("converged") is not True]
    if unconverged:
        why = "; ".join(_unconverged_reason(a, baseline.name) for a in unconverged)
        return verdict(NOT_DECIDED, f"Not decided at this budget: {why}. Train longer (or with a decaying "
                                    "learning rate) before reading the comparison.")
    if not contrasts:
        return verdict(UNDECIDED, "Inconclusive: no mining strategy to compare with the baseline.")
    helping = sorted((c for c in contrasts if c["outcome"] == HELPS), key=lambda c: c["estimate"])
    if helping:
        best = helping[0]
        also = [c["strategy"] for c in helping[1:]]
        sentence = (f"Mining helps: {best['strategy']} lowers the {endpoint} by {abs(best['estimate']):.1%} versus "
                    f"{baseline.name} ({_ci(best)}, entirely below -{delta:.0%})")
        sentence += f"; {', '.join(also)} helps too." if also else "."
        scenario = "adversarial wins" if best["mode"] == "adversarial" else "random best"
        return verdict(MINING_HELPS, sentence, best["strategy"], scenario)
    lead = next((c for c in contrasts if c["mode"] == "adversarial"), contrasts[0])
    beside = " ".join(f"Beside it, {c['strategy']}: {_pct(c['estimate'])} ({_ci(c)}), {c['outcome']}."
                      for c in contrasts if c is not lead)
    summary = f"{lead['strategy']} {_pct(lead['estimate'])} versus {baseline.name} ({_ci(lead)})"
    if lead["outcome"] == EQUIVALENT:
        return verdict(NO_DIFFERENCE, f"No meaningful difference: on the {endpoint}, {summary} lies within "
                                      f"±{delta:.0%}. {beside}".strip(), lead["strategy"])
    if lead["outcome"] == WORSE:
        return verdict(BASELINE_BETTER, f"Baseline better: on the {endpoint}, {summary}, entirely above 0. "
                                        f"{beside}".strip(), lead["strategy"])
    need = lead["seeds_needed"] if lead["seeds_needed"] else f"more than {max_seeds}"
    return verdict(UNDECIDED, f"Inconclusive: on the {endpoint}, {summary} spans more than one of "
                              f"'below -{delta:.0%}', 'within ±{delta:.0%}' and 'above 0'; about {need} seeds per "
                              f"arm would decide it at the observed variance. {beside}".strip(), lead["strategy"])
