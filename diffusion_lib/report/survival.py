"""The stability study in the report (issue 44): its section of report.md and its figure.

The figure, drawn from the cached ``stability_km`` and ``stability_shares`` tables. Left: the share
of runs still stable against the training step (Kaplan-Meier, a step curve per group with its runs
as ticks where they were censored) of every group the declared tests name, each at its own learning
rate (the arms and the controls). Right: the share of runs that became unstable against the learning
rate, one line per arm (its exact 95% interval as error bars; the arms side by side at each rate), a
control as a point of its own: where each arm's stable range ends; with no arm tried at two rates,
one point per group.

The section: the finding's sentence (budget included), the declared tests with exact and Holm
p-values, what each control's reading means, each arm's stable range, and the counts per arm and rate.
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
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    near = _shown(km, verdict)
    controls = set(shares["arm"]) - {a for a, g in shares.groupby("arm") if g["lr"].nunique() > 1}
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
    if controls == set(shares["arm"]):  # no arm tried at two rates: one point per group, side by side
        _shares_by_group(right, shares, looks)
    else:
        _shares_by_rate(right, shares, looks, controls)
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


def _shares_by_rate(ax: plt.Axes, shares: pd.DataFrame, looks: Mapping[str, Any], controls: set[str]) -> None:
    """Each arm's unstable share against the learning rate (log x, the arms side by side at a rate);
    a control at its one rate as a point."""
    arms = list(dict.fromkeys(shares["arm"]))
    for arm, d in shares.groupby("arm", sort=False):
        d = d.sort_values("lr")
        x = d["lr"].to_numpy(float) * DODGE ** (arms.index(arm) - (len(arms) - 1) / 2)
        _bars(ax, x, d, looks[arm], arm, ls="none" if arm in controls else "-")
    ax.set_xscale("log")
    rates = sorted(set(shares["lr"].astype(float)))
    ax.set_xticks(rates, [f"{r:g}" for r in rates], fontsize=8)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlim(rates[0] / 1.3, rates[-1] * 1.3)
    ax.set(xlabel="learning rate (constant after warm-up)", title="Unstable share per learning rate (exact 95% CI)")


def _lr(value: Any) -> str:
    return "none tried" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{float(value):g}"


def _range_line(r: Mapping[str, Any]) -> str:
    rates = ", ".join(f"{x:g}" for x in r["rates"])
    text = (f"{r['arm']} (rates tried: {rates}): stable at every rate tried up to {_lr(r['largest_stable_lr'])}, "
            f"unstable from {_lr(r['smallest_unstable_lr'])}")
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
        doc.append(("table", select(shares, {"arm": "arm", "rate": ("lr", "text"), "runs": "runs",
                                             "unstable": "unstable", "share": ("share", "share"),
                                             ("ci_low", "ci_high"): ("exact 95% CI", "ci_share"),
                                             "first_unstable": ("first unstable at", "int"),
                                             "median_time": ("median time", "int"), "watched_to": ("watched to", "int")})))
    doc.append(("fig", "stability", "Training stability"))
    primary = found.get("primary") or {}
    if math.isfinite(float(primary.get("p") if primary.get("p") is not None else math.nan)):
        doc.append(("p", f"Primary test: {primary['a']} vs {primary['b']}, exact p = {p_text(primary['p'])} "
                         f"(χ² approximation {p_text(primary.get('p_chi2'))}; {int(primary['splits'])} splits)."))
    return doc
