"""Rules ``aggregate``, ``plot_main``, ``plot_ablation`` and ``report_md``: one study's tables,
verdict, figures and report, from its runs' evaluation files (or from the cached tables)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from ..analysis import ladder_tables as lt
from ..analysis import tables as tab
from ..analysis.growth import Look, decide_look, describe_looks, read_look_dict, validation_rungs, write_look
from ..analysis.instability import describe_run
from ..analysis.study import Comparison, Measured, analyse
from ..report import document as rep
from .runtime import log, write_json


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


def _per_problem(runs: Sequence[Mapping[str, str]], endpoint: tab.Endpoint) -> pd.DataFrame:
    """The primary endpoint's per-problem MSEs of every run that has its per-problem file (``strategy``,
    ``seed``, ``problem``, ``mse``); a missing file is skipped with a warning."""
    frames, missing = [], []
    for paths in runs:
        path = paths.get("per_problem")
        if not path or not Path(path).exists():
            missing.append(f"{paths['strategy']}/seed{paths['seed']}")
            continue
        d = pd.read_csv(path)
        d = d[(d["set"] == endpoint.set) & (d["inner_steps"] == endpoint.inner_steps)]
        frames.append(d[["problem", "mse"]].assign(strategy=paths["strategy"], seed=int(paths["seed"])))
    if missing:
        log.warning("no per-problem errors (inference failures not counted): %s", ", ".join(missing))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["problem", "mse", "strategy",
                                                                                      "seed"])


def _trivial(reference_path: str) -> dict[str, Any]:
    with open(reference_path) as fh:
        return {k: v for k, v in json.load(fh)["trivial_mse"].items() if k in ("test_id", "test_ood")}


def look(*, rungs: Sequence[Mapping[str, Any]], reference_path: str, comparison: Mapping[str, Any], top: int,
         next_budget: int | None, margin: Mapping[str, Any], look_path: str) -> Look:
    """Rule ``look`` (``comparison.ladder.until_stable``): read the ladder's validation data up to
    ``top`` steps (``rungs`` as for :func:`aggregate`, ladder rungs up to ``top`` only; their curves,
    never their test-set metrics) and decide whether to add the rung of ``next_budget`` steps
    (:func:`diffusion_lib.analysis.growth.decide_look`); ``margin``: the branch point the next rung's
    trunk would reach and the longest trunk seen stable (``next_trunk``, ``seen_stable``)."""
    comp = Comparison.from_mapping(comparison)
    missing = [f"{r['strategy']}/seed{r['seed']}@{r['rung']}" for r in rungs if not Path(r["curve"]).exists()]
    if missing:
        raise FileNotFoundError(f"the look at {top:,} steps needs every rung up to it; missing: {missing}")
    unstable = lt.rung_instability(rungs, comp.instability)
    compared = {comp.baseline, comp.adversarial, comp.random}
    blown = unstable[(unstable["rung"] == top) & (unstable["kind"] == lt.LADDER) & unstable["strategy"].isin(compared)]
    result = decide_look(top, next_budget, validation_rungs(rungs, comp, _trivial(reference_path), top,
                                                            margin.get("trunk_until")),
                         [describe_run(r.strategy, r.seed, r._asdict(), top) for r in blown.itertuples()], margin)
    write_look(result, look_path)
    log.info("look %s", result.sentence())
    return result


def aggregate(*, runs: Sequence[Mapping[str, str]], expected: Sequence[tuple[str, int]], reference_path: str,
              tables: Mapping[str, str], verdict_path: str, comparison: Mapping[str, Any], default_inner: int,
              sweep_points: Mapping[str, Any], training: Mapping[str, Any], name: str,
              rungs: Sequence[Mapping[str, Any]] = (), ladder: Mapping[str, Any] | None = None,
              growth: Mapping[str, Any] | None = None, growth_path: str | None = None,
              arms: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a study's files, analyse them (:func:`diffusion_lib.analysis.study.analyse`) and write its
    tables and verdict.

    ``runs``: one mapping per evaluated run with its ``strategy`` name and ``seed`` in this study,
    its ``run`` directory name, and the paths of its ``metrics``, ``curve`` and ``per_problem``
    files. ``expected``: every (strategy, seed) of the study; those absent from ``runs`` are reported
    as missing. ``comparison``: the config's ``comparison`` block. ``rungs``: one mapping per rung
    model (``strategy``, ``seed``, ``run``, ``rung`` steps, ``kind`` ``ladder`` or
    ``compute_matched``, ``samples``, ``metrics``, ``curve``; see
    :mod:`diffusion_lib.analysis.ladder_tables`); rungs whose files are missing are skipped with a
    warning. ``ladder``: ``rungs`` (ladder budgets in steps, ascending, the last the full budget),
    ``decay_fraction``, ``batch_size``, ``paper_samples``, ``compute_matched`` ({strategy: steps}).
    ``growth`` (``comparison.ladder.until_stable``): ``first`` (train.steps), ``max_steps`` and the
    ``looks`` taken (:class:`~diffusion_lib.analysis.growth.Look` dicts); the CIs are adjusted for
    their number, and ``growth_path`` gets the summary. ``arms``: each strategy's (arm, learning
    rate), the stability tables' groups (:func:`diffusion_lib.plan.config.strategy_arms`).
    """
    metrics, curves = _load_runs(runs)
    found = {(m["strategy"], m["seed"]) for m in metrics}
    missing = [f"{s}/seed{k}" for s, k in expected if (s, k) not in found]
    if missing:
        log.warning("missing runs (excluded): %s", ", ".join(missing))
    if not metrics:
        raise ValueError("no evaluated runs to aggregate")
    comp = Comparison.from_mapping(comparison)
    primary = comp.primary(default_inner)
    rung_vals, unstable, missing_rungs = None, None, []
    if rungs:
        rung_vals, missing_rungs = lt.rung_values(rungs, tab.endpoint_family(primary, default_inner))
        unstable = lt.rung_instability(rungs, comp.instability)
    measured = Measured(metrics, curves, rung_vals, unstable, _per_problem(runs, primary), _trivial(reference_path))
    summary = _growth_summary(growth)
    out, v = analyse(measured, comp, default_inner=default_inner, training=training, ladder=ladder,
                     sweep_points=sweep_points, looks=max(1, summary["rungs_looked_at"]) if summary else 1, arms=arms)
    for key, df in out.items():
        Path(tables[key]).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(tables[key], index=False)
    write_json({**v, "name": name, "missing": missing, "missing_rungs": missing_rungs, "growth": summary,
                # the study's strategies in the config's order: tables, legends and colours follow it
                "strategies": list(dict.fromkeys(s for s, _ in expected))}, verdict_path)
    if growth_path:
        write_json(summary or {}, growth_path)
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
    from ..report.ladder import plot_ladder
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
    :mod:`diffusion_lib.report.ablation`)."""
    from ..report.ablation import plot_ablation

    t, v = _cached(tables, verdict_path)
    return plot_ablation(t["ablation"], t["runs"], v["roles"]["baseline"], parameter, v["default_inner"], figure,
                  _with_order(options, v),
                  delta=v.get("delta"))


def draw_stability(*, tables: Mapping[str, str], verdict_path: str, figure: str, options: Mapping[str, Any]) -> Any:
    """Draw the stability study's figure from cached tables (see :mod:`diffusion_lib.report.survival`)."""
    from ..report.survival import plot_stability

    t, v = _cached(tables, verdict_path)
    return plot_stability(t["stability_km"], t["stability_shares"], t["stability_runs"], v, figure,
                          _with_order(options, v))


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
