"""Rules ``aggregate``, ``plot_main``, ``plot_ablation`` and ``report_md``: one study's tables,
verdict, figures and report, from its runs' evaluation files (or from the cached tables)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .. import report as rep
from .. import tables as tab
from ..convergence import ConvergenceRule, gap_trend, run_gate, strategy_gate
from ..runtime import log, write_json
from ..verdict import Arm, decide

TABLES = ("runs", "strategies", "endpoints", "contrasts", "landscape", "test_time", "curves", "convergence",
          "convergence_runs", "compute_matched", "diagnostics", "cost", "ablation")


def aggregate(*, runs: Sequence[Mapping[str, str]], expected: Sequence[tuple[str, int]], reference_path: str,
              tables: Mapping[str, str], verdict_path: str, roles: Mapping[str, str], default_inner: int,
              primary: Mapping[str, Any], delta: float, alpha: float, convergence: Mapping[str, Any],
              sweep_points: Mapping[str, Any], training: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Combine per-run files into the study's tables and verdict.

    ``runs``: one mapping per evaluated run with its ``strategy`` name and ``seed`` in this study,
    its ``run`` directory name, and the paths of its ``metrics`` and ``curve`` files. ``expected``:
    every (strategy, seed) of the study; those absent from ``runs`` are reported as missing.
    """
    metrics, curves = [], []
    for paths in runs:
        m, curve = tab.load_run(paths["metrics"], paths["curve"])
        # a run is shared by every study that trains it: this study's names label it
        m = {**m, "strategy": paths["strategy"], "seed": int(paths["seed"]), "run": paths.get("run", m.get("run"))}
        metrics.append(m)
        cost = "train_cpu_seconds" if str(m.get("device", "cpu")).startswith("cpu") else "train_seconds"
        curves.append(curve.assign(strategy=m["strategy"], seed=m["seed"], mode=m["mode"],
                                   compute_seconds=curve.get(cost, math.nan)))
    found = {(m["strategy"], m["seed"]) for m in metrics}
    missing = [f"{s}/seed{k}" for s, k in expected if (s, k) not in found]
    if missing:
        log.warning("missing runs (excluded): %s", ", ".join(missing))
    if not metrics:
        raise ValueError("no evaluated runs to aggregate")
    with open(reference_path) as fh:
        trivial = {k: v for k, v in json.load(fh)["trivial_mse"].items() if k in ("test_id", "test_ood")}
    rule = ConvergenceRule.from_mapping(convergence)
    primary_ep = tab.Endpoint(primary["set"], default_inner if primary["inner_steps"] is None else primary["inner_steps"])
    runs_df = tab.runs_table(metrics, sweep_points)
    curves_df = pd.concat(curves, ignore_index=True)
    values = tab.endpoint_values(runs_df, tab.endpoint_family(primary_ep, default_inner))
    base = roles["baseline"]
    present = list(dict.fromkeys(runs_df["strategy"]))
    mining_roles = [roles[r] for r in ("adversarial", "random") if roles.get(r) in present]
    primary_confidence = 1 - alpha / max(len(mining_roles), 1)
    pairs = [(s, base, "verdict") for s in mining_roles]
    pairs += [(s, base, "exploratory") for s in present if s != base and s not in mining_roles]
    if len(mining_roles) == 2:
        pairs.append((roles["adversarial"], roles["random"], "exploratory"))
    contrasts = tab.contrasts_table(values, pairs, primary_ep, delta, alpha, primary_confidence)
    gates = strategy_gate(curves_df, rule)
    matched = [tab.compute_matched_table(curves_df, base, measure) for measure in ("train_flops", "compute_seconds")]
    out = {
        "runs": runs_df,
        "strategies": tab.strategies_table(runs_df, trivial),
        "endpoints": values,
        "contrasts": contrasts,
        "landscape": tab.landscape_table(metrics),
        "test_time": tab.test_time_table(runs_df),
        "curves": curves_df,
        "convergence": gates,
        "convergence_runs": run_gate(curves_df, rule),
        "compute_matched": pd.concat([m for m in matched if not m.empty] or [pd.DataFrame()], ignore_index=True),
        "diagnostics": tab.diagnostics_table(curves_df, runs_df, default_inner),
        "cost": tab.cost_table(runs_df, base),
        "ablation": tab.ablation_table(runs_df, sweep_points, default_inner),
    }
    for key, df in out.items():
        Path(tables[key]).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(tables[key], index=False)

    def arm(strategy: str) -> Arm:
        per_seed = runs_df[runs_df["strategy"] == strategy].drop_duplicates("seed")
        sel = values[(values["strategy"] == strategy) & (values["endpoint"] == primary_ep.key)]
        gate = gates[gates["strategy"] == strategy]
        return Arm(strategy, str(per_seed["mode"].iloc[0]), sel["value"].tolist(), len(per_seed),
                   int((per_seed["status"] == "diverged").sum()),
                   gate.iloc[0].to_dict() if len(gate) else {"converged": None, "evals_seen": 0},
                   gap_trend(curves_df, strategy, base, rule) if strategy != base else {})

    if base in present:
        v = decide(arm(base), [arm(s) for s in mining_roles], primary_ep.label, delta, alpha).as_dict()
    else:
        v = {"outcome": "inconclusive", "sentence": f"Inconclusive: the baseline strategy {base!r} has no runs.",
             "scenario": None, "strategy": None, "confidence": primary_confidence, "contrasts": [],
             "reasons": []}
    environment = runs_df.drop_duplicates(["strategy", "seed"])[["device", "torch"]].astype(str)
    write_json({**v, "primary": {"key": primary_ep.key, "label": primary_ep.label}, "delta": delta, "alpha": alpha,
                 "convergence_rule": rule.describe(), "missing": missing, "trivial_mse": trivial,
                 "inner_loop_flips": tab.inner_loop_flips(contrasts[contrasts["role"] == "verdict"], default_inner,
                                                          alpha),
                 "training": dict(training), "name": name, "default_inner": default_inner, "roles": dict(roles),
                 "devices": sorted(set(environment["device"])), "torch": sorted(set(environment["torch"]))},
                verdict_path)
    log.info("verdict: %s", v["sentence"])
    return v


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


def draw_figures(*, tables: Mapping[str, str], verdict_path: str, figures: Mapping[str, str],
                 options: Mapping[str, Any]) -> None:
    """Draw the main figures from cached tables (see :mod:`diffusion_lib.figures`)."""
    from .. import figures as fig

    t, v = _cached(tables, verdict_path)
    fig.plot_forest(t["contrasts"], v, figures["forest"], options)
    fig.plot_mse(t["runs"], v["trivial_mse"], v["default_inner"], figures["mse"], options)
    fig.plot_learning_curves(t["curves"], v["trivial_mse"], figures["curves"], options)
    fig.plot_compute_curves(t["curves"], figures["compute"], options)
    fig.plot_diagnostics(t["curves"], figures["diagnostics"], options)
    fig.plot_landscape(t["landscape"], figures["landscape"], options)
    fig.plot_test_time(t["runs"], figures["test_time"], options)


def draw_ablation(*, tables: Mapping[str, str], verdict_path: str, parameter: str, figure: str,
                  options: Mapping[str, Any]) -> None:
    """Draw the ablation figure of one swept parameter from cached tables."""
    from .. import figures as fig

    t, v = _cached(tables, verdict_path)
    fig.plot_ablation(t["ablation"], t["runs"], v["roles"]["baseline"], parameter, v["default_inner"], figure, options)


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
