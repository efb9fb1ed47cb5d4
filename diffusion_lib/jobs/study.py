"""Rules ``aggregate``, ``plot_main``, ``plot_ablation`` and ``report_md``: one study's tables,
verdict, figures and report, from its runs' evaluation files (or from the cached tables)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from ..analysis import ablation as abl
from ..analysis import interpretation as interp
from ..analysis import ladder_tables as lt
from ..report import document as rep
from ..analysis import tables as tab
from ..settings.budget import PAPER_SAMPLES
from ..analysis.convergence import ConvergenceRule, gap_trend, plateau_window_end, run_gate, strategy_gate
from ..analysis.instability import InstabilityRule, describe_run, mark_unstable
from .runtime import log, write_json
from ..analysis.growth import Look, decide_look, describe_looks, read_look_dict, write_look
from ..analysis.stability import stability_table
from ..analysis.verdict import Arm, decide
from ..settings.budget import budget_of
from ..analysis.ladder_tables import ladder_gate

TABLES = ("runs", "strategies", "endpoints", "contrasts", "landscape", "test_time", "curves", "convergence",
          "convergence_runs", "compute_matched", "diagnostics", "cost", "ablation", "ladder", "ladder_contrasts",
          "gap_stability", "skill", "instability")


def _load_runs(runs: Sequence[Mapping[str, str]]) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Each run's metrics (labelled with this study's strategy and seed) and the learning curves."""
    metrics, curves = [], []
    for paths in runs:
        m, curve = tab.load_run(paths["metrics"], paths["curve"])
        # a run is shared by every study that trains it: this study's names label it
        m = {**m, "strategy": paths["strategy"], "seed": int(paths["seed"]), "run": paths.get("run", m.get("run"))}
        metrics.append(m)
        cost = "train_cpu_seconds" if str(m.get("device", "cpu")).startswith("cpu") else "train_seconds"
        curves.append(curve.assign(strategy=m["strategy"], seed=m["seed"], mode=m["mode"],
                                   compute_seconds=curve.get(cost, math.nan)))
    return metrics, pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()


def _verdict_roles(roles: Mapping[str, str], present: Sequence[str]) -> list[str]:
    """The mining arms of the verdict that have runs, adversarial first."""
    return [roles[r] for r in ("adversarial", "random") if roles.get(r) in present]


def look(*, rungs: Sequence[Mapping[str, Any]], reference_path: str, roles: Mapping[str, str], default_inner: int,
         primary: Mapping[str, Any], delta: float, alpha: float, instability: Mapping[str, Any] | None,
         top: int, next_budget: int | None, paper_samples: float, look_path: str) -> Look:
    """Rule ``look`` (``comparison.ladder.until_stable``): read the ladder up to ``top`` steps and decide
    whether to add the rung of ``next_budget`` steps (:func:`diffusion_lib.analysis.growth.decide_look`);
    ``rungs`` as for :func:`aggregate`, ladder rungs up to ``top`` only."""
    with open(reference_path) as fh:
        trivial = {k: v for k, v in json.load(fh)["trivial_mse"].items() if k in ("test_id", "test_ood")}
    primary_ep = tab.Endpoint(primary["set"], default_inner if primary["inner_steps"] is None else primary["inner_steps"])
    rung_vals, missing = lt.rung_values(rungs, tab.endpoint_family(primary_ep, default_inner))
    if missing:
        raise FileNotFoundError(f"the look at {top:,} steps needs every rung up to it; missing: {missing}")
    unstable = lt.rung_instability(rungs, InstabilityRule.from_mapping(instability))
    base, present = roles["baseline"], list(dict.fromkeys(rung_vals["strategy"]))
    mining_roles = _verdict_roles(roles, present) if base in present else []
    confidence = 1 - alpha / max(len(mining_roles), 1)
    _, stabilities = ladder_gate(rung_vals, unstable, [(s, base, "verdict") for s in mining_roles], primary_ep,
                                  delta, alpha, confidence, paper_samples, trivial)
    compared = {base, *mining_roles}
    blown = unstable[(unstable["rung"] == top) & (unstable["kind"] == lt.LADDER) & unstable["strategy"].isin(compared)]
    result = decide_look(top, next_budget, stabilities,
                         [describe_run(r.strategy, r.seed, r._asdict(), top) for r in blown.itertuples()])
    write_look(result, look_path)
    log.info("look %s", result.sentence())
    return result


