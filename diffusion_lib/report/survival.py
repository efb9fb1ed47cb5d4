"""The stability study in the report (issue 44): its section of report.md and its figure.

The figure, drawn from the cached ``stability_km``, ``stability_shares`` and ``stability_runs``
tables. Left: the share of runs still stable against the training step (Kaplan-Meier, a step curve
per group with its runs as ticks where they were censored) of every group the declared tests name,
each at its own learning rate (the arms and the controls). Where an arm was tried at two rates or
more, the middle panel shows every run's time to instability against the learning rate (a filled
marker where it became unstable, an open one at its last evaluation where it never did; a line
through each arm's median time): how soon the blow-ups come as the rate grows. Right: the share of
runs that became unstable against the learning rate, one line per arm (its exact 95% interval as
error bars; the arms side by side at each rate), a control as a point of its own: where each arm's
stable range ends; with no arm tried at two rates, one point per group.

The section: the finding's sentence (budget included), the declared tests with exact and Holm
p-values, what each control's reading means, each arm's stable range, and the counts per arm and
rate with how far the unstable runs rose and how many came back (descriptive).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analysis.statistics import p_text
from .render import Block, select
from .style import apply_theme, nothing_to_plot, save, strategy_styles, tag

DODGE = 1.04  # the factor between neighbouring arms' points at one learning rate (log axis)
RUN_DODGE, SPREAD = 1.07, 1.012  # middle panel: between neighbouring arms, and between one arm's runs at a rate


def _shown(km: pd.DataFrame, verdict: Mapping[str, Any]) -> pd.DataFrame:
    """The Kaplan-Meier curves of the left panel: every group the declared tests name (whatever its
    learning rate), else every group at the most common rate."""
    groups = (verdict.get("stability") or {}).get("groups") or []
    if groups:
        return km[km["strategy"].isin(groups)]
    counts = km.drop_duplicates("strategy")["lr"].value_counts()
    return km[np.isclose(km["lr"], counts.index[0])] if len(counts) else km


def plot_stability(km: pd.DataFrame, shares: pd.DataFrame, runs: pd.DataFrame, verdict: Mapping[str, Any],
                   path: str | Path, options: Mapping[str, Any] = {}) -> plt.Figure | None:
    """Kaplan-Meier curves of the declared groups and the unstable share per rate (or per group)."""
    if nothing_to_plot(km, ["step", "stable"], path, options, "stability"):
        return None
    apply_theme(options)
    looks = strategy_styles(options, shares["arm"])
    controls = set(shares["arm"]) - {a for a, g in shares.groupby("arm") if g["lr"].nunique() > 1}
    ranged = controls != set(shares["arm"])  # some arm tried at two rates or more
    fig, axes = plt.subplots(1, 3 if ranged else 2, figsize=(17, 4.8) if ranged else (12, 4.6), layout="constrained")
    left, right = axes[0], axes[-1]
    near = _shown(km, verdict)
    for strategy, d in near.groupby("strategy", sort=False):
        arm = str(d["arm"].iloc[0])
        look = looks[arm]
        n = int(d["at_risk"].iloc[0])
        tag(left.step(d["step"], d["stable"], where="post", color=look.color, lw=2,
                      label=f"{arm} (lr {d['lr'].iloc[0]:g}, {n} runs)"), arm)
        own = runs[(runs["strategy"] == strategy) & ~runs["event"].astype(bool)]
        if len(own):  # censored runs: still stable when last watched
            at = d.set_index("step")["stable"]
            heights = [float(at[at.index <= t].iloc[-1]) for t in own["time"]]
            tag(left.scatter(own["time"], heights, marker="|", s=120, color=look.color, zorder=3), arm)
    rates = sorted(set(near["lr"].astype(float)))
    left.set(xlabel="training step", ylabel="share of runs still stable", ylim=(-0.04, 1.06),
             xlim=(0, float(km["step"].max()) * 1.04),
             title="Kaplan-Meier at lr " + ", ".join(f"{r:g}" for r in rates))
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, fontsize=8, frameon=False)
    if ranged:
        _times_by_rate(axes[1], runs, shares, looks, controls)
        _shares_by_rate(right, shares, looks, controls)
    else:  # no arm tried at two rates: one point per group, side by side
        _shares_by_group(right, shares, looks)
    right.set(ylabel="share of runs that became unstable", ylim=(-0.04, 1.06))
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=3, fontsize=8, frameon=False)
    return save(fig, path, options)


def _bars(ax: plt.Axes, x: np.ndarray, d: pd.DataFrame, look: Any, arm: str, **style: Any) -> None:
    y = d["share"].to_numpy(float)
    err = [np.maximum(y - d["ci_low"].to_numpy(float), 0), np.maximum(d["ci_high"].to_numpy(float) - y, 0)]
    tag(ax.errorbar(x, y, yerr=err, color=look.color, marker=look.marker, capsize=4, lw=1.5, label=arm,
                    **style).lines, arm)


def _shares_by_group(ax: plt.Axes, shares: pd.DataFrame, looks: Mapping[str, Any]) -> None:
    """Each group's unstable share at its one rate, the groups along x."""
    for i, r in enumerate(shares.itertuples(index=False)):
        _bars(ax, np.array([i]), shares.iloc[[i]], looks[r.arm], r.arm, ls="none")
    ax.set_xticks(range(len(shares)), [f"{r.arm}\nlr {r.lr:g}" for r in shares.itertuples(index=False)], fontsize=8)
    ax.set_xlim(-0.6, len(shares) - 0.4)
    ax.set_title("Unstable share per group (exact 95% CI)")


