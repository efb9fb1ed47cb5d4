"""Report blocks of the budget ladder (SPEC §8.1): the arms and contrasts at every rung, the gap's
stability (the gate), the compute-matched view, and every endpoint's skill."""
from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from .budget import samples_text, share_text
from .report_render import Block, cell, levels, select


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
    """The gate: the primary contrast's estimates per rung, its change over the last two rungs, the
    per-run plateau check of the last rung, and any labelled extrapolation."""
    table = t.get("gap_stability", pd.DataFrame())
    if table.empty:
        return []
    delta = v["delta"]
    doc: list[Block] = [("h", 3, "Gap stability (the gate)"),
                        ("p", f"A contrast is stable when its estimate at the last two rungs differs by less than "
                              f"delta/2 = {delta * 50:.1f} points and every compared run passed the plateau check on "
                              f"the last rung's curve ({v['convergence_rule']}). With a single rung it cannot be "
                              "assessed, and the verdict is not decided.")]
    s = table.copy()
    s["last change"] = [f"{x * 100:+.1f} points" if pd.notna(x) else "n/a" for x in s["change"]]
    s["runs plateaued"] = [f"{a} of {b}" for a, b in zip(s["runs_plateaued"], s["runs"])]
    doc.append(("table", select(s, {"strategy": "strategy", "versus": "versus", "trajectory": "estimate per rung",
                                    "last change": "change over the last two rungs", "direction": "direction",
                                    "runs plateaued": "runs plateaued (last rung)", "stable": ("stable", "yesno")})))
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
                                 "outcome": "outcome"}))]


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
