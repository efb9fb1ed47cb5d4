"""Aggregation of per-run evaluations into tidy tables, seaborn figures and ``report.md`` (SPEC §7–8).

Inputs are the files the evaluate rule writes per (strategy, seed): ``metrics.json`` (summary,
landscape, test-time curve, status), ``per_problem.csv`` and the training ``curve.csv``.
:func:`aggregate` turns them into tables (pandas DataFrames, written as CSV by the workflow);
``plot_*`` functions draw the figures from those tables only, so figures can be redrawn from cached
tables; :func:`render_markdown` writes the verdict and its deciding numbers.
"""
from __future__ import annotations

import json
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

from .statistics import StrategyOutcome, paired, relative_change, summarize, verdict, welch  # noqa: E402

SET_LABELS = {"test_id": "ID (ε = 0.5)", "test_ood": "OOD (ε = 0.1)"}
SUMMARY_METRICS = ["mse", "residual_mean", "residual_median", "rel_err_mean", "infer_ms_per_problem"]


# --------------------------------------------------------------------------- loading
def load_run(metrics_path: str | Path, per_problem_path: str | Path, curve_path: str | Path
             ) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """One run's metrics dict, per-problem table and learning curve."""
    with open(metrics_path) as fh:
        metrics = json.load(fh)
    return metrics, pd.read_csv(per_problem_path), pd.read_csv(curve_path)


# --------------------------------------------------------------------------- tables
def runs_table(metrics: Iterable[Mapping[str, Any]], sweep_points: Mapping[str, Mapping[str, Any]] = {}
               ) -> pd.DataFrame:
    """One row per (strategy, seed, set, inner_steps) with the run's summary metrics and status;
    strategies in ``sweep_points`` get ``sweep_<param>`` columns with their grid values."""
    rows = []
    for m in metrics:
        base = {k: m[k] for k in ("strategy", "seed", "mode", "status", "diverged_at", "steps_done",
                                  "train_seconds", "seconds_per_step", "cost_seconds_per_step")}
        base.update({f"sweep_{k}": v for k, v in sweep_points.get(m["strategy"], {}).items()})
        if not m["sets"]:  # diverged: one row with its status and no metrics
            rows.append({**base, "set": None, "inner_steps": None, **{k: math.nan for k in SUMMARY_METRICS}})
        for set_name, by_inner in m["sets"].items():
            for inner, summary in by_inner.items():
                rows.append({**base, "set": set_name, "inner_steps": int(inner), **summary,
                             "mse_raw_model": m.get("raw_model_mse", {}).get(set_name, math.nan)
                             if int(inner) == m["default_inner"] else math.nan})
    return pd.DataFrame(rows)