def aggregate(*, runs: Sequence[Mapping[str, str]], expected: Sequence[tuple[str, int]], reference_path: str,
              tables: Mapping[str, str], verdict_path: str, roles: Mapping[str, str], default_inner: int,
              primary: Mapping[str, Any], delta: float, alpha: float, convergence: Mapping[str, Any],
              sweep_points: Mapping[str, Any], training: Mapping[str, Any], name: str,
              rungs: Sequence[Mapping[str, Any]] = (), ladder: Mapping[str, Any] | None = None,
              instability: Mapping[str, Any] | None = None, growth: Mapping[str, Any] | None = None,
              growth_path: str | None = None) -> dict[str, Any]:
    """Combine per-run files into the study's tables and verdict.

    ``runs``: one mapping per evaluated run with its ``strategy`` name and ``seed`` in this study,
    its ``run`` directory name, and the paths of its ``metrics`` and ``curve`` files. ``expected``:
    every (strategy, seed) of the study; those absent from ``runs`` are reported as missing.
    ``rungs``: one mapping per rung model (``strategy``, ``seed``, ``run``, ``rung`` steps, ``kind``
    ``ladder`` or ``compute_matched``, ``samples``, ``metrics``, ``curve``; see
    :mod:`diffusion_lib.analysis.ladder_tables`); rungs whose files are missing are skipped with a warning.
    ``ladder``: ``rungs`` (ladder budgets in steps, ascending, the last the full budget),
    ``decay_fraction``, ``batch_size``, ``paper_samples``, ``compute_matched`` ({strategy: steps}).
    Without rungs the full budget is the only rung, and the gap's stability cannot be assessed.
    ``instability``: the config's ``comparison.instability`` (:class:`~diffusion_lib.analysis.instability.InstabilityRule`).
    The plateau check reads the constant-lr trunk only (:func:`convergence.plateau_window_end`).
    ``growth`` (``comparison.ladder.until_stable``): ``first`` (train.steps), ``max_steps`` and the
    ``looks`` taken (:class:`~diffusion_lib.analysis.growth.Look` dicts); the report says how many and why the
    ladder stopped, and ``growth_path`` gets the summary.
    """
    metrics, curves_df = _load_runs(runs)
    found = {(m["strategy"], m["seed"]) for m in metrics}
    missing = [f"{s}/seed{k}" for s, k in expected if (s, k) not in found]
    if missing:
        log.warning("missing runs (excluded): %s", ", ".join(missing))
    if not metrics:
        raise ValueError("no evaluated runs to aggregate")
    with open(reference_path) as fh:
        trivial = {k: v for k, v in json.load(fh)["trivial_mse"].items() if k in ("test_id", "test_ood")}
    rule = ConvergenceRule.from_mapping(convergence)
    blowup = InstabilityRule.from_mapping(instability)
    primary_ep = tab.Endpoint(primary["set"], default_inner if primary["inner_steps"] is None else primary["inner_steps"])
    family = tab.endpoint_family(primary_ep, default_inner)
    budget = budget_of(ladder, training)
    paper = budget.paper_samples if budget else PAPER_SAMPLES
    runs_df = tab.runs_table(metrics, sweep_points)
    values = tab.endpoint_values(runs_df, family)
    base = roles["baseline"]
    present = list(dict.fromkeys(runs_df["strategy"]))
    mining_roles = _verdict_roles(roles, present)
    primary_confidence = 1 - alpha / max(len(mining_roles), 1)
    verdict_pairs = [(s, base, "verdict") for s in mining_roles]
    pairs = verdict_pairs + [(s, base, "exploratory") for s in present if s != base and s not in mining_roles]
    if len(mining_roles) == 2:
        pairs.append((roles["adversarial"], roles["random"], "exploratory"))
    until = plateau_window_end(str((training.get("lr_schedule") or {}).get("kind")),
                               budget.steps if budget else 0, float((ladder or {}).get("decay_fraction") or 0.0))
    gates = strategy_gate(curves_df, rule, until)
    run_gates = run_gate(curves_df, rule, until)

    if rungs:
        rung_vals, missing_rungs = lt.rung_values(rungs, family)
    else:  # the full budget as the only rung
        rung_vals, missing_rungs = values.assign(rung=budget.steps if budget else 0, kind=lt.LADDER,
                                                 samples=budget.samples if budget else 0), []
    full_rung = budget.steps if budget else int(rung_vals["rung"].max())
    unstable = lt.rung_instability(rungs, blowup) if rungs else blowup.runs(curves_df).assign(
        rung=full_rung, kind=lt.LADDER)
    contrasts = mark_unstable(tab.contrasts_table(values, pairs, primary_ep, delta, alpha, primary_confidence),
                              unstable, rung=full_rung)
    contrasts["p_holm_family"] = interp.family_holm(contrasts)
    ladder_contrasts, stabilities = ladder_gate(rung_vals, unstable, verdict_pairs, primary_ep, delta, alpha,
                                                 primary_confidence, paper, trivial)
    skill = interp.skill_table(values, trivial)
    strategies = tab.strategies_table(runs_df, trivial)
    diagnostics = tab.diagnostics_table(curves_df, runs_df, default_inner)
    out = {
        "runs": runs_df,
        "strategies": strategies,
        "endpoints": values,
        "contrasts": contrasts,
        "landscape": tab.landscape_table(metrics),
        "test_time": tab.test_time_table(runs_df),
        "curves": curves_df,
        "convergence": gates,
        "convergence_runs": run_gates,
        "compute_matched": lt.compute_matched_table(rung_vals, mining_roles, base, primary_ep, full_rung, delta,
                                                    primary_confidence, paper, trivial, unstable),
        "diagnostics": diagnostics,
        "cost": tab.cost_table(runs_df, base),
        "ablation": abl.ablation_table(runs_df, sweep_points, default_inner, baseline=base, primary=primary_ep,
                                       confidence=1 - alpha, delta=delta),
        "ladder": lt.ladder_table(rung_vals, primary_ep, paper, trivial, 1 - alpha),
        "ladder_contrasts": ladder_contrasts,
        "gap_stability": stability_table(list(stabilities.values()), paper),
        "skill": skill,
        "instability": unstable,
    }
    for key, df in out.items():
        Path(tables[key]).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(tables[key], index=False)

    def arm(strategy: str) -> Arm:
        per_seed = runs_df[runs_df["strategy"] == strategy].drop_duplicates("seed")
        sel = values[(values["strategy"] == strategy) & (values["endpoint"] == primary_ep.key)]
        gate = gates[gates["strategy"] == strategy]
        blown = unstable[(unstable["strategy"] == strategy) & (unstable["rung"] == full_rung)
                         & (unstable["kind"] == lt.LADDER)]
        return Arm(strategy, str(per_seed["mode"].iloc[0]), sel["value"].tolist(), len(per_seed),
                   int((per_seed["status"] == "diverged").sum()),
                   gate.iloc[0].to_dict() if len(gate) else {"converged": None, "evals_seen": 0},
                   gap_trend(curves_df, strategy, base, rule, until) if strategy != base else {},
                   [describe_run(strategy, r.seed, r._asdict(), full_rung) for r in blown.itertuples()])

    if base in present:
        v = decide(arm(base), [arm(s) for s in mining_roles], primary_ep.label, delta, alpha, budget=budget,
                   stability=stabilities).as_dict()
    else:
        v = {"outcome": "inconclusive", "sentence": f"Inconclusive: the baseline strategy {base!r} has no runs.",
             "scenario": None, "strategy": None, "confidence": primary_confidence, "contrasts": [],
             "reasons": [], "budget": budget.as_dict() if budget else None}
    flips = interp.inner_loop_flips(contrasts, skill, default_inner, alpha)
    environment = runs_df.drop_duplicates(["strategy", "seed"])[["device", "torch"]].astype(str)
    uninformative = skill[skill["uninformative"]].drop_duplicates("endpoint")
    write_json({**v, "paragraph": " ".join([v["sentence"], *flips]), "inner_loop_flips": flips,
                "primary": {"key": primary_ep.key, "label": primary_ep.label}, "delta": delta, "alpha": alpha,
                "convergence_rule": rule.describe(), "plateau_until": until, "instability_rule": blowup.describe(),
                "missing": missing, "missing_rungs": missing_rungs, "growth": _growth_summary(growth),
                "trivial_mse": trivial, "ladder": {"paper_samples": paper, **dict(ladder or {})},
                "stability": [s.as_dict() for s in stabilities.values()],
                "extrapolations": [t for s in stabilities.values() if (t := s.extrapolation_text(paper))],
                "uninformative": [f"{r.label} (best skill {r.best_skill:.1%})" for r in uninformative.itertuples()],
                "interpretation": [line for line in [interp.residual_line(strategies, default_inner,
                                                                          training.get("rank")),
                                                     *interp.diagnostic_lines(diagnostics, mining_roles)] if line],
                "training": dict(training), "name": name, "default_inner": default_inner, "roles": dict(roles),
                # the study's strategies in the config's order: tables, legends and colours follow it
                "strategies": list(dict.fromkeys(s for s, _ in expected)),
                "devices": sorted(set(environment["device"])), "torch": sorted(set(environment["torch"]))},
               verdict_path)
    if growth_path:
        write_json(_growth_summary(growth) or {}, growth_path)
    log.info("verdict: %s", v["sentence"])
    return v


