"""Seaborn-themed figures of a study, drawn from the cached tables only (``snakemake figures`` redraws them).

Every interval drawn is the Student-t 95% CI over seeds (:func:`statistics.t_interval`), the same
method as the tables, except the forest plot, which draws each contrast's own interval (the
verdict's Bonferroni level for the primary rows, 95% otherwise; the level is in the row label).
Learning curves show every seed as a thin line and the mean over seeds as a thick one. Colours,
markers, legends and file formats follow :mod:`diffusion_lib.report.style`: one colour and one
marker per strategy in every figure, legends in the tables' order and outside the data; each
plotting function returns the (closed) figure it saved.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from .style import INFERENCE, Look, apply_theme, mean_ci_by, nothing_to_plot, order, panel_grid, place_legend, plain_log_ticks, save, strategy_handles, strategy_styles, tag
from ..analysis.statistics import level_text, t_interval
from ..analysis.tables import SET_LABELS

#: IRED paper, matrix inverse n = 20, training difficulty, 10 inference steps (method §9).
PAPER_ID_MSE = 0.0096
AXIS = {"val_mse_ema": "validation MSE, EMA model", "val_mse_raw": "validation MSE, raw model",
        "loss_mse": "denoising loss L_mse", "loss_energy": "contrastive loss L_E",
        "grad_norm": "gradient norm (before clipping)", "clip_frac": "fraction of steps clipped",
        "energy_gap": "energy gap E⁻ − E⁺", "saturated_frac": "saturated pairs (E⁻ − E⁺ > ln 99)",
        "mine_accept": "mining opt-step acceptance", "step": "training step",
        "train_flops": "training compute (FLOP, profiler-counted)",
        "compute_seconds": "training compute (s: CPU time on a CPU,\nwall time on a GPU)"}


# --------------------------------------------------------------------------- the answer
def plot_forest(contrasts: pd.DataFrame, verdict: Mapping[str, Any], path: str | Path,
                options: Mapping[str, Any] = {}) -> plt.Figure | None:
    """Relative MSE change of each verdict strategy versus the baseline with its CI, one row per
    endpoint (primary first, thicker), the ±delta equivalence band shaded, 0 as a line. The x-range is
    sized by the primary rows (their CIs with 15% room, at least 2.5 delta) so the verdict's CI and the
    band are legible; an interval or estimate beyond it is cut at the axis edge, marked with an arrow
    and labelled with its value."""
    apply_theme(options)
    d = contrasts[contrasts["role"] == "verdict"] if "role" in contrasts else contrasts
    if nothing_to_plot(d, ["estimate"], path, options, "Forest plot"):
        return None
    d = d.dropna(subset=["estimate"]).copy()
    d["order"] = (d["endpoint_role"] != "primary").astype(int)
    d = d.sort_values(["order"], kind="stable").reset_index(drop=True)
    looks = strategy_styles(options, d["strategy"])
    delta = float(verdict.get("delta", 0.05))
    primary_rows = d[d["endpoint_role"] == "primary"]
    ends = 100 * np.abs((primary_rows if len(primary_rows) else d)[["ci_low", "ci_high", "estimate"]]
                        .to_numpy(dtype=float))
    limit = float(min(100.0, max(250 * delta, np.nanmax(ends) * 1.15 if np.isfinite(ends).any() else 0)))
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(d) + 1.8), layout="constrained")
    band = ax.axvspan(-100 * delta, 100 * delta, color="0.85", alpha=0.6,
                      label=f"±{delta:.0%} (no meaningful difference)")
    ax.axvline(0, color="0.3", lw=1)
    for i, r in d.iterrows():
        y = len(d) - 1 - i
        primary = r["endpoint_role"] == "primary"
        look = looks[r["strategy"]]
        lo, hi = 100 * r["ci_low"], 100 * r["ci_high"]
        if math.isfinite(lo) and math.isfinite(hi):
            tag(ax.plot([max(lo, -limit), min(hi, limit)], [y, y], color=look.color, lw=2.6 if primary else 1.5),
                r["strategy"])
            for end, marker in ((lo, "<"), (hi, ">")):
                if abs(end) > limit:
                    ax.plot(math.copysign(limit, end), y, marker, color=look.color, ms=7)
                    ax.annotate(f"{end:+.0f}%", (math.copysign(limit, end), y), textcoords="offset points",
                                xytext=(-4 if end > 0 else 4, 5), ha="right" if end > 0 else "left", fontsize=7,
                                color=look.color)
        tag(ax.plot(max(min(100 * r["estimate"], limit), -limit), y, look.marker, color=look.color,
                    ms=10 if primary else 6), r["strategy"])
    labels = [f"{'PRIMARY: ' if r.endpoint_role == 'primary' else ''}{r.strategy} vs {r.versus}: {r.label} "
              f"({level_text(r.confidence)} CI)" for r in d.itertuples()]
    ax.set_yticks(range(len(d)))
    ax.set_yticklabels(labels[::-1], fontsize=8)
    ax.set_ylim(-0.7, len(d) - 0.3)
    ax.set_xlim(-limit, limit)
    ax.set_xlabel("relative change of test MSE versus the baseline (%), negative = better")
    budget = (verdict.get("budget") or {}).get("short")
    ax.set_title(f"Verdict{' at ' + budget if budget else ''}: {verdict.get('outcome', '?')}", loc="left",
                 fontsize=11)
    fig.legend(handles=[band, *strategy_handles(looks, d["strategy"])], loc="outside lower center", ncols=4,
               fontsize=8)
    return save(fig, path, options)


def plot_mse(runs: pd.DataFrame, trivial: Mapping[str, Mapping[str, float]], default_inner: int, path: str | Path,
             options: Mapping[str, Any] = {}) -> plt.Figure | None:
    """Test MSE per strategy (seeds as small points, mean with 95% t CI), ID and OOD panels; the
    inference setting by marker fill (open: no inner loop; filled: the default inner loop);
    dashed lines are the trivial predictors (zeros, per-entry mean)."""
    apply_theme(options)
    ok = runs[(runs["status"] == "completed") & runs["inner_steps"].isin([0, default_inner])].copy()
    if nothing_to_plot(ok, ["mse", "set"], path, options, "Test MSE"):
        return None
    looks = strategy_styles(options, ok["strategy"])
    names = [n for n in order(options, ok["strategy"]) if n in set(ok["strategy"])]
    sets = [s for s in SET_LABELS if s in set(ok["set"])]
    fig, axes, _ = panel_grid(len(sets), 2, 0.55 * len(names) + 3.2, 4.6)
    jitter = np.random.default_rng(0)
    for ax, set_name in zip(axes, sets):
        for i, name in enumerate(names):
            look = looks[name]
            for looped in (False, True):
                mse = ok[(ok["set"] == set_name) & (ok["strategy"] == name)
                         & (ok["inner_steps"] == (default_inner if looped else 0))]["mse"].dropna()
                if not len(mse):
                    continue
                x = i + (0.17 if looped else -0.17)
                tag(ax.scatter(x + jitter.uniform(-0.05, 0.05, len(mse)), mse, color=look.color, alpha=0.45, s=12,
                               marker=look.marker, linewidths=0), name)
                lo, hi = t_interval(mse.tolist())
                mean = float(mse.mean())
                tag(ax.errorbar([x], [mean], yerr=[[max(mean - lo, 0)], [max(hi - mean, 0)]], color=look.color,
                                marker=look.marker, ms=8, capsize=4, lw=1.6, **INFERENCE[looped]).lines, name)
        for label, value in trivial.get(set_name, {}).items():
            ax.axhline(value, ls="--", lw=1, color="grey")
            ax.annotate(f"{label.replace('_', '-')} predictor {value:.4g}", (0.99, value),
                        xycoords=("axes fraction", "data"), fontsize=7, color="grey", va="bottom", ha="right")
        ax.set_yscale("log")
        plain_log_ticks(ax)
        ax.set_title(f"Test MSE, {SET_LABELS.get(set_name, set_name)}")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=25, ha="right")
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_ylabel("test MSE (log scale)")
    settings = [Line2D([], [], color="0.3", marker="o", ls="none", label=label, **INFERENCE[looped])
                for looped, label in ((False, "no inner loop"), (True, f"{default_inner} inner steps"))]
    place_legend(fig, [], [*strategy_handles(looks, names), *settings])
    return save(fig, path, options)


# --------------------------------------------------------------------------- curves
def _seed_lines(ax: plt.Axes, d: pd.DataFrame, x: str, y: str, looks: Mapping[str, Look]) -> None:
    """Thin line per (strategy, seed) and a thick mean line per strategy (mean over seeds at each step)."""
    for (strategy, _), g in d.groupby(["strategy", "seed"], sort=False):
        g = g.sort_values("step")
        tag(ax.plot(g[x], g[y], color=looks[strategy].color, lw=0.7, alpha=0.35), strategy)
    for strategy in [s for s in looks if s in set(d["strategy"])]:
        g = d[d["strategy"] == strategy]
        mean = g.groupby("step")[[x, y]].mean().sort_index()
        every = max(1, len(mean) // 6)
        tag(ax.plot(mean[x], mean[y], color=looks[strategy].color, lw=2.2, marker=looks[strategy].marker, ms=4,
                    markevery=every, label=strategy), strategy)


def _curve_grid(curves: pd.DataFrame, panels: list[tuple[str, str, str]], path: str | Path,
                options: Mapping[str, Any], hlines: Mapping[str, list[tuple[float, str]]] = {}, title: str = "",
                columns: int = 3) -> plt.Figure:
    """One panel per (column, x, scale) in rows of ``columns``; scale is ``log``, ``linear`` or
    ``tail`` (the last third of training on a linear scale, where a step-matched comparison is read).
    The strategies' legend fills a spare slot of the grid, or sits beside it."""
    looks = strategy_styles(options, curves["strategy"])
    fig, axes, spare = panel_grid(len(panels), columns, 4.4, 3.5)
    for ax, (col, x, scale) in zip(axes, panels):
        d = curves.dropna(subset=[col, x])
        if scale == "tail":
            d = d[d["step"] >= d["step"].max() * 2 / 3]
        if d.empty:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"{AXIS.get(col, col)}:\nnot recorded", ha="center", va="center", fontsize=9)
            continue
        _seed_lines(ax, d, x, col, looks)
        lo, hi = d[col].min(), d[col].max()
        refs = sorted(hlines.get(col, []))
        for k, (value, label) in enumerate(refs):
            if scale != "tail" or lo <= value <= hi:
                ax.axhline(value, ls="--", lw=1, color="grey")
                # the lowest reference's label goes under its line, the others above theirs: no overlap
                ax.annotate(label, (0.99, value), xycoords=("axes fraction", "data"), fontsize=7, color="grey",
                            va="top" if k == 0 and len(refs) > 1 else "bottom", ha="right")
        if scale == "log" and (d[col] > 0).all():
            ax.set_yscale("log")
            plain_log_ticks(ax)
        ax.set_xlabel({**AXIS, **options.get("axis", {})}.get(x, x), fontsize=9)
        ax.set_ylabel(AXIS.get(col, col) + {"log": " (log)", "tail": ", linear"}.get(scale, ""), fontsize=9)
        if scale == "tail":
            ax.set_title("end of training (last third)", fontsize=10)
    place_legend(fig, spare, strategy_handles(looks, curves["strategy"]), title="strategy (thin: seeds)")
    if title:
        fig.suptitle(title)
    return save(fig, path, options)


