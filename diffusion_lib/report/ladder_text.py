"""Report blocks of the budget ladder (method §8.1): the arms and contrasts at every rung, the gap's
trend per doubling and whether the answer is final (the gate), the compute-matched view, and every
endpoint's skill."""
from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from ..settings.budget import samples_text, share_text
from .render import Block, cell, levels, select



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
