"""A study's analysis in one place: from its runs' numbers to its tables and verdict (method §8).

:class:`Comparison` is the config's ``comparison`` block, parsed once (roles, primary endpoint,
margin, error rate, the plateau, instability and inference-failure rules). :func:`analyse` takes
what the runs measured (already read from their files by :mod:`diffusion_lib.jobs.study`) and returns
every table of the study and the verdict; :func:`gates` is the part an ``until_stable`` look reads.
Nothing here touches a file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pandas as pd

from ..settings.budget import PAPER_SAMPLES, Budget, budget_of
from . import ablation as abl
from . import interpretation as interp
from . import ladder_tables as lt
from . import tables as tab
from .convergence import ConvergenceRule, plateau_window_end, run_gate, strategy_gate
from .failures import FAILURE_FACTOR, arm_failures, failure_table, sensitivity_table
from .instability import InstabilityRule, describe_run, mark_unstable
from .stability import GapStability, ladder_gate, stability_table
from .stability_finding import StabilityDesign, analyse_stability
from .trend import Trend, trunk_trend
from .verdict import Arm, decide

ROLES = ("baseline", "random", "adversarial")


@dataclass(frozen=True)
class Comparison:
    """The config's ``comparison`` block (``diffusion_lib/settings/config.schema.yaml``), parsed once."""

    baseline: str
    random: str | None = None
    adversarial: str | None = None
    primary_set: str = "test_id"
    primary_inner: int | None = None
    delta: float = 0.05
    alpha: float = 0.05
    convergence: ConvergenceRule = field(default_factory=ConvergenceRule)
    instability: InstabilityRule = field(default_factory=InstabilityRule)
    failure_factor: float = FAILURE_FACTOR
    stability: StabilityDesign | None = None

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> "Comparison":
        primary = cfg.get("primary") or {}
        return cls(cfg["baseline"], cfg.get("random"), cfg.get("adversarial"), primary.get("set", "test_id"),
                   primary.get("inner_steps"), float(cfg.get("delta", 0.05)), float(cfg.get("alpha", 0.05)),
                   ConvergenceRule.from_mapping(cfg.get("convergence")),
                   InstabilityRule.from_mapping(cfg.get("instability")),
                   float((cfg.get("failures") or {}).get("factor", FAILURE_FACTOR)),
                   StabilityDesign.from_mapping(cfg.get("stability"), float(cfg.get("alpha", 0.05))))

    @property
    def roles(self) -> dict[str, str | None]:
        return {r: getattr(self, r) for r in ROLES}

    def primary(self, default_inner: int) -> tab.Endpoint:
        return tab.Endpoint(self.primary_set, default_inner if self.primary_inner is None else self.primary_inner)

    def mining(self, present: Sequence[str]) -> list[str]:
        """The verdict's mining arms that have runs, adversarial first (none without the baseline)."""
        if self.baseline not in present:
            return []
        return [s for s in (self.adversarial, self.random) if s is not None and s in present]

    def confidence(self, arms: int, looks: int = 1) -> float:
        """The decision CI's level: Bonferroni over the mining arms and the looks taken."""
        return 1 - self.alpha / (max(arms, 1) * max(looks, 1))


def entry_mean(trivial: Mapping[str, Mapping[str, float]], test_set: str) -> float:
    """The per-entry-mean predictor's MSE on ``test_set`` (the skill reference)."""
    return float(trivial.get(test_set, {}).get("entry_mean", math.nan))


def trunk_trends(curves: pd.DataFrame, mining: Sequence[str], comparison: Comparison,
                 trivial: Mapping[str, Mapping[str, float]], until: int | None) -> dict[str, Trend]:
    """Each mining arm's trunk reading versus the baseline; validation skill is read against the
    per-entry-mean predictor's MSE on the primary set, the validation set's distribution."""
    ref = entry_mean(trivial, comparison.primary_set)
    return {s: trunk_trend(curves, s, comparison.baseline, ref, until, comparison.convergence.metric)
            for s in mining}


def gates(rung_vals: pd.DataFrame, unstable: pd.DataFrame, curves: pd.DataFrame, comparison: Comparison,
          primary: tab.Endpoint, mining: Sequence[str], trivial: Mapping[str, Mapping[str, float]], full: int,
          until: int | None, paper: float, looks: int = 1) -> tuple[pd.DataFrame, dict[str, GapStability]]:
    """The ladder's contrasts and each mining arm's gate (usable rungs, both trend readings)."""
    pairs = [(s, comparison.baseline, "verdict") for s in mining]
    return ladder_gate(rung_vals, unstable, pairs, primary, comparison.delta, comparison.alpha,
                       comparison.confidence(len(mining), looks), paper, trivial, full,
                       trunk_trends(curves, mining, comparison, trivial, until))