def plot_learning_curves(curves: pd.DataFrame, trivial: Mapping[str, Mapping[str, float]], path: str | Path,
                         options: Mapping[str, Any] = {}) -> plt.Figure | None:
    """Validation MSE (EMA; its last third on a linear scale; the raw model's where it was recorded)
    and the loss terms against the step: thin lines per seed, thick mean; trivial-predictor and paper
    reference lines. No panel is drawn for what was not recorded."""
    apply_theme(options)
    if nothing_to_plot(curves, ["step", "strategy", "loss_mse"], path, options, "Learning curves"):
        return None
    ref = trivial.get("test_id", {})
    lines = [(ref["entry_mean"], f"per-entry-mean predictor {ref['entry_mean']:.4f} (test)")] if "entry_mean" in ref else []
    lines.append((PAPER_ID_MSE, f"IRED paper {PAPER_ID_MSE} (test, batch 2048, 100K steps)"))
    raw = "val_mse_raw" in curves and curves["val_mse_raw"].notna().any()  # train.validate_raw: false leaves it empty
    panels = [("val_mse_ema", "step", "log"), ("val_mse_ema", "step", "tail"),
              *([("val_mse_raw", "step", "log")] if raw else []), ("loss_mse", "step", "log"),
              ("loss_energy", "step", "linear")]
    d = curves.copy()
    d.loc[d["mode"] == "none", "loss_energy"] = np.nan
    return _curve_grid(d, panels, path, options, {"val_mse_ema": lines, "val_mse_raw": lines})


