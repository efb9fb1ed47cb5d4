"""The stability study in the report (issue 44): its section of report.md and its figure.

The figure, drawn from the cached ``stability_km`` and ``stability_shares`` tables. Left: the share
of runs still stable against the training step (Kaplan-Meier, a step curve per group with its runs
as ticks where they were censored) at the primary pair's learning rate, every group there (the
arms and the controls). Right: the share of runs that became unstable against the learning rate,
one line per arm (its exact 95% interval as error bars; the arms side by side at each rate), a
control as a point of its own: where each arm's stable range ends.

The section: the finding's sentence (budget included), the declared tests with exact and Holm
p-values, what each control's reading means, each arm's stable range, and the counts per arm and rate.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analysis.statistics import p_text
from .render import Block, select
from .style import apply_theme, nothing_to_plot, plain_log_ticks, save, strategy_styles, tag

DODGE = 1.04  # the factor between neighbouring arms' points at one learning rate (log axis)


def _primary_lr(shares: pd.DataFrame, verdict: Mapping[str, Any]) -> float | None:
    primary = ((verdict.get("stability") or {}).get("primary") or {})
    rows = shares[shares["strategy"] == primary.get("b")]
    if len(rows):
        return float(rows["lr"].iloc[0])
    counts = shares["lr"].value_counts()
    return float(counts.index[0]) if len(counts) else None


def plot_stability(km: pd.DataFrame, shares: pd.DataFrame, runs: pd.DataFrame, verdict: Mapping[str, Any],
                   path: str | Path, options: Mapping[str, Any] = {}) -> plt.Figure | None:
    """Kaplan-Meier curves at the primary learning rate and the unstable share against the rate."""
    if nothing_to_plot(km, ["step", "stable"], path, options, "stability"):
        return None
    apply_theme(options)
    looks = strategy_styles(options, shares["arm"])
    lr = _primary_lr(shares, verdict)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    near = km[np.isclose(km["lr"], lr)] if lr is not None else km
    controls = set(shares["arm"]) - {a for a, g in shares.groupby("arm") if g["lr"].nunique() > 1}
    for arm, d in near.groupby("arm", sort=False):
        look = looks[arm]
        n = int(d["at_risk"].iloc[0])
        tag(left.step(d["step"], d["stable"], where="post", color=look.color, lw=2,
                      label=f"{arm} (lr {d['lr'].iloc[0]:g}, {n} runs)"), arm)
        own = runs[(runs["arm"] == arm) & np.isclose(runs["lr"], d["lr"].iloc[0]) & ~runs["event"].astype(bool)]
        if len(own):  # censored runs: still stable when last watched
            at = d.set_index("step")["stable"]
            heights = [float(at[at.index <= t].iloc[-1]) for t in own["time"]]
            tag(left.scatter(own["time"], heights, marker="|", s=120, color=look.color, zorder=3), arm)
    left.set(xlabel="training step", ylabel="share of runs still stable", ylim=(-0.04, 1.06),
             xlim=(0, float(km["step"].max()) * 1.04),
             title=f"Kaplan-Meier at lr {lr:g}" if lr is not None else "Kaplan-Meier")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, fontsize=8, frameon=False)
    arms = list(dict.fromkeys(shares["arm"]))
    for i, (arm, d) in enumerate(shares.groupby("arm", sort=False)):
        look = looks[arm]
        d = d.sort_values("lr")
        y = d["share"].to_numpy(float)
        x = d["lr"].to_numpy(float) * DODGE ** (arms.index(arm) - (len(arms) - 1) / 2)  # arms side by side
        err = [np.maximum(y - d["ci_low"].to_numpy(float), 0), np.maximum(d["ci_high"].to_numpy(float) - y, 0)]
        style = {"ls": "none"} if arm in controls else {"ls": "-"}
        tag(right.errorbar(x, y, yerr=err, color=look.color, marker=look.marker, capsize=4, lw=1.5,
                           label=arm, **style).lines, arm)
    right.set_xscale("log")
    plain_log_ticks(right, "x")
    right.set(xlabel="learning rate (constant after warm-up)", ylabel="share of runs that became unstable",
              ylim=(-0.04, 1.06), title="Unstable share per learning rate (exact 95% CI)")
    lrs = shares["lr"].astype(float)
    right.set_xlim(lrs.min() / 1.3, lrs.max() * 1.3)
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=3, fontsize=8, frameon=False)
    return save(fig, path, options)


def _lr(value: Any) -> str:
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{float(value):g}"


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
        label = {"first": f"like {first}", "second": f"like {second}"}
        doc.append(("p", "What the controls say (each read by the rule declared before the study ran):"))
        doc.append(("ul", [f"`{r['control']}`: {label.get(r['like'], r['like'] or 'not run')}: {r['means']}"
                           for r in readings]))
    ranges = pd.DataFrame(found.get("stable_range") or [])
    if not ranges.empty:
        doc.append(("p", "Stable learning-rate range per arm (the largest rate at which none of its runs became "
                         "unstable with every smaller rate stable too, the smallest at which one did, and the "
                         "one-sided 95% upper bound on a run's risk at the largest stable rate):"))
        doc.append(("ul", [f"{r['arm']}: stable to {_lr(r['largest_stable_lr'])}, unstable from "
                           f"{_lr(r['smallest_unstable_lr'])}"
                           + (f" (0 of {r['runs_at_largest']} runs: risk up to {r['risk_upper_95']:.0%})"
                              if r.get("runs_at_largest") else "") for r in ranges.to_dict("records")]))
    shares = t.get("stability_shares", pd.DataFrame())
    if not shares.empty:
        doc.append(("table", select(shares, {"arm": "arm", "lr": "lr", "runs": "runs", "unstable": "unstable",
                                             "share": ("share", "pct"), ("ci_low", "ci_high"): ("exact 95% CI", "ci_pct"),
                                             "first_unstable": "first unstable at", "median_time": "median time",
                                             "watched_to": "watched to"})))
    doc.append(("fig", "stability", "Training stability"))
    primary = found.get("primary") or {}
    if primary.get("p") is not None:
        doc.append(("p", f"Primary test: {primary['a']} vs {primary['b']}, exact p = {p_text(primary['p'])} "
                         f"(χ² approximation {p_text(primary.get('p_chi2'))}; {int(primary.get('splits') or 0)} splits)."))
    return doc
