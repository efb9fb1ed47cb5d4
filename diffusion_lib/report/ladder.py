"""The budget ladder in the report (method §8.1): its blocks of report.md and its figure.

The blocks: the arms and contrasts at every rung, the gap's trend per doubling and whether the answer
is final (the gate), the compute-matched view, and every endpoint's skill.

The figure: the primary relative change of each mining arm versus the baseline against training
samples (log x), with each rung's CI at its own level, the ±delta band and the compute-matched rungs
as distinct (open) markers. The y-axis is linear and sized by what the verdict reads (the
informative rungs' CIs and the band), so their CIs and the margin stay legible; a point or CI end
beyond it (an uninformative burn-in rung, a compute-matched rung far off) is drawn as an arrow at the
edge, labelled with its value. The x-axis fits the rungs; the paper's budget is an annotation (or a
dotted line when it lies inside). Uninformative rungs (a run of either arm below 5% skill) are drawn
faded and labelled; a rung where a run is unstable has no estimate and is marked by a cross at the
top of the axes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analysis.statistics import level_text
from ..settings.budget import PAPER_SAMPLES, samples_text, share_text
from .render import Block, cell, levels, select
from .style import apply_theme, nothing_to_plot, place_legend, save, strategy_styles, tag


def plateau_scope(v: Mapping[str, Any]) -> str:
    """Where the verdict's plateau check reads (method §8.1): each arm's seed-mean validation curve,
    on the constant-lr trunk up to the last rung's branch point under ``wsd`` (never a decay
    segment), else over the run's last evaluations; per-run checks are diagnostics."""
    until = v.get("plateau_until")
    where = (f"on the constant-lr trunk up to step {until:,} (no decay segment is read)" if until
             else "over each run's last evaluations")
    return f"read on each arm's mean curve over seeds {where}; the per-run checks are reported beside it"


