"""The budget-ladder figure (SPEC §8.1): the primary relative change of each mining arm versus the
baseline against training samples (log x), with each rung's CI at its own level, the ±delta band,
the paper's budget as a vertical line and the compute-matched rungs as distinct (open) markers.
Uninformative rungs (a run of either arm below 5% skill: burn-in) are drawn faded and labelled; a
rung where a run is unstable has no estimate and is marked by a cross at the top of the axes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..settings.budget import PAPER_SAMPLES, samples_text
from .style import apply_theme, nothing_to_plot, place_legend, save, strategy_styles, tag

DODGE = 1.04  # arms are spread by this factor along the log x axis so their error bars do not overlap


def _errorbars(ax: plt.Axes, d: pd.DataFrame, x: np.ndarray, **style: Any) -> Any:
    y = 100 * d["estimate"].to_numpy(dtype=float)
    low = np.nan_to_num(y - 100 * d["ci_low"].to_numpy(dtype=float))
    high = np.nan_to_num(100 * d["ci_high"].to_numpy(dtype=float) - y)
    return ax.errorbar(x, y, yerr=[low, high], capsize=4, **style)


def plot_ladder(ladder_contrasts: pd.DataFrame, compute_matched: pd.DataFrame, verdict: Mapping[str, Any],
                path: str | Path, options: Mapping[str, Any] = {}) -> plt.Figure | None:
    """Primary relative change versus training samples: one line per mining arm over the ladder's
    rungs (filled markers, the arm's own marker), its compute-matched rung as the same marker open
    (see the module docstring); the legend beside the axes."""
    apply_theme(options)
    d = ladder_contrasts
    if len(d) and "endpoint_role" in d:
        d = d[(d["endpoint_role"] == "primary") & (d["role"] == "verdict")]
    if nothing_to_plot(d, ["estimate", "samples"], path, options, "Budget ladder"):
        return None
    matched = compute_matched if len(compute_matched) and "estimate" in compute_matched else pd.DataFrame()
    strategies = list(dict.fromkeys([*d["strategy"], *matched.get("strategy", [])]))
    looks = strategy_styles(options, strategies)
    delta = float(verdict.get("delta", 0.05))
    paper = float(verdict.get("ladder", {}).get("paper_samples", PAPER_SAMPLES))
    fig, ax = plt.subplots(figsize=(9.5, 4.8), layout="constrained")
    ax.axhspan(-100 * delta, 100 * delta, color="0.85", alpha=0.6, label=f"±{delta:.0%} (no meaningful difference)")
    ax.axhline(0, color="0.3", lw=1)
    for i, (strategy, g) in enumerate(d.groupby("strategy", sort=False)):
        g = g.sort_values("samples")
        shift = DODGE ** (i - (len(strategies) - 1) / 2)
        level = ", ".join(f"{c:.1%}" for c in dict.fromkeys(g["confidence"]))
        look = looks[strategy]
        weak = (g["informative"] == False).to_numpy() if "informative" in g else np.zeros(len(g), bool)  # noqa: E712
        blown = g["unstable"].fillna(False).astype(bool).to_numpy() if "unstable" in g else np.zeros(len(g), bool)
        x = g["samples"].to_numpy(dtype=float) * shift
        counted = ~weak & ~blown
        tag(_errorbars(ax, g[counted], x[counted], color=look.color, marker=look.marker, ms=7, lw=1.8,
                       label=f"{strategy} vs {g['versus'].iloc[0]} ({level} CI)").lines, strategy)
        if weak.any():
            tag(_errorbars(ax, g[weak & ~blown], x[weak & ~blown], color=look.color, marker=look.marker, ms=7,
                           ls="none", alpha=0.35, label=f"{strategy}: uninformative rung (burn-in; not counted)").lines,
                strategy)
        if blown.any():
            tag(ax.plot(x[blown], [0.97] * int(blown.sum()), ls="none", marker="X", ms=10, color=look.color,
                        transform=ax.get_xaxis_transform(), label=f"{strategy}: unstable rung (no estimate)"), strategy)
        m = matched[matched["strategy"] == strategy] if len(matched) else matched
        if len(m):
            tag(_errorbars(ax, m, m["samples"].to_numpy(dtype=float) * shift, color=look.color, marker=look.marker,
                           ms=9, mfc="white", mew=2, ls="none",
                           label=f"{strategy}, compute-matched rung ({m['confidence'].iloc[0]:.1%} CI)").lines, strategy)
    ax.axvline(paper, color="0.2", ls=":", lw=1.5)
    ax.annotate(f"paper: {samples_text(paper)} samples", (paper, 0.98), xycoords=("data", "axes fraction"),
                ha="right", va="top", fontsize=8, rotation=90)
    xs = np.concatenate([d["samples"].to_numpy(dtype=float), [paper]])
    ax.set_xscale("log")
    ax.set_xlim(xs.min() / 2, xs.max() * 2)
    ax.set_xlabel("training samples (steps × batch size, log scale)")
    # symmetric log: a gap of hundreds of percent at a small rung and the ±delta band both stay readable
    ax.set_yscale("symlog", linthresh=200 * delta, linscale=1.5)  # linear within ±2 delta
    ax.set_ylabel(f"change of {verdict.get('primary', {}).get('label', 'the primary endpoint')}\n"
                  "vs the baseline (%, symlog; < 0: better)")
    budget = (verdict.get("budget") or {}).get("short")
    ax.set_title(f"Verdict{' at ' + budget if budget else ''}: {verdict.get('outcome', '?')}", loc="left",
                 fontsize=11)
    place_legend(fig, [], ax.get_legend_handles_labels()[0])
    return save(fig, path, options)
