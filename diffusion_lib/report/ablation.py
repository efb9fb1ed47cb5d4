"""The ablation in the report (exploratory): its section of report.md and its figure.

The section: each swept strategy's overrides, the gap between bases at each swept value (method or
recipe?), every grid point's test MSE, and the figures.

The figure of one swept parameter, drawn from the cached ``ablation`` and ``runs`` tables. Panels:
test MSE at the default inference inner steps against the swept value, one per test set (each seed a
small point, the mean with its Student-t 95% CI as a marker with error bar), one colour per base
(the strategy colours of the other figures); then, where the table has gap rows for the parameter,
the relative change of the primary endpoint of each base versus the baseline at the same value with
its CI, 0 as a line and the ±delta band shaded (see :mod:`diffusion_lib.analysis.ablation`).

The x axis is categorical: the swept values in order (∞ last, labelled with its meaning, e.g.
``∞ (no clipping)``), so an infinite value has a place on it. Where the baseline is not swept on the
parameter, its mean and CI at the default configuration are a grey band on the MSE panels. A value
whose runs all diverged is marked ``×`` at the top of the MSE panels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analysis.ablation import ARM, GAP, ordered_values, override_text, points_from_table, value_key, value_label
from ..analysis.statistics import summarize
from ..analysis.tables import SET_LABELS
from .render import Block, levels, select
from .style import Look, apply_theme, nothing_to_plot, place_legend, plain_log_ticks, save, strategy_styles, tag


def _overrides(ablation: pd.DataFrame) -> list[str]:
    """``name: base, parameter = value, ...`` for each swept strategy in the table."""
    return [f"`{name}`: {override_text(name, point)}" for name, point in points_from_table(ablation).items()]


def _gap_table(gaps: pd.DataFrame) -> pd.DataFrame:
    return select(gaps, {"parameter": "parameter", "value_label": "value", "strategy": "strategy",
                         "versus": "versus", "estimate": ("MSE change", "pct"),
                         ("ci_low", "ci_high"): (f"{levels(gaps)} CI", "ci_pct"), "p": ("p", "p"),
                         "n_a": "seeds", "n_b": "seeds (versus)", "outcome": "outcome"})


def ablation_blocks(v: Mapping[str, Any], t: Mapping[str, pd.DataFrame], figures: Mapping[str, str]) -> list[Block]:
    """The ablation section, or nothing without an ablation table."""
    ablation = t.get("ablation", pd.DataFrame())
    if ablation.empty:
        return []
    kind = ablation["kind"] if "kind" in ablation else pd.Series(ARM, index=ablation.index)
    arms, gaps = ablation[kind == ARM], ablation[kind == GAP]
    doc: list[Block] = [("h", 2, "Ablations (exploratory)"),
                        ("p", "Swept strategies and what they set (the base strategy, then the grid values "
                              "over its configuration):"), ("ul", _overrides(ablation))]
    if len(gaps):
        doc.append(("p", f"Method or recipe? Relative change of the primary endpoint ({gaps['label'].iloc[0]}) of "
                         "each base's grid point versus the baseline's at the same value (for a mining parameter, "
                         "which the baseline does not use, versus the baseline itself); Welch with the delta method, "
                         "seeds as the unit, no multiplicity correction. If the gap moves with a training-recipe "
                         "value, the pilot's answer is about the recipe, not the method."))
        doc.append(("table", _gap_table(gaps)))
    doc.append(("p", f"Test MSE of every grid point at {v['default_inner']} inner steps (mean over seeds, 95% t CI)."))
    arms = arms.assign(others=[o if isinstance(o, str) else "" for o in arms["others"]])  # CSV reads "" as NaN
    doc.append(("table", select(arms, {"parameter": "parameter", "value_label": "value", "base": "base",
                                       "others": "others", "set": "set", "mse_mean": "MSE",
                                       ("mse_ci_low", "mse_ci_high"): "95% CI", "seeds": "seeds",
                                       "runs": "runs", "diverged": "diverged"})))
    doc += [("fig", k, f"Ablation of {k[len('ablation_'):]}") for k in figures if k.startswith("ablation_")]
    return doc


WIDTH = 0.5  # share of a category's width that the bases are spread over


def _offsets(bases: list[str]) -> dict[str, float]:
    """Each base's shift from its category's centre, so the bases' error bars do not overlap."""
    n = len(bases)
    return {b: (i - (n - 1) / 2) * WIDTH / max(n, 1) for i, b in enumerate(bases)}


def _errorbar(ax: plt.Axes, x: np.ndarray, y: np.ndarray, lo: np.ndarray, hi: np.ndarray, **style: Any) -> Any:
    """Markers at ``y`` with bars from ``lo`` to ``hi`` (none where the interval is undefined)."""
    low, high = np.nan_to_num(y - lo), np.nan_to_num(hi - y)
    return ax.errorbar(x, y, yerr=[np.maximum(low, 0), np.maximum(high, 0)], capsize=4, **style)


def _baseline_band(ax: plt.Axes, runs: pd.DataFrame, baseline: str, set_name: str, default_inner: int) -> None:
    """The baseline's mean (dashed) and 95% t CI (grey band) at its default configuration."""
    ok = runs[(runs["status"] == "completed") & (runs["inner_steps"] == default_inner)]
    base = ok[(ok["strategy"] == baseline) & (ok["set"] == set_name)]["mse"]
    if not len(base):
        return
    s = summarize(base.tolist())
    lo = s["ci_low"] if np.isfinite(s["ci_low"]) else s["mean"]
    hi = s["ci_high"] if np.isfinite(s["ci_high"]) else s["mean"]
    ax.axhspan(lo, hi, color="grey", alpha=0.2)
    ax.axhline(s["mean"], color="grey", ls="--", lw=1, label=f"{baseline}, default (mean, 95% CI)")