def _growth_summary(growth: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What ``until_stable`` did, for the verdict file and the report (None when it is off)."""
    if not growth:
        return None
    looks = [read_look_dict(d) for d in growth.get("looks", [])]
    return {**dict(growth), "text": describe_looks(looks, int(growth["first"]), int(growth["max_steps"])),
            "rungs_looked_at": len(looks)}


def _cached(tables: Mapping[str, str], verdict_path: str) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The aggregate rule's cached tables (an empty CSV gives an empty frame) and its verdict."""
    frames = {}
    for key, path in tables.items():
        try:
            frames[key] = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            frames[key] = pd.DataFrame()
    with open(verdict_path) as fh:
        return frames, json.load(fh)


def _with_order(options: Mapping[str, Any], v: Mapping[str, Any]) -> dict[str, Any]:
    """The report options with the study's strategy order (one colour and marker per strategy)."""
    return {**options, "strategies": v.get("strategies") or list(v.get("training", {}).get("seeds", {}))}


def draw_figures(*, tables: Mapping[str, str], verdict_path: str, figures: Mapping[str, str],
                 options: Mapping[str, Any], latex: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Draw the main figures from cached tables (see :mod:`diffusion_lib.report.figures`; each PNG in
    ``figures`` and its other ``options["format"]`` files) and write the paper tables in ``latex``
    (key of :data:`diffusion_lib.report.latex.PAPER_TABLES` → file). Returns each figure (closed; None
    where there was nothing to plot), for inspection."""
    from ..report import figures as fig
    from ..report.ladder_figure import plot_ladder
    from ..report.latex import write_paper_tables

    t, v = _cached(tables, verdict_path)
    options = _with_order(options, v)
    drawn = {"forest": fig.plot_forest(t["contrasts"], v, figures["forest"], options),
             "ladder": plot_ladder(t["ladder_contrasts"], t["compute_matched"], v, figures["ladder"], options),
             "mse": fig.plot_mse(t["runs"], v["trivial_mse"], v["default_inner"], figures["mse"], options),
             "curves": fig.plot_learning_curves(t["curves"], v["trivial_mse"], figures["curves"], options),
             "compute": fig.plot_compute_curves(t["curves"], figures["compute"], options),
             "diagnostics": fig.plot_diagnostics(t["curves"], figures["diagnostics"], options),
             "landscape": fig.plot_landscape(t["landscape"], figures["landscape"], options),
             "test_time": fig.plot_test_time(t["runs"], figures["test_time"], options)}
    if latex:
        write_paper_tables(t, v, latex)
    return drawn


def draw_ablation(*, tables: Mapping[str, str], verdict_path: str, parameter: str, figure: str,
                  options: Mapping[str, Any]) -> Any:
    """Draw the ablation figure of one swept parameter from cached tables (see
    :mod:`diffusion_lib.report.ablation_figure`)."""
    from ..report.ablation_figure import plot_ablation

    t, v = _cached(tables, verdict_path)
    return plot_ablation(t["ablation"], t["runs"], v["roles"]["baseline"], parameter, v["default_inner"], figure,
                  _with_order(options, v),
                  delta=v.get("delta"))


def write_report(*, tables: Mapping[str, str], verdict_path: str, figures: Mapping[str, str], report_path: str,
                 html_path: str | None = None) -> None:
    """Write ``report.md`` (figure links relative to its folder) and, if asked, the self-contained
    ``report.html`` page (figures embedded) that the Snakemake HTML report shows."""
    t, v = _cached(tables, verdict_path)
    doc = rep.build_report(v, t, figures)
    here = Path(report_path).parent.resolve()
    Path(report_path).write_text(rep.to_markdown(doc, lambda p: os.path.relpath(Path(p).resolve(), here), figures))
    if html_path:
        Path(html_path).write_text(rep.to_html(doc, figures))
