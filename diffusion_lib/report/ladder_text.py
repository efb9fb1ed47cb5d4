"""Report blocks of the budget ladder (SPEC §8.1): the arms and contrasts at every rung, the gap's
stability (the gate), the compute-matched view, and every endpoint's skill."""
from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from ..settings.budget import samples_text, share_text
from .render import Block, cell, levels, select



def plateau_scope(v: Mapping[str, Any]) -> str:
    """Where the verdict's plateau check reads (SPEC §8.1): each arm's seed-mean validation curve,
    on the constant-lr trunk up to the last rung's branch point under ``wsd`` (never a decay
    segment), else over the run's last evaluations; per-run checks gate only a win."""
    until = v.get("plateau_until")
    where = (f"on the constant-lr trunk up to step {until:,} (no decay segment is read)" if until
             else "over each run's last evaluations")
    return (f"read on each arm's mean curve over seeds {where}; the per-run checks are reported beside it, and "
            "only a 'mining helps' verdict also asks every compared run to pass its own")


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
    the paired change over the last two informative rungs with its CI, and any labelled extrapolation."""
    table = t.get("gap_stability", pd.DataFrame())
    if table.empty:
        return []
    delta = v["delta"]
    doc: list[Block] = [("h", 3, "Gap stability (the gate)"),
                        ("p", "Only informative rungs count: those where every run of both arms beats the "
                              "per-entry-mean predictor by at least 5% (skill) and none is unstable; the others stay in "
                              "the tables and the figure, labelled. Over the last two informative rungs each seed's "
                              "change of log MSE is paired (a seed's rungs share its trunk) and the arms' mean changes "
                              f"are differenced (Welch): the contrast is stable when that change is below delta/2 = "
                              f"{delta / 2:.3f} and its 95% CI lies within ±{delta:.2f} (log scale). The arms must "
                              f"also pass the plateau check ({v['convergence_rule']}, {plateau_scope(v)}). Fewer than "
                              "two informative rungs: not decided.")]
    s = table.copy()
    s["last change"] = [f"{x:+.3f} ({lo:+.3f} to {hi:+.3f})" if pd.notna(x) else "n/a"
                        for x, lo, hi in zip(s["change"], s["change_ci_low"], s["change_ci_high"])]
    doc.append(("table", select(s, {"strategy": "strategy", "versus": "versus", "trajectory": "estimate per rung",
                                    "informative_rungs": "informative rungs",
                                    "last change": "change of log ratio, last two informative rungs (95% CI)",
                                    "direction": "direction", "stable": ("stable", "yesno")})))
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
