"""The budget-ladder figure (method §8.1): the primary relative change of each mining arm versus the
baseline against training samples (log x), with each rung's CI at its own level, the ±delta band and
the compute-matched rungs as distinct (open) markers. The y-axis is linear and sized by what the
verdict reads (the informative rungs' CIs and the band), so their CIs and the margin stay legible;
a point or CI end beyond it (an uninformative burn-in rung, a compute-matched rung far off) is drawn
as an arrow at the edge, labelled with its value. The x-axis fits the rungs; the paper's budget is
an annotation (or a dotted line when it lies inside). Uninformative rungs (a run of either arm below
5% skill) are drawn faded and labelled; a rung where a run is unstable has no estimate and is marked
by a cross at the top of the axes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analysis.statistics import level_text
from ..settings.budget import PAPER_SAMPLES, samples_text
from .style import apply_theme, nothing_to_plot, place_legend, save, strategy_styles, tag

DODGE = 1.04  # arms are spread by this factor along the log x axis so their error bars do not overlap


def _errorbars(ax: plt.Axes, d: pd.DataFrame, x: np.ndarray, limit: float, **style: Any) -> Any:
    """Error bars of ``d``'s estimates (%) at ``x``, clipped to ±``limit``: an estimate beyond it is an
    arrow at the edge labelled with its value, a CI end beyond it an arrow (the CI runs off the axis)."""
    y = 100 * d["estimate"].to_numpy(dtype=float)
    lo, hi = 100 * d["ci_low"].to_numpy(dtype=float), 100 * d["ci_high"].to_numpy(dtype=float)
    yc = np.where(np.abs(y) > limit, np.sign(y) * 0.93 * limit, y)  # an off-scale marker stays visible
    low = np.maximum(0.0, np.nan_to_num(yc - np.clip(lo, -limit, limit)))
    high = np.maximum(0.0, np.nan_to_num(np.clip(hi, -limit, limit) - yc))
    color = style.get("color")
    for xi, yi, li, hi_ in zip(x, y, lo, hi):
        for end in (li, hi_):
            if np.isfinite(end) and abs(end) > limit:
                ax.plot(xi, np.sign(end) * limit, "^" if end > 0 else "v", color=color, ms=8, alpha=style.get("alpha", 1))
        if np.isfinite(yi) and abs(yi) > limit:
            ax.annotate(f"{yi:+.0f}% (off scale)", (xi, np.sign(yi) * 0.93 * limit), textcoords="offset points",
                        xytext=(8, -3), va="center", fontsize=7, color=color)
    return ax.errorbar(x, yc, yerr=[low, high], capsize=4, **style)


def y_limit(d: pd.DataFrame, delta: float) -> float:
    """Half the y-range (%): the counted rungs' CIs and estimates with 15% room, at least 2.5 delta."""
    ends = 100 * np.abs(d[["ci_low", "ci_high", "estimate"]].to_numpy(dtype=float)) if len(d) else np.array([])
    ends = ends[np.isfinite(ends)]
    return float(max(250 * delta, 1.15 * ends.max() if len(ends) else 0.0))


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
    weak_all = (d["informative"] == False) if "informative" in d else pd.Series(False, index=d.index)  # noqa: E712
    blown_all = d["unstable"].fillna(False).astype(bool) if "unstable" in d else pd.Series(False, index=d.index)
    limit = y_limit(d[~weak_all & ~blown_all], delta)
    fig, ax = plt.subplots(figsize=(9.5, 4.8), layout="constrained")
    ax.axhspan(-100 * delta, 100 * delta, color="0.85", alpha=0.6, label=f"±{delta:.0%} (no meaningful difference)")
    ax.axhline(0, color="0.3", lw=1)
    for i, (strategy, g) in enumerate(d.groupby("strategy", sort=False)):
        g = g.sort_values("samples")
        shift = DODGE ** (i - (len(strategies) - 1) / 2)
        level = ", ".join(level_text(c) for c in dict.fromkeys(g["confidence"]))
        look = looks[strategy]
        weak = (g["informative"] == False).to_numpy() if "informative" in g else np.zeros(len(g), bool)  # noqa: E712
        blown = g["unstable"].fillna(False).astype(bool).to_numpy() if "unstable" in g else np.zeros(len(g), bool)
        x = g["samples"].to_numpy(dtype=float) * shift
        counted = ~weak & ~blown
        tag(_errorbars(ax, g[counted], x[counted], limit, color=look.color, marker=look.marker, ms=7, lw=1.8,
                       label=f"{strategy} vs {g['versus'].iloc[0]} ({level} CI)").lines, strategy)
        if weak.any():
            tag(_errorbars(ax, g[weak & ~blown], x[weak & ~blown], limit, color=look.color, marker=look.marker, ms=7,
                           ls="none", alpha=0.35, label=f"{strategy}: uninformative rung (burn-in; not counted)").lines,
                strategy)
        if blown.any():
            tag(ax.plot(x[blown], [0.97] * int(blown.sum()), ls="none", marker="X", ms=10, color=look.color,
                        transform=ax.get_xaxis_transform(), label=f"{strategy}: unstable rung (no estimate)"), strategy)
        m = matched[matched["strategy"] == strategy] if len(matched) else matched
        if len(m):
            faint = "informative" in m and not bool(m["informative"].fillna(False).astype(bool).all())
            tag(_errorbars(ax, m, m["samples"].to_numpy(dtype=float) * shift, limit, color=look.color, marker=look.marker,
                           ms=9, mfc="white", mew=2, ls="none", alpha=0.45 if faint else 1.0,
                           label=f"{strategy}, compute-matched rung ({level_text(m['confidence'].iloc[0])} CI"
                                 f"{'; uninformative' if faint else ''})").lines, strategy)
    xs = np.concatenate([d["samples"].to_numpy(dtype=float), matched.get("samples", pd.Series(dtype=float))
                         .to_numpy(dtype=float)])
    ax.set_xscale("log")
    ax.set_xlim(xs.min() / 1.5, xs.max() * 1.5)
    if paper <= xs.max() * 1.5:
        ax.axvline(paper, color="0.2", ls=":", lw=1.5)
        ax.annotate(f"paper: {samples_text(paper)} samples", (paper, 0.98), xycoords=("data", "axes fraction"),
                    ha="right", va="top", fontsize=8, rotation=90)
    else:
        ax.annotate(f"the paper's budget, {samples_text(paper)} samples, lies {paper / xs.max():,.0f}× beyond "
                    "the largest rung →", (0.99, 0.03), xycoords="axes fraction", ha="right", va="bottom", fontsize=8)
    ax.set_xlabel("training samples (steps × batch size, log scale)")
    ax.set_ylim(-limit, limit)
    ax.set_ylabel(f"change of {verdict.get('primary', {}).get('label', 'the primary endpoint')}\n"
                  "vs the baseline (%; < 0: better)")
    budget = (verdict.get("budget") or {}).get("short")
    ax.set_title(f"Verdict{' at ' + budget if budget else ''}: {verdict.get('outcome', '?')}", loc="left",
                 fontsize=11)
    place_legend(fig, [], ax.get_legend_handles_labels()[0])
    return save(fig, path, options)