def _mse_panel(ax: plt.Axes, arms: pd.DataFrame, runs: pd.DataFrame, default_inner: int,
               position: Mapping[str, int], looks: Mapping[str, Look], offsets: Mapping[str, float],
               jitter: np.random.Generator) -> None:
    """One test set's arm rows: mean and CI per base and value, every seed as a point, × where all diverged."""
    ok = runs[(runs["status"] == "completed") & (runs["inner_steps"] == default_inner)]
    for base, g in arms.groupby("base", sort=False):
        x = np.array([position[value_key(v)] for v in g["value"]], dtype=float) + offsets[base]
        y = g["mse_mean"].to_numpy(dtype=float)
        look = looks[base]
        tag(_errorbar(ax, x, y, g["mse_ci_low"].to_numpy(dtype=float), g["mse_ci_high"].to_numpy(dtype=float),
                      color=look.color, marker=look.marker, ms=7, ls="-", lw=1.2, label=f"{base} (mean, 95% t CI)").lines,
            base)
        for r, xi in zip(g.itertuples(index=False), x):
            seeds = ok[(ok["strategy"] == r.strategy) & (ok["set"] == r.set)]["mse"]
            tag(ax.scatter(xi + jitter.uniform(-0.04, 0.04, len(seeds)), seeds, color=look.color, alpha=0.5, s=14,
                           marker=look.marker, linewidths=0), base)
            if r.seeds == 0 and r.runs > 0:  # at the top of the panel: x in data, y in axes coordinates
                ax.scatter([xi], [0.96], transform=ax.get_xaxis_transform(), marker="x", s=60, color=look.color,
                           label=f"{base}: every run diverged")


def _gap_panel(ax: plt.Axes, gaps: pd.DataFrame, baseline: str, position: Mapping[str, int],
               looks: Mapping[str, Look], offsets: Mapping[str, float], delta: float | None) -> None:
    """Each base's relative change versus the baseline at each value, with its CI and the ±delta band."""
    if delta is not None:
        ax.axhspan(-100 * delta, 100 * delta, color="0.85", alpha=0.6,
                   label=f"±{delta:.0%} (no meaningful difference)")
    ax.axhline(0, color="0.3", lw=1)
    for base, g in gaps.groupby("base", sort=False):
        x = np.array([position[value_key(v)] for v in g["value"]], dtype=float) + offsets[base]
        level = ", ".join(f"{c:.0%}" for c in dict.fromkeys(g["confidence"].dropna()))
        tag(_errorbar(ax, x, 100 * g["estimate"].to_numpy(dtype=float), 100 * g["ci_low"].to_numpy(dtype=float),
                      100 * g["ci_high"].to_numpy(dtype=float), color=looks[base].color, marker=looks[base].marker,
                      ms=7, ls="-", lw=1.2, label=f"{base} vs {baseline} ({level} CI)").lines, base)
    ax.set_ylabel("relative change versus the baseline\nat the same value (%), negative = better")
    ax.set_title(f"Gap: {gaps['label'].iloc[0]}", fontsize=11)


def plot_ablation(ablation: pd.DataFrame, runs: pd.DataFrame, baseline: str, parameter: str, default_inner: int,
                  path: str | Path, options: Mapping[str, Any] = {}, delta: float | None = None) -> plt.Figure | None:
    """Draw the ablation figure of ``parameter`` (see the module docstring) to ``path``; every
    panel's legend entries are gathered beside the panels."""
    apply_theme(options)
    table = ablation[ablation["parameter"] == parameter] if "parameter" in ablation else ablation
    arms = table[table["kind"] == ARM].dropna(subset=["set"]) if "kind" in table else table
    if nothing_to_plot(arms, ["value", "set"], path, options, f"Ablation of {parameter}"):
        return None
    gaps = table[(table["kind"] == GAP) & table["estimate"].notna()] if "kind" in table else table.iloc[:0]
    values = ordered_values(arms["value"])
    position = {value_key(v): i for i, v in enumerate(values)}
    bases = list(dict.fromkeys(arms["base"]))
    looks = strategy_styles(options, [*runs.get("strategy", []), *bases])
    offsets = _offsets(bases)
    sets = [s for s in SET_LABELS if s in set(arms["set"])] + sorted(set(arms["set"]) - set(SET_LABELS))
    panels = len(sets) + (1 if len(gaps) else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.6), squeeze=False, layout="constrained")
    jitter = np.random.default_rng(0)
    for ax, set_name in zip(axes[0], sets):
        if baseline not in bases:
            _baseline_band(ax, runs, baseline, set_name, default_inner)
        _mse_panel(ax, arms[arms["set"] == set_name], runs, default_inner, position, looks, offsets, jitter)
        ax.set_yscale("log")
        plain_log_ticks(ax)
        ax.set_ylabel(f"test MSE, {default_inner} inner steps (log scale)")
        ax.set_title(SET_LABELS.get(set_name, set_name), fontsize=11)
    if len(gaps):
        _gap_panel(axes[0][-1], gaps, baseline, position, looks, offsets, delta)
    for ax in axes[0]:
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels([value_label(parameter, v) for v in values])
        ax.set_xlim(-0.6, len(values) - 0.4)
        ax.set_xlabel(parameter)
    legend: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    place_legend(fig, [], list(legend.values()))
    fig.suptitle(f"Ablation of {parameter} (exploratory)", fontsize=12)
    return save(fig, path, options)
