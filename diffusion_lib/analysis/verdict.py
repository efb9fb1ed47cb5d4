"""The verdict of SPEC §8.2: one outcome on the primary endpoint, at the budget it was measured at.

Inputs are per-seed values of the primary endpoint at the full budget (one number per training
run), each compared strategy's diverged and unstable runs (:mod:`diffusion_lib.analysis.instability`), its
convergence gate (the plateau check on the seed-mean curve of the constant-lr trunk, and how many of
its runs pass on their own, :func:`convergence.strategy_gate`), the gap stability of each mining
contrast across the budget ladder's informative rungs (:mod:`diffusion_lib.analysis.stability`) and the
:class:`~diffusion_lib.settings.budget.Budget`. The outcome is the first that applies:

1. ``training unstable``: a run of a compared strategy (or of the baseline) diverged (NaN/inf or a
   loss above ``max_loss``) or is unstable at the full budget (its validation MSE rose far above its
   best), naming the runs, the step and the rung;
2. ``not decided at this budget``: a compared strategy's seed-mean trunk curve fails the plateau
   check, or a mining contrast is not stable across the ladder's informative rungs (including fewer
   than two of them). The sentence says which, which way the gap moves and its estimate at each rung
   (labelled where uninformative or unstable), and adds the labelled extrapolation where the
   informative estimates are monotone;
3. ``mining helps``: the decision CI of a mining strategy's relative change lies entirely below
   -delta and every compared run passed the plateau check on its own curve (naming the strategy;
   with both helping, the one with the lower estimate);
4. otherwise the research question's own contrast decides, that of the adversarial strategy (or
   the only mining strategy): ``no meaningful difference`` if its equivalence CI lies inside
   (-delta, +delta) (saying so when the baseline is nevertheless better by less than the margin: CI
   above 0), ``baseline better`` if its decision CI lies entirely above 0 (saying whether harm beyond
   +delta is established), ``inconclusive`` otherwise, with the seeds the pending decision needs
   (:mod:`diffusion_lib.analysis.power`). The other contrast is stated beside it.

The sentence names the budget (training samples and their share of the paper's). The scenario of
the seed design: ``adversarial wins`` / ``random best`` (mining helps), ``training instability``,
``baseline best`` only when the baseline's advantage is established (outcome baseline better) and
no mining arm's CI lies below 0, ``no difference (the baseline is cheapest)`` for equivalence;
otherwise None (the data do not support one yet).

Multiplicity: with m mining strategies compared on the primary endpoint (adversarial and random:
m = 2), decisions 3 and 5 use the two-sided CI at 1 - alpha/m (97.5%) and equivalence uses two
one-sided tests at alpha/m each, i.e. the CI at 1 - 2 alpha/m (95%), so the family of primary
contrasts keeps its error rate at alpha. Every CI printed names its level.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..settings.budget import PAPER_SAMPLES, Budget
from .power import EQUIVALENCE, seeds_needed
from .stability import GapStability
from .statistics import EQUIVALENT, HELPS, INCONCLUSIVE, WORSE, equivalence_level, judged_change

UNSTABLE = "training unstable"
NOT_DECIDED = "not decided at this budget"
MINING_HELPS = "mining helps"
NO_DIFFERENCE = "no meaningful difference"
BASELINE_BETTER = "baseline better"
UNDECIDED = "inconclusive"
OUTCOMES = (MINING_HELPS, NO_DIFFERENCE, BASELINE_BETTER, UNDECIDED, NOT_DECIDED, UNSTABLE)
POWER = 0.8


@dataclass
class Arm:
    """One compared strategy: its per-seed primary-endpoint values and its health."""

    name: str
    mode: str
    values: list[float]
    runs: int
    diverged: int = 0
    # convergence.strategy_gate row: the mean curve's plateau check, runs_converged of runs on their own
    gate: Mapping[str, Any] = field(default_factory=dict)
    trend: Mapping[str, Any] = field(default_factory=dict)  # convergence.gap_trend versus the baseline
    unstable: list[str] = field(default_factory=list)  # instability.describe_run of each unstable run

    @property
    def every_run_plateaued(self) -> bool:
        """Every run of the arm passed the plateau check on its own curve (unknown counts as no)."""
        runs = self.gate.get("runs")
        return bool(runs) and self.gate.get("runs_converged") == runs


@dataclass
class Verdict:
    outcome: str
    sentence: str
    scenario: str | None
    strategy: str | None = None
    confidence: float = 0.95
    contrasts: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    budget: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "sentence": self.sentence, "scenario": self.scenario,
                "strategy": self.strategy, "confidence": self.confidence, "contrasts": self.contrasts,
                "reasons": self.reasons, "budget": self.budget}


def _pct(x: float) -> str:
    return f"{x:+.1%}" if math.isfinite(x) else "n/a"


def _ci(c: Mapping[str, Any]) -> str:
    return f"{c['confidence']:.1%} CI {_pct(c['ci_low'])} to {_pct(c['ci_high'])}"


def _eq_ci(c: Mapping[str, Any]) -> str:
    return f"{c['eq_confidence']:.1%} CI {_pct(c['eq_low'])} to {_pct(c['eq_high'])}"


def _unconverged_reason(arm: Arm, baseline: str) -> str:
    gate = arm.gate
    if gate.get("converged") is None:
        why = f"too few validation evaluations to judge ({gate.get('evals_seen', 0)} seen)"
    else:
        until = gate.get("until")
        where = (f"the constant-lr trunk's last evaluations (to step {int(until):,})"
                 if until is not None and until == until else "the last evaluations")
        why = f"its seed-mean validation MSE still moved {_pct(gate['tail_change'])} over {where} (spread ±{gate['spread']:.1%})"
    text = f"{arm.name} has not converged: {why}"
    trend = arm.trend
    if arm.name != baseline and trend.get("gaps"):
        gaps = " → ".join(_pct(g) for g in trend["gaps"])
        text += f"; its gap to {baseline} is {trend['direction']} ({gaps} at steps {', '.join(map(str, trend['steps']))})"
    return text


def _not_decided_reasons(arms: Sequence[Arm], baseline: Arm, stability: Mapping[str, GapStability] | None,
                         mining: Sequence[Arm]) -> list[str]:
    """Rule 2: seed-mean trunk curves that fail the plateau check, and mining contrasts that are not
    stable across the ladder's informative rungs."""
    reasons = [_unconverged_reason(a, baseline.name) for a in arms if a.gate.get("converged") is not True]
    for arm in mining:
        st = (stability or {}).get(arm.name)
        if st is None:
            reasons.append(f"the {arm.name} vs {baseline.name} gap's stability across budgets was not assessed "
                           "(no budget ladder)")
        elif not st.stable:
            reasons.append(st.ladder_reason())
    return reasons