def strategies_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (strategy, set, inner_steps): mean, std and 95% CI over seeds of MSE and residual."""
    rows = []
    ok = runs[runs["status"] == "completed"].dropna(subset=["set"])
    for (strategy, set_name, inner), g in ok.groupby(["strategy", "set", "inner_steps"], sort=False):
        row = {"strategy": strategy, "mode": g["mode"].iloc[0], "set": set_name, "inner_steps": int(inner)}
        for metric in ("mse", "residual_mean", "residual_median", "rel_err_mean"):
            s = summarize(g[metric].tolist())
            row.update({f"{metric}_{k}": v for k, v in s.items() if k != "n" or metric == "mse"})
        row["seconds_per_step"] = g["seconds_per_step"].mean()
        row["cost_seconds_per_step"] = g["cost_seconds_per_step"].mean()
        row["infer_ms_per_problem"] = g["infer_ms_per_problem"].mean()
        rows.append(row)
    table = pd.DataFrame(rows)
    status = runs.drop_duplicates(["strategy", "seed"]).groupby("strategy")["status"]
    if len(table):
        table["runs"] = table["strategy"].map(status.size())
        table["diverged"] = table["strategy"].map(status.apply(lambda s: int((s == "diverged").sum())))
    return table


def pairwise_table(runs: pd.DataFrame, per_problem: pd.DataFrame, baseline: str,
                   extra_pairs: Iterable[tuple[str, str]] = ()) -> pd.DataFrame:
    """Each strategy vs ``baseline`` (plus ``extra_pairs``), per set and inner setting.

    Columns: relative MSE change, Welch's test over seeds, and the paired t / Wilcoxon tests over
    per-problem MSE averaged across seeds (every run saw the same problems).
    """
    ok = runs[(runs["status"] == "completed")].dropna(subset=["set"])
    strategies = list(dict.fromkeys(ok["strategy"]))
    pairs = [(s, baseline) for s in strategies if s != baseline] + [p for p in extra_pairs if p[0] in strategies and p[1] in strategies]
    good = ok[["strategy", "seed"]].drop_duplicates()
    pp = per_problem.merge(good, on=["strategy", "seed"])
    rows = []
    for set_name, inner in ok[["set", "inner_steps"]].drop_duplicates().itertuples(index=False):
        sel = ok[(ok["set"] == set_name) & (ok["inner_steps"] == inner)]
        per = pp[(pp["set"] == set_name) & (pp["inner_steps"] == inner)]
        per_mean = per.groupby(["strategy", "problem"])["mse"].mean().unstack("problem")
        for a, b in pairs:
            xa, xb = sel.loc[sel["strategy"] == a, "mse"], sel.loc[sel["strategy"] == b, "mse"]
            if xa.empty or xb.empty:
                continue
            w = welch(xa.tolist(), xb.tolist())
            p = paired(per_mean.loc[a].to_numpy(), per_mean.loc[b].to_numpy()) if a in per_mean.index and b in per_mean.index else {}
            rows.append({"strategy": a, "versus": b, "set": set_name, "inner_steps": int(inner),
                         "mse": xa.mean(), "mse_versus": xb.mean(),
                         "relative_change": relative_change(xa.mean(), xb.mean()),
                         "welch_t": w["t"], "welch_p": w["p"],
                         "paired_mean_diff": p.get("mean_diff", math.nan), "paired_t_p": p.get("p_t", math.nan),
                         "wilcoxon_p": p.get("p_wilcoxon", math.nan)})
    return pd.DataFrame(rows)


def landscape_table(metrics: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [{"strategy": m["strategy"], "seed": m["seed"], "mode": m["mode"], **r}
            for m in metrics for r in m.get("landscape", [])]
    return pd.DataFrame(rows, columns=["strategy", "seed", "mode", "t", "negative", "rank_acc", "gap_mean"])


def test_time_table(runs: pd.DataFrame) -> pd.DataFrame:
    """MSE vs inference inner steps per strategy and set: mean and CI over seeds (IRED Table 2 style)."""
    ok = runs[runs["status"] == "completed"].dropna(subset=["set"])
    rows = []
    for (strategy, set_name, inner), g in ok.groupby(["strategy", "set", "inner_steps"], sort=False):
        s = summarize(g["mse"].tolist())
        rows.append({"strategy": strategy, "set": set_name, "inner_steps": int(inner), "mse_mean": s["mean"],
                     "mse_ci_low": s["ci_low"], "mse_ci_high": s["ci_high"], "seeds": s["n"]})
    return pd.DataFrame(rows).sort_values(["strategy", "set", "inner_steps"]) if rows else pd.DataFrame(rows)


def ablation_table(runs: pd.DataFrame, sweep_points: Mapping[str, Mapping[str, Any]], default_inner: int) -> pd.DataFrame:
    """One row per (swept parameter, value, set) with mean/CI of test MSE over seeds."""
    ok = runs[(runs["status"] == "completed") & (runs["inner_steps"] == default_inner)]
    rows = []
    for name, point in sweep_points.items():
        for param, value in point.items():
            if param == "base":
                continue
            for set_name, g in ok[ok["strategy"] == name].groupby("set"):
                s = summarize(g["mse"].tolist())
                rows.append({"base": point["base"], "parameter": param, "value": value, "strategy": name,
                             "set": set_name, "mse_mean": s["mean"], "mse_ci_low": s["ci_low"],
                             "mse_ci_high": s["ci_high"], "seeds": s["n"],
                             "others": ", ".join(f"{k}={v}" for k, v in point.items() if k not in ("base", param))})
    return pd.DataFrame(rows, columns=["base", "parameter", "value", "strategy", "set", "mse_mean", "mse_ci_low",
                                       "mse_ci_high", "seeds", "others"])


def convergence(curves: pd.DataFrame, tail: float = 1 / 3) -> pd.DataFrame:
    """Per strategy: relative change of mean validation MSE (EMA) over the last ``tail`` of training.

    A drop larger than 5% means the runs were still improving (not converged) when they stopped.
    """
    rows = []
    val = curves.dropna(subset=["val_mse_ema"])
    for strategy, g in val.groupby("strategy", sort=False):
        mean = g.groupby("step")["val_mse_ema"].mean().sort_index()
        if len(mean) < 2:
            rows.append({"strategy": strategy, "tail_relative_change": math.nan, "converged": None})
            continue
        cut = mean.index.max() - tail * (mean.index.max() - mean.index.min())
        start = mean[mean.index <= cut].iloc[-1] if (mean.index <= cut).any() else mean.iloc[0]
        change = relative_change(mean.iloc[-1], start)
        rows.append({"strategy": strategy, "tail_relative_change": change, "converged": bool(change > -0.05)})
    return pd.DataFrame(rows, columns=["strategy", "tail_relative_change", "converged"])


def decide(runs: pd.DataFrame, roles: Mapping[str, str], default_inner: int, improvement: float, alpha: float,
           set_name: str = "test_id") -> dict[str, Any]:
    """Run the SPEC §8 verdict on the ID test MSE with the default inner loop."""
    def outcome(name: str | None) -> StrategyOutcome | None:
        if not name or name not in set(runs["strategy"]):
            return None
        per_seed = runs[runs["strategy"] == name].drop_duplicates("seed")
        sel = runs[(runs["strategy"] == name) & (runs["set"] == set_name) & (runs["inner_steps"] == default_inner)
                   & (runs["status"] == "completed")]
        return StrategyOutcome(name, per_seed["mode"].iloc[0], sel["mse"].tolist(), sel["residual_mean"].tolist(),
                               sel["cost_seconds_per_step"].tolist(), int((per_seed["status"] == "diverged").sum()),
                               len(per_seed))
    base = outcome(roles.get("baseline"))
    if base is None:
        return {"scenario": "undecided", "criteria": {}, "reasons": ["the baseline strategy has no runs"]}
    v = verdict(base, outcome(roles.get("random")), outcome(roles.get("adversarial")), improvement, alpha)
    return {"scenario": v.scenario, "criteria": v.criteria, "reasons": v.reasons, "set": set_name,
            "inner_steps": default_inner}


# --------------------------------------------------------------------------- figures
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
    if len(frame) and set(columns) <= set(frame.columns):
        return False
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{what}: no completed runs to plot\n(see report.md for run status)", ha="center",
            va="center", fontsize=12)
    _save(fig, path, options)
    return True


def _plain_log_ticks(ax: plt.Axes) -> None:
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))


def _save(fig: plt.Figure, path: str | Path, options: Mapping[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=options.get("dpi", 150), bbox_inches="tight")
    plt.close(fig)


def plot_mse(runs: pd.DataFrame, trivial: Mapping[str, Mapping[str, float]], default_inner: int, path: str | Path,
             options: Mapping[str, Any] = {}) -> None:
    """Test MSE per strategy (seeds as points, mean with 95% CI), ID and OOD panels, with and without
    the inference inner loop; dashed lines are the trivial predictors (zeros, per-entry mean)."""
    _style(options)
    ok = runs[(runs["status"] == "completed") & runs["inner_steps"].isin([0, default_inner])].copy()
    if _nothing_to_plot(ok, ["mse", "set"], path, options, "Test MSE"):
        return
    ok["inference"] = np.where(ok["inner_steps"] == 0, "no inner loop", f"{default_inner} inner steps")
    sets = [s for s in SET_LABELS if s in set(ok["set"])]
    fig, axes = plt.subplots(1, max(len(sets), 1), figsize=(6.5 * max(len(sets), 1), 4.8), squeeze=False)
    for ax, set_name in zip(axes[0], sets):
        d = ok[ok["set"] == set_name]
        sns.pointplot(data=d, x="strategy", y="mse", hue="inference", errorbar=("ci", 95), dodge=0.4,
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
        ax.tick_params(axis="x", rotation=20)
    _save(fig, path, options)


def plot_learning_curves(curves: pd.DataFrame, path: str | Path, options: Mapping[str, Any] = {}) -> None:
    """Validation MSE (EMA and raw) and loss terms against training step, mean over seeds with CI bands."""
    _style(options)
    panels = [("val_mse_ema", "validation MSE (EMA model)", True), ("val_mse_raw", "validation MSE (raw model)", True),
              ("loss_mse", "denoising loss L_mse", True), ("loss_energy", "contrastive loss L_E", False)]
    if _nothing_to_plot(curves, ["step", "strategy", "loss_mse"], path, options, "Learning curves"):
        return
    fig, axes = plt.subplots(1, 4, figsize=(22, 4.5))
    palette = _palette(curves["strategy"])
    for ax, (col, title, log) in zip(axes, panels):
        d = curves.dropna(subset=[col])
        if col == "loss_energy":
            d = d[d["mode"] != "none"]
        if not d.empty:
            sns.lineplot(data=d, x="step", y=col, hue="strategy", palette=palette, errorbar=("ci", 95), ax=ax)
        if log and not d.empty and (d[col] > 0).all():
            ax.set_yscale("log")
        ax.set_title(title)
    _save(fig, path, options)


def plot_landscape(landscape: pd.DataFrame, path: str | Path, options: Mapping[str, Any] = {}) -> None:
    """Energy-ranking accuracy P(E⁺ < E⁻) per diffusion step t, for random and adversarial negatives."""
    _style(options)
    if _nothing_to_plot(landscape, ["t", "rank_acc", "negative"], path, options, "Energy landscape"):
        return
    grid = sns.relplot(data=landscape, x="t", y="rank_acc", hue="strategy", palette=_palette(landscape["strategy"]),
                       col="negative", kind="line",
                       marker="o", errorbar=("ci", 95), height=4, aspect=1.3)
    grid.set_axis_labels("diffusion step t", "ranking accuracy P(E⁺ < E⁻)")
    for ax in grid.axes.flat:
        ax.axhline(0.5, ls=":", color="grey")
    grid.figure.suptitle("Energy-landscape quality on held-out ID problems", y=1.03)
    _save(grid.figure, path, options)


def plot_test_time(runs: pd.DataFrame, path: str | Path, options: Mapping[str, Any] = {}) -> None:
    """MSE against the number of inference inner steps, per strategy, ID and OOD panels."""
    _style(options)
    ok = runs[runs["status"] == "completed"].dropna(subset=["set"]).copy()
    if _nothing_to_plot(ok, ["mse", "inner_steps"], path, options, "Test-time compute"):
        return
    ok["set_label"] = ok["set"].map(SET_LABELS)
    grid = sns.relplot(data=ok, x="inner_steps", y="mse", hue="strategy", palette=_palette(ok["strategy"]),
                       col="set_label", kind="line", marker="o", errorbar=("ci", 95), height=4, aspect=1.3,
                       facet_kws={"sharey": False})
    grid.set_axis_labels("inner steps per diffusion step", "test MSE")
    grid.set_titles("{col_name}")
    for ax in grid.axes.flat:
        ax.set_yscale("log")
        _plain_log_ticks(ax)
    _save(grid.figure, path, options)


def plot_ablation(ablation: pd.DataFrame, runs: pd.DataFrame, baseline: str, parameter: str, default_inner: int,
                  path: str | Path, options: Mapping[str, Any] = {}) -> None:
    """Test MSE against one swept parameter (seeds as points, mean with 95% CI), baseline as a band."""
    _style(options)
    names = ablation.loc[ablation["parameter"] == parameter, "strategy"].unique()
    ok = runs[(runs["status"] == "completed") & (runs["inner_steps"] == default_inner)]
    d = ok[ok["strategy"].isin(names)].copy()
    if _nothing_to_plot(d, ["mse", "set"], path, options, f"Ablation of {parameter}"):
        return
    col = f"sweep_{parameter}"
    d["value"] = d[col] if col in d else np.nan
    sets = [s for s in SET_LABELS if s in set(d["set"])]
    fig, axes = plt.subplots(1, max(len(sets), 1), figsize=(6 * max(len(sets), 1), 4.3), squeeze=False)
    for ax, set_name in zip(axes[0], sets):
        ds = d[d["set"] == set_name]
        sns.pointplot(data=ds, x="value", y="mse", errorbar=("ci", 95), capsize=0.1, color="C1", ax=ax,
                      native_scale=True, log_scale=False)
        sns.stripplot(data=ds, x="value", y="mse", color="C1", alpha=0.5, ax=ax, native_scale=True)
        base = ok[(ok["strategy"] == baseline) & (ok["set"] == set_name)]["mse"]
        if len(base):
            s = summarize(base.tolist())
            lo = s["ci_low"] if math.isfinite(s["ci_low"]) else s["mean"]
            hi = s["ci_high"] if math.isfinite(s["ci_high"]) else s["mean"]
            ax.axhspan(lo, hi, color="grey", alpha=0.2)
            ax.axhline(s["mean"], color="grey", ls="--", lw=1, label=f"{baseline} (mean, 95% CI)")
            ax.legend(fontsize=8)
        ax.set_xlabel(parameter)
        ax.set_ylabel("test MSE")
        ax.set_title(f"{SET_LABELS.get(set_name, set_name)}")
    _save(fig, path, options)


# --------------------------------------------------------------------------- markdown
def _fmt(x: Any, digits: int = 5) -> str:
    if isinstance(x, (float, np.floating)):
        if not math.isfinite(x):
            return "n/a"
        return f"{x:.{digits}g}"
    return str(x)


def markdown_table(df: pd.DataFrame, columns: list[str] | None = None) -> str:
    df = df[columns] if columns else df
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(_fmt(v) for v in row) + " |\n" for row in df.itertuples(index=False))


def render_markdown(*, name: str, verdict_info: Mapping[str, Any], strategies: pd.DataFrame, pairwise: pd.DataFrame,
                    test_time: pd.DataFrame, convergence_table: pd.DataFrame, trivial: Mapping[str, Mapping[str, float]],
                    training: Mapping[str, Any], missing: list[str], default_inner: int, figures: Mapping[str, str],
                    ablation: pd.DataFrame | None = None) -> str:
    """The human-readable report: verdict first, then the numbers that decide it."""
    out = [f"# IRED negative-mining study: {name}\n"]
    out.append(f"**Verdict: {verdict_info['scenario']}.**\n")
    for reason in verdict_info.get("reasons", []):
        out.append(f"- {reason}")
    crit = verdict_info.get("criteria", {})
    if crit:
        out.append("\nSuccess criteria for adversarial mining (SPEC §8), on the ID test set with "
                   f"{default_inner} inference inner steps:\n")
        labels = {"1_mse_better_by_5pct_and_significant": "1. MSE lower than baseline by > 5%, significant",
                  "2_residual_lower": "2. reconstruction residual lower", "3_stable": "3. training stable",
                  "4_time_below_2x": "4. training time < 2x baseline"}
        out += [f"- {labels[k]}: **{'yes' if v else 'no'}**" for k, v in crit.items() if k in labels]
    out.append("\n## Training scale\n")
    out.append(", ".join(f"{k} = {v}" for k, v in training.items()) + "\n")
    out.append("Training cost per step (`cost_seconds_per_step`, criterion 4) is CPU process time on a CPU, which "
               "other jobs sharing the cores do not inflate, and wall time on a GPU.\n")
    if missing:
        out.append("**Missing runs** (failed or not run; excluded from every statistic): " + ", ".join(missing) + "\n")
    out.append("## Test MSE per strategy (mean ± std over seeds, 95% CI)\n")
    out.append("Reference predictors: " + "; ".join(
        f"{SET_LABELS.get(s, s)}: zeros {v['zeros']:.4f}, per-entry mean {v['entry_mean']:.4f}" for s, v in trivial.items()) + "\n")
    if not strategies.empty:
        cols = ["strategy", "set", "inner_steps", "mse_n", "mse_mean", "mse_std", "mse_ci_low", "mse_ci_high",
                "residual_mean_mean", "rel_err_mean_mean", "cost_seconds_per_step", "infer_ms_per_problem", "diverged"]
        sel = strategies[strategies["inner_steps"].isin([0, default_inner])]
        out.append(markdown_table(sel, [c for c in cols if c in sel.columns]))
    out.append(f"\n![MSE per strategy]({figures.get('mse', '')})\n")
    out.append("## Pairwise tests (Welch over seeds; paired t and Wilcoxon over per-problem MSE)\n")
    if not pairwise.empty:
        pairwise = pairwise[pairwise["inner_steps"].isin([0, default_inner])]
        out.append(markdown_table(pairwise, ["strategy", "versus", "set", "inner_steps", "mse", "mse_versus",
                                             "relative_change", "welch_p", "paired_t_p", "wilcoxon_p"]))
    out.append("\n## Convergence (validation MSE of the EMA model over the last third of training)\n")
    if not convergence_table.empty:
        out.append(markdown_table(convergence_table))
        out.append("\nA change below -5% means the runs were still improving: conclusions hold for this training scale only.\n")
    out.append(f"\n![Learning curves]({figures.get('curves', '')})\n")
    out.append("## Energy landscape\n")
    out.append(f"![Energy ranking accuracy]({figures.get('landscape', '')})\n")
    out.append("## Test-time compute (MSE vs inference inner steps)\n")
    if not test_time.empty:
        wide = test_time.pivot_table(index=["strategy", "set"], columns="inner_steps", values="mse_mean").reset_index()
        wide.columns = [f"{c} steps" if isinstance(c, (int, np.integer)) else c for c in wide.columns]
        out.append(markdown_table(wide))
        out.append("\nIRED paper, Table 2 (matrix inverse, n = 20): 0.0096 → 0.0095 on the training difficulty and "
                   "0.2110 → 0.2063 on the harder one, from 10 to 40 inference steps.\n")
    out.append(f"\n![Test-time compute]({figures.get('test_time', '')})\n")
    if ablation is not None and not ablation.empty:
        out.append("## Ablations\n")
        out.append(markdown_table(ablation, ["parameter", "value", "others", "set", "mse_mean", "mse_ci_low",
                                             "mse_ci_high", "seeds"]))
        for key, fig in figures.items():
            if key.startswith("ablation_"):
                out.append(f"\n![Ablation {key[9:]}]({fig})\n")
    return "\n".join(out) + "\n"