def _dodge(arms: list[str], arm: str, factor: float = DODGE) -> float:
    """The factor that places ``arm``'s points beside the other arms' at one rate (log x)."""
    return factor ** (arms.index(arm) - (len(arms) - 1) / 2)


def _rate_axis(ax: plt.Axes, shares: pd.DataFrame, controls: set[str]) -> None:
    """A log learning-rate axis ticked at the rates the arms were tried at (a control's own rate is
    named in the left panel's legend, not ticked: it would crowd an arm's tick)."""
    ax.set_xscale("log")
    rates = sorted(set(shares.loc[~shares["arm"].isin(controls), "lr"].astype(float)))
    every = sorted(set(shares["lr"].astype(float)))
    ax.set_xticks(rates, [f"{r:g}" for r in rates], fontsize=8)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlim(every[0] / 1.3, every[-1] * 1.3)
    ax.set_xlabel("learning rate (constant after warm-up)")


def _times_by_rate(ax: plt.Axes, runs: pd.DataFrame, shares: pd.DataFrame, looks: Mapping[str, Any],
                   controls: set[str]) -> None:
    """Every run's time to instability against its learning rate: filled where it became unstable,
    open at its last evaluation where it never did, a line through each arm's median time (where
    more than half its runs became unstable); the runs of one arm at one rate spread a little apart."""
    arms = list(dict.fromkeys(shares["arm"]))
    for arm, d in runs[runs["arm"].isin(arms)].groupby("arm", sort=False):
        look = looks[arm]
        for lr, g in d.groupby("lr"):
            g = g.sort_values("seed")
            x = float(lr) * _dodge(arms, arm, RUN_DODGE) * SPREAD ** (np.arange(len(g)) - (len(g) - 1) / 2)
            event = g["event"].astype(bool).to_numpy()
            tag(ax.scatter(x[event], g["time"].to_numpy(float)[event], marker=look.marker, s=28, color=look.color,
                           zorder=3), arm)
            tag(ax.scatter(x[~event], g["time"].to_numpy(float)[~event], marker=look.marker, s=28,
                           facecolors="white", edgecolors=look.color, linewidths=1.2, zorder=3), arm)
        mid = shares[shares["arm"] == arm].sort_values("lr")
        if arm not in controls and mid["median_time"].notna().any():  # a gap where a rate has no median
            tag(ax.plot(mid["lr"].to_numpy(float) * _dodge(arms, arm, RUN_DODGE), mid["median_time"].to_numpy(float),
                        color=look.color, lw=1.5, zorder=2), arm)
    _rate_axis(ax, shares, controls)
    top = float(np.nanmax([runs["watched_to"].max(), runs["time"].max(), 1.0]))
    ax.set(ylim=(0, top * 1.08), ylabel="training step",
           title="When each run became unstable (open: stable to its end)")


def _shares_by_rate(ax: plt.Axes, shares: pd.DataFrame, looks: Mapping[str, Any], controls: set[str]) -> None:
    """Each arm's unstable share against the learning rate (log x, the arms side by side at a rate);
    a control at its one rate as a point."""
    arms = list(dict.fromkeys(shares["arm"]))
    for arm, d in shares.groupby("arm", sort=False):
        d = d.sort_values("lr")
        _bars(ax, d["lr"].to_numpy(float) * _dodge(arms, arm), d, looks[arm], arm, ls="none" if arm in controls else "-")
    _rate_axis(ax, shares, controls)
    ax.set_title("Unstable share per learning rate (exact 95% CI)")


def _times_over(x: Any) -> str:
    """A ratio to a run's best as "38×" (one decimal under 10); "n/a" where there is none."""
    if x is None or not math.isfinite(float(x)):
        return "n/a"
    return f"{float(x):.0f}×" if float(x) >= 10 else f"{float(x):.1f}×"