def _budget_columns(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["training samples"] = df["samples"].map(samples_text)
    df["share of the paper's"] = df["paper_share"].map(share_text)
    return df


def ladder_blocks(v: Mapping[str, Any], t: Mapping[str, pd.DataFrame]) -> list[Block]:
    """The primary endpoint per rung and arm, the primary contrasts per rung, and the ladder figure."""
    ladder = t.get("ladder", pd.DataFrame())
    contrasts = t.get("ladder_contrasts", pd.DataFrame())
    if ladder.empty:
        return []
    lad = v.get("ladder", {})
    doc: list[Block] = [("h", 2, "The answer at each training budget (budget ladder)")]
    rungs = ", ".join(f"{r:,}" for r in lad.get("rungs", sorted(set(ladder["rung"]))))
    f = lad.get("decay_fraction")
    how = (f"with the warmup-stable-decay schedule: one constant-lr trunk per run and, per rung, a decay branch over "
           f"its last {f:.0%}" if f else f"with the {lad.get('schedule', 'constant')} schedule")
    doc.append(("p", f"Every run is evaluated at a ladder of budgets (rungs, in steps: {rungs}) {how}; the largest "
                     "rung is the run itself. `compute_matched` rows: a mining arm's own rung at the budget where its "
                     "cumulative training FLOPs equal the baseline's full budget. Means over seeds with Student-t "
                     "CIs."))
    primary = _budget_columns(ladder[ladder["endpoint_role"] == "primary"])
    doc.append(("table", select(primary, {"kind": "rung kind", "rung": ("steps", "int"),
                                          "training samples": "training samples",
                                          "share of the paper's": "share of the paper's", "strategy": "strategy",
                                          "n": "seeds", "mean": v["primary"]["label"], "sd": "sd",
                                          ("ci_low", "ci_high"): f"{levels(primary)} CI",
                                          "skill": ("skill", "pct")})))
    if not contrasts.empty:
        c = _budget_columns(contrasts[contrasts["endpoint_role"] == "primary"])
        doc.append(("p", "Primary contrasts per rung (relative change versus the baseline; the verdict's Bonferroni "
                         "level; Welch with the delta method on the log ratio):"))
        doc.append(("table", select(c, {"rung": ("steps", "int"), "training samples": "training samples",
                                        "strategy": "strategy", "versus": "versus", "estimate": ("MSE change", "pct"),
                                        ("ci_low", "ci_high"): (f"{levels(c)} CI", "ci_pct"), "p": ("Welch p", "p"),
                                        "outcome": "outcome"})))
    doc.append(("fig", "ladder", "Primary relative change versus training samples"))
    return doc


def stability_blocks(v: Mapping[str, Any], t: Mapping[str, pd.DataFrame]) -> list[Block]:
    """The gate: the primary contrast's estimates per rung (uninformative and unstable rungs labelled),
    the two trend readings per doubling with their CIs, whether each contrast is final, and any
    labelled extrapolation."""
    table = t.get("gap_stability", pd.DataFrame())
    if table.empty:
        return []
    delta = v["delta"]
    doc: list[Block] = [("h", 3, "Is the answer final? The gap's trend per doubling of budget"),
                        ("p", "Only informative rungs count: those where every run of both arms beats the "
                              "per-entry-mean predictor by at least 5% (skill) and none is unstable; the verdict reads "
                              "the full-budget rung only when it is one of them. The contrast's log ratio is followed "
                              "as the budget doubles, with the run as the unit: on the rungs (each run's change of log "
                              "MSE between the last two informative rungs, divided by their distance in doublings) and "
                              "on the constant-lr trunk (each run's slope of log validation MSE against log2 step over "
                              "the trunk's informative part); the arms are differenced by Welch, 95% CIs. A contrast "
                              f"is final when both CIs lie within ±delta/2 = ±{delta / 2:.3f} per doubling and one "
                              "more doubling at either end of either CI would not change its label; otherwise it is "
                              "still moving.")]
    s = table.copy()
    finals = {f: d.get("final") for f, d in (v.get("finality") or {}).items()}
    s["final"] = [finals.get(x) for x in s["strategy"]]
    doc.append(("table", select(s, {"strategy": "strategy", "versus": "versus", "trajectory": "estimate per rung",
                                    "informative_rungs": "informative rungs",
                                    "rungs_trend_text": "rungs: change of log ratio per doubling [95% CI]",
                                    "trunk_trend_text": "trunk: change of log ratio per doubling [95% CI]",
                                    "final": ("final", "yesno")})))
    moving = [c["movement"] for c in v.get("contrasts", []) if c.get("movement")]
    if moving:
        doc.append(("ul", [m[:1].upper() + m[1:] + "." for m in moving]))
    if v.get("extrapolations"):
        doc.append(("ul", list(v["extrapolations"])))
    return doc


def compute_matched_blocks(v: Mapping[str, Any], t: Mapping[str, pd.DataFrame]) -> list[Block]:
    """Each mining arm at its compute-matched rung versus the baseline at the full budget."""
    m = t.get("compute_matched", pd.DataFrame())
    if m.empty:
        return []
    m = _budget_columns(m)
    return [("p", "Compute-matched view: each mining arm trained, with its own decay branch, to the budget where its "
                  "cumulative training FLOPs equal the baseline's at the full budget, versus the baseline at the full "
                  f"budget, on the primary endpoint ({v['primary']['label']}):"),
            ("table", select(m, {"strategy": "strategy", "steps": ("steps", "int"),
                                 "training samples": "training samples",
                                 "step_fraction": ("fraction of the baseline's steps", "share"), "versus": "versus",
                                 "versus_steps": ("baseline steps", "int"), "estimate": ("MSE change", "pct"),
                                 ("ci_low", "ci_high"): (f"{levels(m)} CI", "ci_pct"), "p": ("Welch p", "p"),
                                 "outcome": "outcome", "informative": ("informative", "yesno")}))]


def skill_blocks(v: Mapping[str, Any], t: Mapping[str, pd.DataFrame]) -> list[Block]:
    """Every endpoint's skill versus the per-entry-mean predictor per arm, and the uninformative flag."""
    skill = t.get("skill", pd.DataFrame())
    if skill.empty:
        return []
    wide = skill.pivot_table(index="label", columns="strategy", values="skill", sort=False)
    flags = skill.drop_duplicates("label").set_index("label")["uninformative"]
    wide = wide.map(lambda x: cell(x, "pct"))
    wide["flag"] = ["uninformative (best skill < 5%)" if flags.get(label) else "" for label in wide.index]
    doc: list[Block] = [("p", "Skill of every endpoint, 1 − MSE / MSE(per-entry-mean predictor), mean over seeds; an "
                              "endpoint whose best arm has skill below 5% is uninformative at this budget:"),
                        ("table", wide.reset_index().rename(columns={"label": "endpoint"}))]
    return doc


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
