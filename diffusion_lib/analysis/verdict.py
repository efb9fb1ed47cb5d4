"""The verdict (method §8.2): one outcome on the primary endpoint, at its budget, final or still moving.

Inputs are per-seed values of the primary endpoint at the full budget (one number per training
run), each compared strategy's diverged and unstable runs (:mod:`diffusion_lib.analysis.instability`),
its plateau check (the slope of its seed-mean trunk curve, :mod:`diffusion_lib.analysis.convergence`),
each mining contrast's gate across the budget ladder (:class:`~diffusion_lib.analysis.stability.GapStability`:
which rungs are usable, and the trend per doubling read on the rungs and on the trunk) and the
:class:`~diffusion_lib.settings.budget.Budget`. Every contrast gets one label
(:func:`~diffusion_lib.analysis.statistics.classify`, the same rules on both sides of 0), and the
outcome is the first that applies:

1. ``training unstable``: a run of a compared strategy (or of the baseline) diverged (NaN/inf or a
   loss above ``max_loss``) or is unstable at the full budget, naming the runs, the step and rung;
2. ``not decided``: a compared arm's seed-mean trunk fails the plateau check, or a mining contrast
   has fewer than two usable rungs or an unusable full-budget rung (naming it). The sentence still
   says what the full budget measured (not a verdict) and which way the gap moves;
3. ``mining helps`` (a mining arm better, meaningfully or not, as labelled; with several, the one
   with the lower estimate), ``baseline better`` (the adversarial arm, the research question's,
   worse), ``no meaningful difference`` (equivalent), else ``inconclusive`` with the seeds the
   pending decision needs (:mod:`diffusion_lib.analysis.power`). Always with the budget **and** the
   status, *final* or *still moving* (:func:`~diffusion_lib.analysis.trend.finality`: direction, rate
   per doubling with its CI, and what the trend implies at 2× the budget and at the paper's, labelled
   an extrapolation, beside the reference replication's numbers).

The scenario of the seed design is named only for a final answer, from all contrasts together
(:func:`scenario`); otherwise the data do not support one yet.

Multiplicity: with m mining strategies compared on the primary endpoint (m = 2 here) and k looks of
``until_stable``, decisions use the two-sided CI at 1 - alpha/(m k) (97.5% for one look) and
equivalence two one-sided tests at alpha/(m k) each, i.e. the CI at 1 - 2 alpha/(m k) (95%). Every CI
printed names its level, and every label stands beside the interval it was judged on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..settings.budget import PAPER_SAMPLES, Budget, samples_text
from .power import EQUIVALENCE, seeds_needed
from .stability import GapStability
from .statistics import EQUIVALENT_LABELS, INCONCLUSIVE, equivalence_level, judged_change, level_text, p_text, side
from .trend import TRUNK, Finality, implied_at

UNSTABLE = "training unstable"
NOT_DECIDED = "not decided"
MINING_HELPS = "mining helps"
NO_DIFFERENCE = "no meaningful difference"
BASELINE_BETTER = "baseline better"
UNDECIDED = "inconclusive"
OUTCOMES = (MINING_HELPS, NO_DIFFERENCE, BASELINE_BETTER, UNDECIDED, NOT_DECIDED, UNSTABLE)
FINAL, MOVING = "final", "still moving"
POWER = 0.8
#: the reference replication at the paper's budget (method §9): relative change of each mining arm's
#: mean validation MSE versus the baseline's (0.009777 and 0.009731 against 0.009692)
REFERENCE_AT_PAPER = {"adversarial": 0.009777 / 0.009692 - 1, "random": 0.009731 / 0.009692 - 1}


@dataclass
class Arm:
    """One compared strategy: its per-seed primary-endpoint values and its health."""

    name: str
    mode: str
    values: list[float]
    runs: int
    diverged: int = 0
    # convergence.strategy_gate row: the plateau check on the seed-mean trunk curve
    gate: Mapping[str, Any] = field(default_factory=dict)
    unstable: list[str] = field(default_factory=list)  # instability.describe_run of each unstable run


@dataclass
class Verdict:
    outcome: str
    sentence: str
    scenario: str | None
    strategy: str | None = None
    confidence: float = 0.975
    contrasts: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    budget: dict[str, Any] | None = None
    status: str | None = None
    finality: dict[str, Any] = field(default_factory=dict)
    looks: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "sentence": self.sentence, "scenario": self.scenario,
                "strategy": self.strategy, "confidence": self.confidence, "contrasts": self.contrasts,
                "reasons": self.reasons, "budget": self.budget, "status": self.status, "finality": self.finality,
                "looks": self.looks}


def _pct(x: float) -> str:
    return f"{x:+.1%}" if math.isfinite(x) else "n/a"


def _ci(c: Mapping[str, Any]) -> str:
    return f"{level_text(c['confidence'])} CI {_pct(c['ci_low'])} to {_pct(c['ci_high'])}"


def _eq_ci(c: Mapping[str, Any]) -> str:
    return f"{level_text(c['eq_confidence'])} TOST CI {_pct(c['eq_low'])} to {_pct(c['eq_high'])}"


def judged_text(c: Mapping[str, Any]) -> str:
    """A contrast's label beside the interval it was judged on: ``+4.6% (97.5% CI +3.6% to +5.6%):
    worse, size not established``; equivalence labels stand beside the TOST interval."""
    interval = _eq_ci(c) if c["outcome"] in EQUIVALENT_LABELS else _ci(c)
    extra = f"; {_ci(c)}" if c["outcome"] in EQUIVALENT_LABELS[::2] else ""
    return f"{_pct(c['estimate'])} ({interval}{extra}): {c['outcome']}"


def plateau_text(gate: Mapping[str, Any]) -> str:
    """The plateau check's reading of one arm's seed-mean trunk curve."""
    if gate.get("converged") is None:
        return f"too few trunk evaluations to judge ({int(gate.get('evals_seen', 0) or 0)} seen)"
    return (f"slope {gate['slope']:+.3f} per {gate.get('per', 'doubling')} (95% CI {gate['slope_low']:+.3f} to "
            f"{gate['slope_high']:+.3f}) over steps {int(gate['from_step']):,}-{int(gate['to_step']):,}, where a "
            f"plateau needs the CI within ±{gate.get('tolerance', math.nan):g}")


def scenario(contrasts: Sequence[Mapping[str, Any]]) -> str | None:
    """The seed design's scenario supported by all mining contrasts together (a final answer only):
    ``adversarial wins`` / ``random best`` (that arm better and no other), ``both mining arms help``,
    ``baseline best`` (the baseline better than every mining arm), ``no difference (the baseline is
    cheapest)`` (every arm equivalent), ``no gain from mining`` (none better, some worse, the rest
    equivalent); None when a contrast is open."""
    sides = {c["mode"]: side(str(c["outcome"])) for c in contrasts}
    if not sides or "open" in sides.values():
        return None
    better = [m for m, s in sides.items() if s == "better"]
    if len(better) == 1:
        return {"adversarial": "adversarial wins", "random": "random best"}.get(better[0], f"{better[0]} wins")
    if better:
        return "both mining arms help"
    if all(s == "worse" for s in sides.values()):
        return "baseline best"
    if all(s == "equivalent" for s in sides.values()):
        return "no difference (the baseline is cheapest)"
    return "no gain from mining"


def _seed_plan(c: Mapping[str, Any], strategy: str, baseline: str, max_seeds: int) -> str:
    """What the pending decision of an inconclusive contrast needs (:mod:`diffusion_lib.analysis.power`)."""
    plan = c.get("seeds_needed")
    if not plan:
        return (f"no allocation of up to {max_seeds} seeds per arm reaches {POWER:.0%} power for the pending decision "
                "at the observed variances")
    what = (f"equivalence at the observed change {_pct(plan['effect'])} (its {level_text(plan['confidence'])} CI inside the "
            "margin)" if plan["decision"] == EQUIVALENCE else
            f"a change of {plan['effect']:.0%} (its {level_text(plan['confidence'])} CI excluding 0)")
    return (f"the pending decision is {what}: {POWER:.0%} power would need about {plan['n_a']} {strategy} and "
            f"{plan['n_b']} {baseline} seeds (allocated by each arm's own variance; the study has {c['n_a']} and "
            f"{c['n_b']})")


def movement(c: Mapping[str, Any], gate: GapStability | None, fin: Finality | None, budget: Budget | None,
             paper_samples: float) -> str:
    """Where a contrast is heading: both trend readings, why it is not final, and what the trend (the
    trunk's where measured, else the rungs') implies at 2× the budget and at the paper's."""
    name = f"the {c['strategy']} vs {c['versus']} gap"
    if gate is None:
        return f"{name}'s trend was not measured (no budget ladder)"
    readings = "; ".join(t.short() for t in gate.trends())
    if fin is not None and fin.final:
        return f"{name} is final (change of its log ratio per doubling, 95% CI: {readings})"
    lead = next((t for t in gate.trends() if t.source == TRUNK and t.assessable),
                next((t for t in gate.trends() if t.assessable), None))
    text = (f"{name} is still moving" + (f", {lead.direction(c['estimate'])}" if lead else "")
            + f" (change of its log ratio per doubling, 95% CI: {readings})")
    if fin is not None and fin.summary():
        text += f": {fin.summary()}"
    if lead is not None:
        at2 = implied_at(c, lead, 1.0)
        text += (f". Extrapolation, not a finding: along its {lead.source} trend the gap would be {_pct(at2[0])} "
                 f"at 2× the budget ({_pct(at2[1])} to {_pct(at2[2])})")
        if budget is not None and budget.samples < paper_samples:
            n = math.log2(paper_samples / budget.samples)
            far = implied_at(c, lead, n)
            text += f" and {_pct(far[0])} at the paper's budget, {n:.1f} doublings on"
        ref = REFERENCE_AT_PAPER.get(str(c.get("mode")))
        if ref is not None:
            text += (f"; the reference replication measured {_pct(ref)} there ({samples_text(paper_samples)} "
                     "samples, 10 seeds, validation MSE)")
    return text