def _none(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _lr(value: Any) -> str:
    return "none tried" if _none(value) else f"{float(value):g}"


def _range_line(r: Mapping[str, Any]) -> str:
    rates = ", ".join(f"{x:g}" for x in r["rates"])
    text = f"{r['arm']} (rates tried: {rates}): stable at every rate tried"
    if _none(r["smallest_unstable_lr"]):
        text += f", up to {_lr(r['largest_stable_lr'])}; its edge lies above the rates tried"
    else:
        text += f" up to {_lr(r['largest_stable_lr'])}, unstable from {_lr(r['smallest_unstable_lr'])}"
    return text + (f" (0 of {r['runs_at_largest']} runs unstable there: a run's risk up to {r['risk_upper_95']:.0%})"
                   if r.get("runs_at_largest") else "")


def stability_blocks(v: Mapping[str, Any], t: Mapping[str, pd.DataFrame], figures: Mapping[str, str]) -> list[Block]:
    """The stability study's section, or nothing where the config declares no stability tests."""
    found = v.get("stability") or {}
    if not found:
        return []
    doc: list[Block] = [("h", 2, "Training stability (the stability study)"),
                        ("p", f"**{found['outcome'].capitalize()}.** {found['sentence']}"),
                        ("p", "A run is unstable from the first validation evaluation whose MSE (EMA model) exceeds "
                              "the instability rule's factor × the lowest it reached before; a run never flagged "
                              "is censored at its last evaluation. Each training seed is one run, the unit of every "
                              "test: the exact log-rank p-value counts every split of the pooled runs into two "
                              "groups of the same sizes. The primary pair is tested alone; the other pairs and the "
                              "controls' tests are Holm-corrected together.")]
    tests = t.get("stability_tests", pd.DataFrame())
    if not tests.empty:
        doc.append(("table", select(tests, {"role": "test", "a": "group", "b": "versus", "n_a": "runs",
                                            "unstable_a": "unstable", "n_b": "runs (versus)",
                                            "unstable_b": "unstable (versus)", "p": ("exact p", "p"),
                                            "p_holm": ("Holm p", "p"), "differs": ("differ", "yesno")})))
    readings = found.get("readings") or []
    if readings:
        first, second = found["primary"]["a"], found["primary"]["b"]
        label = {"first": f"like {first}", "second": f"like {second}", "both": "differs from both"}
        doc.append(("p", "What the controls say (each read by the rule declared before the study ran):"))
        doc.append(("ul", [f"`{r['control']}`: {label.get(r['like'], r['like'] or 'not run')}: {r['means']}"
                           for r in readings]))
    ranges = pd.DataFrame(found.get("stable_range") or [])
    if not ranges.empty:
        doc.append(("p", "Stable learning-rate range of each arm tried at two rates or more (the largest rate "
                         "tried at which none of its runs became unstable, every smaller rate tried stable too; the "
                         "smallest at which one did; the one-sided 95% upper bound on a run's risk at the largest "
                         "stable rate). Between the rates tried the edge is unknown:"))
        doc.append(("ul", [_range_line(r) for r in ranges.to_dict("records")]))
    shares = t.get("stability_shares", pd.DataFrame())
    if not shares.empty:
        shares = shares.assign(rate=[f"{x:g}" for x in shares["lr"]])
        if "peak_median" in shares:
            shares = shares.assign(peak_text=[_times_over(x) for x in shares["peak_median"]],
                                   back_text=[f"{int(b)} of {int(k)}" if k and math.isfinite(b) else "n/a"
                                              for b, k in zip(shares["back"], shares["unstable"])])
            doc.append(("p", "Descriptive, not tested: how far the unstable runs rose (the median over them of a "
                             "run's largest validation MSE over the lowest before it) and how many were back "
                             "within the rule's factor of their best at their last evaluation (a blow-up a run "
                             "recovered from at a constant rate, against one it ended in)."))
        doc.append(("table", select(shares, {"arm": "arm", "rate": ("lr", "text"), "runs": "runs",
                                             "unstable": "unstable", "share": ("share", "share"),
                                             ("ci_low", "ci_high"): ("exact 95% CI", "ci_share"),
                                             "first_unstable": ("first unstable at", "int"),
                                             "median_time": ("median time", "int"), "watched_to": ("watched to", "int"),
                                             "peak_text": ("median peak", "text"),
                                             "back_text": ("back at the end", "text")})))
    doc.append(("fig", "stability", "Training stability"))
    primary = found.get("primary") or {}
    if math.isfinite(float(primary.get("p") if primary.get("p") is not None else math.nan)):
        doc.append(("p", f"Primary test: {primary['a']} vs {primary['b']}, exact p = {p_text(primary['p'])} "
                         f"(χ² approximation {p_text(primary.get('p_chi2'))}; {int(primary['splits'])} splits)."))
    return doc
