"""Seaborn figures of a study, drawn from the cached tables only (so ``snakemake figures`` redraws them).

Every interval drawn is the Student-t 95% CI over seeds (:func:`statistics.t_interval`), the same
method as the tables, except the forest plot, which draws each contrast's own interval (the
verdict's Bonferroni level for the primary rows, 95% otherwise; the level is in the row label).
Learning curves show every seed as a thin line and the mean over seeds as a thick one.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .statistics import t_interval  # noqa: E402
from .tables import SET_LABELS  # noqa: E402

#: IRED paper, matrix inverse n = 20, training difficulty, 10 inference steps (SPEC §9).
PAPER_ID_MSE = 0.0096
AXIS = {"val_mse_ema": "validation MSE, EMA model", "val_mse_raw": "validation MSE, raw model",
        "loss_mse": "denoising loss L_mse", "loss_energy": "contrastive loss L_E",
        "grad_norm": "gradient norm (before clipping)", "clip_frac": "fraction of steps clipped",
        "energy_gap": "energy gap E⁻ − E⁺", "saturated_frac": "saturated pairs (E⁻ − E⁺ > ln 99)",
        "mine_accept": "mining opt-step acceptance", "step": "training step",
        "train_flops": "training compute (PFLOP, profiler-counted)",
        "compute_seconds": "training compute (process CPU-s on CPU, wall-s on GPU)"}


def _style(options: Mapping[str, Any]) -> None:
    sns.set_theme(style=options.get("style", "whitegrid"), context=options.get("context", "notebook"))


def _palette(strategies: Iterable[str]) -> dict[str, Any]:
    """One colour per strategy, in order of first appearance, so every panel and figure agrees."""
    names = list(dict.fromkeys(strategies))
    return dict(zip(names, sns.color_palette("tab10" if len(names) <= 10 else "husl", len(names))))


def _nothing_to_plot(frame: pd.DataFrame, columns: Iterable[str], path: str | Path, options: Mapping[str, Any],
                     what: str) -> bool:
    """Write a figure that says why it is empty (e.g. every run diverged) and return True, if ``frame``
    has no rows or lacks ``columns``; the workflow then still completes and the report explains."""
    if len(frame) and set(columns) <= set(frame.columns) and frame[list(columns)].notna().any().all():
        return False
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{what}: nothing to plot\n(see report.md for run status)", ha="center", va="center",
            fontsize=12)
    _save(fig, path, options)
    return True


def _plain_log_ticks(ax: plt.Axes) -> None:
    """Plain numbers on a log axis: a few labelled ticks, no crowded minor labels."""
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _save(fig: plt.Figure, path: str | Path, options: Mapping[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=options.get("dpi", 150), bbox_inches="tight")
    plt.close(fig)


# --------------------------------------------------------------------------- the answer
def plot_forest(contrasts: pd.DataFrame, verdict: Mapping[str, Any], path: str | Path,
                options: Mapping[str, Any] = {}) -> None:
    """Relative MSE change of each verdict strategy versus the baseline with its CI, one row per
    endpoint (primary first), the ±delta equivalence band shaded, 0 as a line. Intervals reaching
    past ±100% (or far past the band) are cut at the axis edge and marked with an arrow."""
    _style(options)
    d = contrasts[contrasts["role"] == "verdict"] if "role" in contrasts else contrasts
    if _nothing_to_plot(d, ["estimate"], path, options, "Forest plot"):
        return
    d = d.dropna(subset=["estimate"]).copy()
    d["order"] = (d["endpoint_role"] != "primary").astype(int)
    d = d.sort_values(["order"], kind="stable").reset_index(drop=True)
    palette = _palette(d["strategy"])
    delta = float(verdict.get("delta", 0.05))
    ends = 100 * np.abs(d[["ci_low", "ci_high", "estimate"]].to_numpy(dtype=float))
    limit = float(min(100.0, max(300 * delta, np.nanmax(ends) * 1.08 if np.isfinite(ends).any() else 0)))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(d) + 1.6))
    ax.axvspan(-100 * delta, 100 * delta, color="0.85", alpha=0.6, label=f"±{delta:.0%} (no meaningful difference)")
    ax.axvline(0, color="0.3", lw=1)
    for i, r in d.iterrows():
        y = len(d) - 1 - i
        primary = r["endpoint_role"] == "primary"
        color = palette[r["strategy"]]
        lo, hi = 100 * r["ci_low"], 100 * r["ci_high"]
        if math.isfinite(lo) and math.isfinite(hi):
            ax.plot([max(lo, -limit), min(hi, limit)], [y, y], color=color, lw=2.6 if primary else 1.5)
            for end, marker in ((lo, "<"), (hi, ">")):
                if abs(end) > limit:
                    ax.plot(math.copysign(limit, end), y, marker, color=color, ms=7)
        ax.plot(max(min(100 * r["estimate"], limit), -limit), y, "D" if primary else "o", color=color,
                ms=9 if primary else 5)
    labels = [f"{'PRIMARY: ' if r.endpoint_role == 'primary' else ''}{r.strategy} vs {r.versus}: {r.label} "
              f"({r.confidence:.1%} CI)" for r in d.itertuples()]
    ax.set_yticks(range(len(d)))
    ax.set_yticklabels(labels[::-1], fontsize=8)
    ax.set_xlim(-limit, limit)
    ax.set_xlabel("relative change of test MSE versus the baseline (%), negative = better")
    budget = (verdict.get("budget") or {}).get("short")
    ax.set_title(f"Verdict{' at ' + budget if budget else ''}: {verdict.get('outcome', '?')}", loc="left",
                 fontsize=11)
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path, options)


def plot_mse(runs: pd.DataFrame, trivial: Mapping[str, Mapping[str, float]], default_inner: int, path: str | Path,
             options: Mapping[str, Any] = {}) -> None:
    """Test MSE per strategy (seeds as points, mean with 95% t CI), ID and OOD panels, with and without
    the inference inner loop; dashed lines are the trivial predictors (zeros, per-entry mean)."""
    _style(options)
    ok = runs[(runs["status"] == "completed") & runs["inner_steps"].isin([0, default_inner])].copy()
    if _nothing_to_plot(ok, ["mse", "set"], path, options, "Test MSE"):
        return
    ok["inference"] = np.where(ok["inner_steps"] == 0, "no inner loop", f"{default_inner} inner steps")
    sets = [s for s in SET_LABELS if s in set(ok["set"])]
    fig, axes = plt.subplots(1, len(sets), figsize=(6.5 * len(sets), 4.8), squeeze=False)
    for ax, set_name in zip(axes[0], sets):
        d = ok[ok["set"] == set_name]
        sns.pointplot(data=d, x="strategy", y="mse", hue="inference", errorbar=t_interval, dodge=0.4,
                      linestyle="none", markers="D", capsize=0.1, ax=ax, legend=True)
        sns.stripplot(data=d, x="strategy", y="mse", hue="inference", dodge=True, alpha=0.55, size=5, ax=ax,
                      legend=False)
        for label, value in trivial.get(set_name, {}).items():
            ax.axhline(value, ls="--", lw=1, color="grey")
            ax.annotate(f"{label} predictor {value:.4f}", (0.01, value), xycoords=("axes fraction", "data"),
                        fontsize=8, color="grey", va="bottom")
        ax.set_yscale("log")
        _plain_log_ticks(ax)
        ax.set_title(f"Test MSE, {SET_LABELS.get(set_name, set_name)}")
        ax.set_xlabel("")
        ax.set_ylabel("test MSE (log scale)")
        ax.tick_params(axis="x", rotation=20)
    _save(fig, path, options)


# --------------------------------------------------------------------------- curves
def _seed_lines(ax: plt.Axes, d: pd.DataFrame, x: str, y: str, palette: Mapping[str, Any]) -> None:
    """Thin line per (strategy, seed) and a thick mean line per strategy (mean over seeds at each step)."""
    for (strategy, _), g in d.groupby(["strategy", "seed"], sort=False):
        g = g.sort_values("step")
        ax.plot(g[x], g[y], color=palette[strategy], lw=0.7, alpha=0.35)
    for strategy, g in d.groupby("strategy", sort=False):
        mean = g.groupby("step")[[x, y]].mean().sort_index()
        ax.plot(mean[x], mean[y], color=palette[strategy], lw=2.2, label=strategy)


def _curve_grid(curves: pd.DataFrame, panels: list[tuple[str, str, str]], path: str | Path,
                options: Mapping[str, Any], hlines: Mapping[str, list[tuple[float, str]]] = {}, title: str = "") -> None:
    """One panel per (column, x, scale); scale is ``log``, ``linear`` or ``tail`` (the last third of
    training on a linear scale, where a step-matched comparison is read)."""
    palette = _palette(curves["strategy"])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.3), squeeze=False)
    for ax, (col, x, scale) in zip(axes[0], panels):
        d = curves.dropna(subset=[col, x])
        if scale == "tail":
            d = d[d["step"] >= d["step"].max() * 2 / 3]
        if d.empty:
            ax.set_visible(False)
            continue
        _seed_lines(ax, d, x, col, palette)
        lo, hi = d[col].min(), d[col].max()
        for value, label in hlines.get(col, []):
            if scale != "tail" or lo <= value <= hi:
                ax.axhline(value, ls="--", lw=1, color="grey")
                ax.annotate(label, (0.01, value), xycoords=("axes fraction", "data"), fontsize=7, color="grey",
                            va="bottom")
        if scale == "log" and (d[col] > 0).all():
            ax.set_yscale("log")
            _plain_log_ticks(ax)
        ax.set_xlabel(AXIS.get(x, x))
        ax.set_ylabel(AXIS.get(col, col) + {"log": " (log scale)", "tail": ", linear"}.get(scale, ""))
        if scale == "tail":
            ax.set_title("end of training (last third)", fontsize=10)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title, y=1.02)
    _save(fig, path, options)


def plot_learning_curves(curves: pd.DataFrame, trivial: Mapping[str, Mapping[str, float]], path: str | Path,
                         options: Mapping[str, Any] = {}) -> None:
    """Validation MSE (EMA; its last third on a linear scale; raw) and the loss terms against the
    step: thin lines per seed, thick mean; trivial-predictor and paper reference lines."""
    _style(options)
    if _nothing_to_plot(curves, ["step", "strategy", "loss_mse"], path, options, "Learning curves"):
        return
    ref = trivial.get("test_id", {})
    lines = [(ref["entry_mean"], f"per-entry-mean predictor {ref['entry_mean']:.4f} (test)")] if "entry_mean" in ref else []
    lines.append((PAPER_ID_MSE, f"IRED paper {PAPER_ID_MSE} (test, batch 2048, 100K steps)"))
    panels = [("val_mse_ema", "step", "log"), ("val_mse_ema", "step", "tail"), ("val_mse_raw", "step", "log"),
              ("loss_mse", "step", "log"), ("loss_energy", "step", "linear")]
    d = curves.copy()
    d.loc[d["mode"] == "none", "loss_energy"] = np.nan
    _curve_grid(d, panels, path, options, {"val_mse_ema": lines, "val_mse_raw": lines})


def plot_compute_curves(curves: pd.DataFrame, path: str | Path, options: Mapping[str, Any] = {}) -> None:
    """Validation MSE (EMA) against cumulative training compute: profiler FLOPs and compute seconds."""
    _style(options)
    if _nothing_to_plot(curves, ["val_mse_ema", "step"], path, options, "Compute-matched curves"):
        return
    d = curves.copy()
    d["train_flops"] = d["train_flops"] / 1e15 if "train_flops" in d else np.nan
    panels = [("val_mse_ema", x, "log") for x in ("train_flops", "compute_seconds") if x in d and d[x].notna().any()]
    _curve_grid(d, panels or [("val_mse_ema", "step", "log")], path, options,
                title="Validation MSE against training compute (compare strategies at equal x)")


def plot_diagnostics(curves: pd.DataFrame, path: str | Path, options: Mapping[str, Any] = {}) -> None:
    """Training diagnostics against the step: gradient norm, clip fraction, energy gap, saturated
    pairs, mining acceptance (only the columns a strategy produces)."""
    _style(options)
    cols = [c for c in ("grad_norm", "clip_frac", "energy_gap", "saturated_frac", "mine_accept") if c in curves]
    if _nothing_to_plot(curves, ["step", *cols[:1]], path, options, "Training diagnostics"):
        return
    _curve_grid(curves, [(c, "step", "log" if c == "grad_norm" else "linear") for c in cols], path, options)


# --------------------------------------------------------------------------- other views
def plot_landscape(landscape: pd.DataFrame, path: str | Path, options: Mapping[str, Any] = {}) -> None:
    """Energy-ranking accuracy P(E⁺ < E⁻) per diffusion step t, one panel per probe."""
    _style(options)
    if _nothing_to_plot(landscape, ["t", "rank_acc", "negative"], path, options, "Energy landscape"):
        return
    grid = sns.relplot(data=landscape, x="t", y="rank_acc", hue="strategy", palette=_palette(landscape["strategy"]),
                       col="negative", kind="line", marker="o", errorbar=t_interval, height=3.8, aspect=1.2)
    grid.set_axis_labels("diffusion step t", "ranking accuracy P(E⁺ < E⁻)")
    grid.set_titles("{col_name}")
    for ax in grid.axes.flat:
        ax.axhline(0.5, ls=":", color="grey")
    grid.figure.suptitle("Energy-landscape quality on held-out ID problems (probes identical for every strategy)",
                         y=1.04)
    _save(grid.figure, path, options)


def plot_test_time(runs: pd.DataFrame, path: str | Path, options: Mapping[str, Any] = {}) -> None:
    """MSE against the number of inference inner steps, per strategy, ID and OOD panels."""
    _style(options)
    ok = runs[runs["status"] == "completed"].dropna(subset=["set"]).copy()
    if _nothing_to_plot(ok, ["mse", "inner_steps"], path, options, "Test-time compute"):
        return
    ok["set_label"] = ok["set"].map(SET_LABELS)
    grid = sns.relplot(data=ok, x="inner_steps", y="mse", hue="strategy", palette=_palette(ok["strategy"]),
                       col="set_label", kind="line", marker="o", errorbar=t_interval, height=4, aspect=1.3,
                       facet_kws={"sharey": False})
    grid.set_axis_labels("inference inner steps per diffusion step", "test MSE (log scale)")
    grid.set_titles("{col_name}")
    for ax in grid.axes.flat:
        ax.set_yscale("log")
        _plain_log_ticks(ax)
    _save(grid.figure, path, options)