def _stability_budget(budget: Budget | None, training: Mapping[str, Any], arms: Mapping[str, Any],
                      design: StabilityDesign | None) -> str:
    """Where the stability finding holds: the primary pair's learning rates, the study's budget (the
    verdict's phrase) and its schedule."""
    kind = str((training.get("lr_schedule") or {}).get("kind", "constant"))
    lrs = sorted({float(arms[s][1]) for s in (design.primary if design else ()) if s in arms})
    at = f"At lr {' and '.join(f'{lr:g}' for lr in lrs)}, " if lrs else "At "
    return f"{at}{budget.phrase() if budget else 'an unknown budget'}, {kind} learning rate"


@dataclass
class Measured:
    """What a study's runs measured, read from their files: per-run metrics (labelled with this
    study's strategy and seed), learning curves, per-rung values, unstable rung models, the primary
    endpoint's per-problem MSEs at the full budget, and the trivial predictors' MSEs."""

    metrics: list[dict[str, Any]]
    curves: pd.DataFrame
    rung_values: pd.DataFrame | None
    unstable: pd.DataFrame | None
    per_problem: pd.DataFrame
    trivial: Mapping[str, Mapping[str, float]]


def analyse(measured: Measured, comparison: Comparison, *, default_inner: int, training: Mapping[str, Any],
            ladder: Mapping[str, Any] | None, sweep_points: Mapping[str, Any], looks: int = 1,
            arms: Mapping[str, Any] | None = None) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Every table of the study (by name) and its verdict (a dict; ``verdict.json``'s core).
    ``arms``: each strategy's (arm, learning rate) for the stability tables
    (:func:`diffusion_lib.plan.config.strategy_arms`; each strategy its own arm at ``training.lr``
    when not given)."""
    primary = comparison.primary(default_inner)
    family = tab.endpoint_family(primary, default_inner)
    budget = budget_of(ladder, training)
    paper = budget.paper_samples if budget else PAPER_SAMPLES
    trivial, curves = measured.trivial, measured.curves
    runs_df = tab.runs_table(measured.metrics, sweep_points)
    values = tab.endpoint_values(runs_df, family)
    base = comparison.baseline
    present = list(dict.fromkeys(runs_df["strategy"]))
    mining = comparison.mining(present)
    confidence = comparison.confidence(len(mining), looks)
    verdict_pairs = [(s, base, "verdict") for s in mining]
    pairs = verdict_pairs + [(s, base, "exploratory") for s in present if s != base and s not in mining]
    if len(mining) == 2:
        pairs.append((comparison.adversarial, comparison.random, "exploratory"))
    until = plateau_window_end(str((training.get("lr_schedule") or {}).get("kind")),
                               budget.steps if budget else 0, float((ladder or {}).get("decay_fraction") or 0.0))
    rule = comparison.convergence
    plateau, plateau_runs = strategy_gate(curves, rule, until), run_gate(curves, rule, until)
    full = budget.steps if budget else int(values.get("rung", pd.Series([0])).max())
    if measured.rung_values is not None:
        rung_vals, unstable = measured.rung_values, measured.unstable
    else:  # the full budget as the only rung
        rung_vals = values.assign(rung=full, kind=lt.LADDER, samples=budget.samples if budget else 0)
        unstable = comparison.instability.runs(curves).assign(rung=full, kind=lt.LADDER)
    contrasts = mark_unstable(tab.contrasts_table(values, pairs, primary, comparison.delta, comparison.alpha,
                                                  confidence), unstable, rung=full)
    contrasts["p_holm_family"] = interp.family_holm(contrasts)
    ladder_contrasts, arm_gates = gates(rung_vals, unstable, curves, comparison, primary, mining, trivial, full, until,
                                        paper, looks)
    skill = interp.skill_table(values, trivial)
    strategies = tab.strategies_table(runs_df, trivial)
    diagnostics = tab.diagnostics_table(curves, runs_df, default_inner)
    failures = failure_table(measured.per_problem, comparison.failure_factor)

    def arm(strategy: str) -> Arm:
        per_seed = runs_df[runs_df["strategy"] == strategy].drop_duplicates("seed")
        sel = values[(values["strategy"] == strategy) & (values["endpoint"] == primary.key)]
        gate = plateau[plateau["strategy"] == strategy]
        blown = unstable[(unstable["strategy"] == strategy) & (unstable["rung"] == full) & (unstable["kind"] == lt.LADDER)]
        return Arm(strategy, str(per_seed["mode"].iloc[0]), sel["value"].tolist(), len(per_seed),
                   int((per_seed["status"] == "diverged").sum()),
                   gate.iloc[0].to_dict() if len(gate) else {"converged": None, "evals_seen": 0},
                   [describe_run(strategy, r.seed, r._asdict(), full) for r in blown.itertuples()])

    if base in present:
        v = decide(arm(base), [arm(s) for s in mining], primary.label, comparison.delta, comparison.alpha,
                   budget=budget, gates=arm_gates, looks=looks).as_dict()
    else:
        v = {"outcome": "inconclusive", "sentence": f"Inconclusive: the baseline strategy {base!r} has no runs.",
             "scenario": None, "strategy": None, "confidence": confidence, "contrasts": [], "reasons": [],
             "budget": budget.as_dict() if budget else None, "status": None, "finality": {}, "looks": looks}
    sensitivity = sensitivity_table(failures, [(s, base) for s in mining],
                                    {c["strategy"]: c for c in v["contrasts"]}, comparison.delta, confidence)
    tables = {
        "runs": runs_df, "strategies": strategies, "endpoints": values, "contrasts": contrasts,
        "landscape": tab.landscape_table(measured.metrics), "test_time": tab.test_time_table(runs_df),
        "curves": curves, "convergence": plateau, "convergence_runs": plateau_runs,
        "compute_matched": lt.compute_matched_table(rung_vals, mining, base, primary, full, comparison.delta,
                                                    confidence, paper, trivial, unstable),
        "diagnostics": diagnostics, "cost": tab.cost_table(runs_df, base),
        "ablation": abl.ablation_table(runs_df, sweep_points, default_inner, baseline=base, primary=primary,
                                       confidence=1 - comparison.alpha, delta=comparison.delta),
        "ladder": lt.ladder_table(rung_vals, primary, paper, trivial, 1 - comparison.alpha),
        "ladder_contrasts": ladder_contrasts,
        "gap_stability": stability_table(list(arm_gates.values()), paper),
        "skill": skill, "instability": unstable, "failures": failures, "failure_sensitivity": sensitivity,
    }
    arms = arms or {s: (s, float(training.get("lr") or math.nan)) for s in present}
    stability_tables, stability = analyse_stability(curves, comparison.instability, arms, comparison.stability,
                                                    _stability_budget(budget, training, arms, comparison.stability))
    tables.update(stability_tables)
    flips = interp.inner_loop_flips(contrasts, skill, default_inner, comparison.alpha)
    uninformative = skill[skill["uninformative"]].drop_duplicates("endpoint")
    environment = runs_df.drop_duplicates(["strategy", "seed"])[["device", "torch"]].astype(str)
    disagree = [f"On the {r.variant}, {r.strategy} vs {r.versus} is {r.estimate:+.1%} ({r.outcome}), pointing "
                f"another way than the primary endpoint ({r.primary_estimate:+.1%}, {r.primary_outcome})"
                for r in sensitivity.itertuples() if not r.agrees]
    verdict = {**v, "paragraph": " ".join([v["sentence"], *flips]), "inner_loop_flips": flips,
               "primary": {"key": primary.key, "label": primary.label}, "delta": comparison.delta,
               "alpha": comparison.alpha, "convergence_rule": rule.describe(), "plateau_until": until,
               "instability_rule": comparison.instability.describe(), "trivial_mse": dict(trivial),
               "ladder": {"paper_samples": paper, **dict(ladder or {})},
               "gates": [g.as_dict() for g in arm_gates.values()],
               "extrapolations": [t for g in arm_gates.values() if (t := g.extrapolation_text(paper))],
               "failures": {"factor": comparison.failure_factor,
                            "arms": arm_failures(failures).to_dict("records"), "disagreements": disagree},
               "uninformative": [f"{r.label} (best skill {r.best_skill:.1%})" for r in uninformative.itertuples()],
               "interpretation": [line for line in [interp.residual_line(strategies, default_inner,
                                                                         training.get("rank")),
                                                    *interp.diagnostic_lines(diagnostics, mining)] if line],
               "stability": stability,
               "training": dict(training), "default_inner": default_inner, "roles": comparison.roles,
               "devices": sorted(set(environment["device"])), "torch": sorted(set(environment["torch"]))}
    return tables, verdict