def _trajectories(mining: Sequence[Arm], baseline: Arm, stability: Mapping[str, GapStability] | None) -> list[str]:
    """Each settled mining contrast's estimate at every rung, so the sentence always carries them."""
    out = []
    for arm in mining:
        st = (stability or {}).get(arm.name)
        if st is not None and st.stable:
            out.append(f"the {arm.name} vs {baseline.name} gap is stable across the ladder ({st.trajectory()})")
    return out


def _scenario(outcome: str, lead: Mapping[str, Any] | None, contrasts: Sequence[Mapping[str, Any]]) -> str | None:
    """The seed design's scenario the outcome supports (see the module docstring)."""
    if outcome == UNSTABLE:
        return "training instability"
    if outcome == MINING_HELPS and lead is not None:
        return "adversarial wins" if lead["mode"] == "adversarial" else "random best"
    below_zero = any(math.isfinite(c["ci_high"]) and c["ci_high"] < 0 for c in contrasts)
    if outcome == BASELINE_BETTER and not below_zero:
        return "baseline best"
    if outcome == NO_DIFFERENCE and not below_zero:
        return "no difference (the baseline is cheapest)"
    return None


def _seed_plan(c: Mapping[str, Any], strategy: str, baseline: str, max_seeds: int) -> str:
    """What the pending decision of an inconclusive contrast needs (:mod:`diffusion_lib.analysis.power`)."""
    plan = c.get("seeds_needed")
    if not plan:
        return (f"no allocation of up to {max_seeds} seeds per arm reaches {POWER:.0%} power for the pending decision "
                "at the observed variances")
    what = (f"equivalence at the observed change {_pct(plan['effect'])} (its {plan['confidence']:.1%} CI inside the "
            "margin)" if plan["decision"] == EQUIVALENCE else
            f"a change of {plan['effect']:.0%} (its {plan['confidence']:.1%} CI excluding 0)")
    return (f"the pending decision is {what}: {POWER:.0%} power would need about {plan['n_a']} {strategy} and "
            f"{plan['n_b']} {baseline} seeds (allocated by each arm's own variance; the study has {c['n_a']} and "
            f"{c['n_b']})")