def decide(baseline: Arm, mining: Sequence[Arm], endpoint: str, delta: float, alpha: float = 0.05,
           max_seeds: int = 1000, *, budget: Budget | None = None,
           gates: Mapping[str, GapStability] | None = None, looks: int = 1) -> Verdict:
    """The verdict on ``endpoint`` (its label, for the sentence) of each arm in ``mining`` versus
    ``baseline`` at ``budget``, given each mining contrast's gate across the ladder (by strategy name;
    a contrast without one is not decided) and the number of ``looks`` until_stable took (the CIs'
    Bonferroni factor); see the module docstring for the rules."""
    gates = gates or {}
    confidence = 1 - alpha / (max(len(mining), 1) * max(looks, 1))
    paper = budget.paper_samples if budget else PAPER_SAMPLES
    contrasts, finals = [], {}
    for arm in mining:
        change = judged_change(arm.values, baseline.values, delta, confidence)
        plan = (seeds_needed(arm.values, baseline.values, delta, confidence, equivalence_level(confidence), POWER,
                             max_seeds) if change["outcome"] == INCONCLUSIVE else None)
        c = {"strategy": arm.name, "mode": arm.mode, "versus": baseline.name, **change,
             "seeds_needed": plan.as_dict() if plan else None}
        gate = gates.get(arm.name)
        fin = gate.finality(c) if gate is not None else None
        finals[arm.name] = fin.as_dict() if fin else {"final": False, "label": c["outcome"],
                                                      "reasons": ["no budget ladder"], "after": {}}
        c["final"] = bool(fin and fin.final)
        c["movement"] = movement(c, gate, fin, budget, paper)
        contrasts.append(c)
    reasons = [f"{c['strategy']} vs {baseline.name}: {judged_text(c)} (Welch p {p_text(c['p'])}; {c['n_a']} vs "
               f"{c['n_b']} seeds)" for c in contrasts]
    at = f" at {budget.phrase()}" if budget else " at this budget"
    looked = f" ({looks} looks of until_stable: Bonferroni over them)" if looks > 1 else ""

    def verdict(outcome: str, sentence: str, lead: Mapping[str, Any] | None = None,
                status: str | None = None) -> Verdict:
        return Verdict(outcome, sentence, scenario(contrasts) if status == FINAL else None,
                       lead["strategy"] if lead else None, confidence, contrasts, reasons,
                       budget.as_dict() if budget else None, status, finals, looks)

    arms = [baseline, *mining]
    if any(a.diverged or a.unstable for a in arms):
        what = [f"{a.diverged} of {a.runs} {a.name} runs diverged (NaN/inf or a loss above max_loss)"
                for a in arms if a.diverged]
        what += [f"{len(a.unstable)} of {a.runs} {a.name} runs are unstable ({'; '.join(a.unstable)})"
                 for a in arms if a.unstable]
        return Verdict(UNSTABLE, f"Training unstable{at}: {'; '.join(what)}. No contrast involving these runs is "
                                 "reported as an estimate.", "training instability", None, confidence, contrasts,
                       reasons, budget.as_dict() if budget else None, None, finals, looks)
    why = [f"{a.name} has not plateaued on its trunk: {plateau_text(a.gate)}" for a in arms
           if a.gate.get("converged") is not True]
    why += [gates[a.name].decision_reason() if a.name in gates else
            f"the {a.name} vs {baseline.name} contrast has no budget ladder to read" for a in mining
            if a.name not in gates or gates[a.name].decision_reason()]
    if why:
        measured = " ".join(f"Measured at this budget, not a verdict: {c['strategy']} {judged_text(c)}; "
                            f"{c['movement']}." for c in contrasts if math.isfinite(c["estimate"]))
        return verdict(NOT_DECIDED, f"Not decided{at}: {'; '.join(why)}. {measured}".strip())
    if not contrasts:
        return verdict(UNDECIDED, f"Inconclusive{at}: no mining strategy to compare with the baseline.")
    status = FINAL if all(c["final"] for c in contrasts) else MOVING
    better = sorted((c for c in contrasts if side(c["outcome"]) == "better"), key=lambda c: c["estimate"])
    lead = next((c for c in contrasts if c["mode"] == "adversarial"), contrasts[0])
    chosen = better[0] if better else lead

    def tail(c: Mapping[str, Any]) -> str:
        beside = " ".join(f"Beside it, {o['strategy']} versus {baseline.name}: {judged_text(o)}; {o['movement']}."
                          for o in contrasts if o is not c)
        return f"{status.capitalize()}{looked}: {c['movement']}. {beside}".strip()

    what = f"{chosen['strategy']} versus {baseline.name} on the {endpoint}: {judged_text(chosen)}"
    if better:
        return verdict(MINING_HELPS, f"Mining helps{at}: {what}. {tail(chosen)}", chosen, status)
    if side(lead["outcome"]) == "worse":
        return verdict(BASELINE_BETTER, f"Baseline better{at}: {what}. {tail(lead)}", lead, status)
    if side(lead["outcome"]) == "equivalent":
        return verdict(NO_DIFFERENCE, f"No meaningful difference{at}: {what}. {tail(lead)}", lead, status)
    return verdict(UNDECIDED, f"Inconclusive{at}: {what}; {_seed_plan(lead, lead['strategy'], baseline.name, max_seeds)}. "
                              f"{tail(lead)}", lead, status)