def _flop_unit(largest: float) -> tuple[float, str]:
    """The unit (scale, name) in which ``largest`` FLOPs reads as a number between 1 and 1000."""
    for scale, unit in ((1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP")):
        if largest >= scale:
            return scale, unit
    return 1.0, "FLOP"


def plot_compute_curves(curves: pd.DataFrame, path: str | Path, options: Mapping[str, Any] = {}) -> plt.Figure | None:
    """Validation MSE (EMA) against cumulative training compute: profiler FLOPs and compute seconds."""
    apply_theme(options)
    if nothing_to_plot(curves, ["val_mse_ema", "step"], path, options, "Compute-matched curves"):
        return None
    d = curves.copy()
    if "train_flops" in d and d["train_flops"].notna().any():
        scale, unit = _flop_unit(float(d["train_flops"].max()))
        d["train_flops"] = d["train_flops"] / scale
        options = {**options, "axis": {"train_flops": f"training compute ({unit}, profiler-counted)"}}
    panels = [("val_mse_ema", x, "log") for x in ("train_flops", "compute_seconds") if x in d and d[x].notna().any()]
    return _curve_grid(d, panels or [("val_mse_ema", "step", "log")], path, options,
                       title="Validation MSE against training compute\n(compare strategies at equal x)")


def plot_diagnostics(curves: pd.DataFrame, path: str | Path, options: Mapping[str, Any] = {}) -> plt.Figure | None:
    """Training diagnostics against the step: gradient norm, clip fraction, energy gap, saturated
    pairs, mining acceptance (only the columns a strategy produces)."""
    apply_theme(options)
    cols = [c for c in ("grad_norm", "clip_frac", "energy_gap", "saturated_frac", "mine_accept") if c in curves]
    if nothing_to_plot(curves, ["step", *cols[:1]], path, options, "Training diagnostics"):
        return None
    return _curve_grid(curves, [(c, "step", "log" if c == "grad_norm" else "linear") for c in cols], path, options)


# --------------------------------------------------------------------------- other views
def _mean_lines(ax: plt.Axes, d: pd.DataFrame, x: str, y: str, looks: Mapping[str, Look]) -> None:
    """Per strategy: the mean over seeds at each ``x`` with its 95% t CI as a band."""
    for strategy in [s for s in looks if s in set(d["strategy"])]:
        m = mean_ci_by(d[d["strategy"] == strategy], x, y)
        look = looks[strategy]
        tag(ax.plot(m[x], m["mean"], color=look.color, marker=look.marker, ms=5, lw=1.8, label=strategy), strategy)
        tag(ax.fill_between(m[x], m["lo"], m["hi"], color=look.color, alpha=0.15, lw=0), strategy)


def plot_landscape(landscape: pd.DataFrame, path: str | Path, options: Mapping[str, Any] = {}) -> plt.Figure | None:
    """Energy-ranking accuracy P(E⁺ < E⁻) per diffusion step t, one panel per probe. The random and
    near-miss probes give every model the same negatives; the adversarial probe descends each
    model's own energy, so it is not a common yardstick (the panel title says so)."""
    apply_theme(options)
    if nothing_to_plot(landscape, ["t", "rank_acc", "negative"], path, options, "Energy landscape"):
        return None
    looks = strategy_styles(options, landscape["strategy"])
    probes = list(dict.fromkeys(landscape["negative"]))
    fig, axes, spare = panel_grid(len(probes), 3, 4.2, 3.4)
    for ax, probe in zip(axes, probes):
        _mean_lines(ax, landscape[landscape["negative"] == probe], "t", "rank_acc", looks)
        ax.axhline(0.5, ls=":", color="grey")
        own = probe.startswith("adversarial")
        ax.set_title(f"{probe}\n({'descends each model’s own energy' if own else 'same negatives for every model'})",
                     fontsize=9)
        ax.set_xlabel("diffusion step t")
        ax.set_ylabel("ranking accuracy P(E⁺ < E⁻)", fontsize=9)
        ax.set_ylim(-0.03, 1.03)
    place_legend(fig, spare, strategy_handles(looks, landscape["strategy"]), title="strategy (mean, 95% t CI)")
    fig.suptitle("Energy-landscape probes on held-out ID problems")
    return save(fig, path, options)


def plot_test_time(runs: pd.DataFrame, path: str | Path, options: Mapping[str, Any] = {}) -> plt.Figure | None:
    """MSE against the number of inference inner steps, per strategy, ID and OOD panels."""
    apply_theme(options)
    ok = runs[runs["status"] == "completed"].dropna(subset=["set"]).copy()
    if nothing_to_plot(ok, ["mse", "inner_steps"], path, options, "Test-time compute"):
        return None
    looks = strategy_styles(options, ok["strategy"])
    sets = [s for s in SET_LABELS if s in set(ok["set"])]
    fig, axes, _ = panel_grid(len(sets), 2, 4.6, 3.6)
    for ax, set_name in zip(axes, sets):
        _mean_lines(ax, ok[ok["set"] == set_name], "inner_steps", "mse", looks)
        ax.set_yscale("log")
        plain_log_ticks(ax)
        ax.set_title(SET_LABELS.get(set_name, set_name), fontsize=10)
        ax.set_xlabel("inference inner steps per diffusion step")
        ax.set_ylabel("test MSE (log scale)")
    place_legend(fig, [], strategy_handles(looks, ok["strategy"]), title="mean, 95% t CI")
    return save(fig, path, options)