def decide(baseline: Arm, mining: Sequence[Arm], endpoint: str, delta: float, alpha: float = 0.05,
           max_seeds: int = 1000, *, budget: Budget | None = None,
           stability: Mapping[str, GapStability] | None = None) -> Verdict:
    """The verdict on ``endpoint`` (its label, for the sentence) of each arm in ``mining`` versus
    ``baseline`` at ``budget``, given each mining contrast's ``stability`` across the ladder (by
    strategy name; a contrast without one is not stable); see the module docstring for the rules."""
    confidence = 1 - alpha / max(len(mining), 1)
    contrasts = []
    for arm in mining:
        change = judged_change(arm.values, baseline.values, delta, confidence)
        plan = (seeds_needed(arm.values, baseline.values, delta, confidence, equivalence_level(confidence), POWER,
                             max_seeds) if change["outcome"] == INCONCLUSIVE else None)
        contrasts.append({"strategy": arm.name, "mode": arm.mode, "versus": baseline.name, **change,
                          "seeds_needed": plan.as_dict() if plan else None})
    reasons = [f"{c['strategy']} vs {baseline.name}: {_pct(c['estimate'])} ({_ci(c)}; equivalence {_eq_ci(c)}; "
               f"Welch p = {c['p']:.3g}; {c['n_a']} vs {c['n_b']} seeds): {c['outcome']}" for c in contrasts]
    at = f" at {budget.phrase()}" if budget else ""

    def verdict(outcome: str, sentence: str, lead: Mapping[str, Any] | None = None) -> Verdict:
        return Verdict(outcome, sentence, _scenario(outcome, lead, contrasts), lead["strategy"] if lead else None,
                       confidence, contrasts, reasons, budget.as_dict() if budget else None)

    arms = [baseline, *mining]
    if any(a.diverged or a.unstable for a in arms):
        what = [f"{a.diverged} of {a.runs} {a.name} runs diverged (NaN/inf or a loss above max_loss)"
                for a in arms if a.diverged]
        what += [f"{len(a.unstable)} of {a.runs} {a.name} runs are unstable ({'; '.join(a.unstable)})"
                 for a in arms if a.unstable]
        return verdict(UNSTABLE, f"Training unstable{at}: {'; '.join(what)}. No contrast involving these runs is "
                                 "reported as an estimate.")
    why = _not_decided_reasons(arms, baseline, stability, mining)
    if why:
        why += _trajectories(mining, baseline, stability)
        paper = budget.paper_samples if budget else PAPER_SAMPLES
        extra = [t for a in mining if (st := (stability or {}).get(a.name)) and (t := st.extrapolation_text(paper))]
        return verdict(NOT_DECIDED, f"Not decided{at or ' at this budget'}: {'; '.join(why)}. {' '.join(extra)}".strip())
    if not contrasts:
        return verdict(UNDECIDED, f"Inconclusive{at}: no mining strategy to compare with the baseline.")
    every_run = all(a.every_run_plateaued for a in arms)
    helping = sorted((c for c in contrasts if c["outcome"] == HELPS), key=lambda c: c["estimate"])
    if helping and every_run:
        best = helping[0]
        also = [c["strategy"] for c in helping[1:]]
        sentence = (f"Mining helps{at}: {best['strategy']} lowers the {endpoint} by {abs(best['estimate']):.1%} "
                    f"versus {baseline.name} ({_ci(best)}, entirely below -{delta:.0%}), and every compared run "
                    "passed the plateau check")
        sentence += f"; {', '.join(also)} helps too." if also else "."
        return verdict(MINING_HELPS, sentence, best)
    lead = next((c for c in contrasts if c["mode"] == "adversarial"), contrasts[0])
    beside = " ".join(f"Beside it, {c['strategy']}: {_pct(c['estimate'])} ({_ci(c)}), {c['outcome']}."
                      for c in contrasts if c is not lead)
    summary = f"on the {endpoint}, {lead['strategy']} {_pct(lead['estimate'])} versus {baseline.name} ({_ci(lead)})"
    if lead["outcome"] == EQUIVALENT:
        margin = (f"; the baseline is better by less than the margin (the CI lies above 0 and below +{delta:.0%})"
                  if lead["eq_low"] > 0 else "")
        return verdict(NO_DIFFERENCE, f"No meaningful difference{at}: on the {endpoint}, {lead['strategy']} "
                                      f"{_pct(lead['estimate'])} versus {baseline.name} (equivalence by two one-sided "
                                      f"tests: {_eq_ci(lead)}) lies within ±{delta:.0%}{margin}. {beside}".strip(),
                       lead)
    if lead["outcome"] == WORSE:
        harm = (f"harm beyond +{delta:.0%} is established (lower bound {_pct(lead['ci_low'])} above +{delta:.0%})"
                if lead["ci_low"] > delta else
                f"harm beyond +{delta:.0%} is not established (lower bound {_pct(lead['ci_low'])})")
        return verdict(BASELINE_BETTER, f"Baseline better{at}: {summary}, entirely above 0; {harm}. "
                                        f"{beside}".strip(), lead)
    held = ([f"it would help (CI entirely below -{delta:.0%}), but {', '.join(a.name for a in arms if not a.every_run_plateaued)} "
             "runs fail the plateau check on their own curves"] if lead["outcome"] == HELPS else [])
    return verdict(UNDECIDED, f"Inconclusive{at}: {summary}; equivalence {_eq_ci(lead)}; "
                              + ("; ".join(held) if held else
                                 f"neither entirely below -{delta:.0%}, nor inside ±{delta:.0%}, nor above 0")
                              + f"; {_seed_plan(lead, lead['strategy'], baseline.name, max_seeds)}. {beside}".strip(),
                   lead)
