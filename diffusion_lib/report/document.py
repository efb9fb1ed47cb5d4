"""The study's report, leading with the answer: built once as a list of blocks, written as Markdown
(``report.md``) and as a self-contained HTML page (``report.html``, figures embedded) that the
Snakemake HTML report shows on its own page.

Order: the verdict paragraph (its sentence names the budget; the inner-loop flip, if any) and the
scenario it supports; the budget ladder (each arm and contrast per rung, the figure) and the gap's
stability; the comparison at the full budget (training scale against the paper's, forest plot,
primary contrasts); what is reported beside the verdict and never overrides it (interpretation
lines, cost, the compute-matched rungs, residuals, skill, secondary endpoints with Holm
correction); convergence; learning curves; per-strategy numbers; diagnostics; landscape;
test-time compute; ablations (each swept strategy's overrides, the gap between bases at each swept
value, every grid point's MSE; :mod:`diffusion_lib.report.ablation`); environment.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..settings.budget import PAPER_BATCH, PAPER_STEPS, share_text
from .ablation import ablation_blocks
from .survival import stability_blocks as stability_study_blocks
from .ladder import compute_matched_blocks, ladder_blocks, plateau_scope, skill_blocks, stability_blocks
from .render import Block, levels, select, to_html, to_markdown  # noqa: F401 (writers re-exported)
from ..analysis.statistics import equivalence_level, level_text
from ..analysis.tables import SET_LABELS

PAPER_SCALE = {"steps": PAPER_STEPS, "batch_size": PAPER_BATCH, "lr": 1e-4, "schedule": "constant"}


def _every(n: Any) -> str:
    return "step" if n == 1 else f"{n} steps"


def _seed_counts(seeds: Any) -> str:
    if isinstance(seeds, Mapping):
        return ", ".join(f"{name} {n}" for name, n in seeds.items())
    return str(seeds)


def _scale_lines(training: Mapping[str, Any]) -> list[str]:
    steps, batch = training.get("steps"), training.get("batch_size")
    if not steps or not batch:
        return []
    samples = steps * batch
    paper = PAPER_SCALE["steps"] * PAPER_SCALE["batch_size"]
    sched = training.get("lr_schedule", {}) or {}
    kind = sched.get("kind", "constant")
    text = f"{kind}"
    if kind != "constant":
        text += f" (warm-up {sched.get('warmup_steps', 0)} steps, floor {sched.get('min_lr_ratio', 0):g}×lr)"
    return [f"Training scale: {steps:,} steps × batch {batch:,} = {samples:,} training samples per run, "
            f"{share_text(samples / paper)} of the paper's {PAPER_SCALE['steps']:,} × {PAPER_SCALE['batch_size']:,} = "
            f"{paper:,} (IRED; method §9).",
            f"Learning rate {training.get('lr'):g}, schedule {text}; paper: {PAPER_SCALE['lr']:g}, constant. "
            f"EMA updated every {_every(training.get('ema_update_every'))}. Seeds (training runs) per strategy: "
            f"{_seed_counts(training.get('seeds'))}.",
            "A verdict at this scale is a verdict about this scale; config/paper.yaml runs the paper's.",
            *_margin_lines(training)]


def _margin_lines(training: Mapping[str, Any]) -> list[str]:
    """The recipe's stability margin (config ``stability_margin``) beside the study's longest trunk,
    and, in a sentence of its own, what was seen at the larger lr the recipe rejected."""
    margin, trunk = training.get("stability_margin") or {}, training.get("longest_trunk")
    seen = {m: s for m, s in (margin.get("seen_stable") or {}).items()}
    lines = []
    if seen and trunk:
        def one(mode: str, steps: Any) -> str:
            return f"{mode} not measured" if not steps else f"{mode} {steps:,} ({steps / trunk:.1f}× this trunk)"
        lines.append(f"Stability margin: the longest constant-lr trunk is {trunk:,} steps; each mode was seen stable "
                     "to " + ", ".join(one(m, s) for m, s in seen.items())
                     + (f" ({margin['source']})" if margin.get("source") else "") + ".")
    finding = _unstable_finding(margin.get("seen_unstable") or {}, training.get("lr"))
    return lines + ([finding] if finding else [])


def _unstable_finding(seen: Mapping[str, Any], lr: Any) -> str:
    """``stability_margin.seen_unstable`` as what it is: a finding about the recipe's stability."""
    first = seen.get("first_unstable") or {}
    if not seen.get("lr") or not first:
        return ""
    broke = [m for m, step in first.items() if step]
    held = [m for m, step in first.items() if not step]
    if not broke:
        return f"At lr {seen['lr']:g} every mode was also seen stable over a {seen['trunk']:,}-step trunk."
    text = (f"Recipe finding (stability, not accuracy): at lr {seen['lr']:g} the "
            + " and ".join(f"{m} (first at step {first[m]:,})" for m in broke) + " runs became unstable")
    if held:
        text += f", while the {' and '.join(held)} runs stayed stable over the whole {seen['trunk']:,}-step trunk"
    return text + (f"; this study trains at lr {lr:g}. That says which recipe each mode tolerates, not which "
                   "reaches the lower error.")


def _verdict_paragraph(v: Mapping[str, Any]) -> str:
    """``**Verdict: <outcome>.** At <budget>: ...`` followed by the inner-loop flip sentences."""
    sentence, outcome = v["sentence"], v["outcome"]
    name = outcome.removesuffix(" at this budget")
    for lead in (name + ":", name + " at "):  # the bold lead already names the outcome
        if sentence.lower().startswith(lead):
            sentence = ("at " if lead.endswith(" at ") else "") + sentence[len(lead):].strip()
            sentence = sentence[:1].upper() + sentence[1:]
            break
    return " ".join([f"**Verdict: {outcome}.** {sentence}", *v.get("inner_loop_flips", [])])


def failure_blocks(v: Mapping[str, Any], t: Mapping[str, pd.DataFrame]) -> list[Block]:
    """Inference failures per arm, and the primary contrast without them and on the per-run median."""
    runs, sens = t.get("failures", pd.DataFrame()), t.get("failure_sensitivity", pd.DataFrame())
    if runs.empty:
        return []
    info = v.get("failures") or {}
    doc: list[Block] = [("p", f"Inference failures (a problem whose primary-endpoint MSE exceeds "
                              f"{info.get('factor', 10):g}× its run's median problem MSE), per arm; the primary "
                              "contrast recomputed without them (a sensitivity) and on each run's median problem MSE "
                              "(the declared robust companion endpoint). Neither decides the verdict.")]
    arms = pd.DataFrame(info.get("arms") or [])
    if not arms.empty:
        doc.append(("table", select(arms, {"strategy": "strategy", "runs": "runs",
                                           "runs_with_failures": "runs with failures", "failures": "failures",
                                           "worst_ratio": "worst / its run's median"})))
    if not sens.empty:
        doc.append(("table", select(sens, {"strategy": "strategy", "versus": "versus", "variant": "endpoint",
                                           "estimate": ("MSE change", "pct"),
                                           ("ci_low", "ci_high"): (f"{levels(sens)} CI", "ci_pct"),
                                           "outcome": "label", "primary_estimate": ("primary", "pct"),
                                           "agrees": ("same side as the primary", "yesno")})))
    doc += [("p", "**The companion endpoints disagree with the primary one:** " + "; ".join(info["disagreements"])
             + ".")] if info.get("disagreements") else []
    return doc


def build_report(v: Mapping[str, Any], t: Mapping[str, pd.DataFrame], figures: Mapping[str, str]) -> list[Block]:
    """The report's blocks from the cached verdict ``v`` and tables ``t`` (see the module docstring)."""
    doc: list[Block] = [("h", 1, f"IRED negative-mining study: {v['name']}"), ("p", _verdict_paragraph(v))]
    scenario = v.get("scenario")
    doc.append(("p", f"Scenario of the seed design the data support: **{scenario}**." if scenario else
                "The data do not support any of the seed design's scenarios (adversarial wins, random best, "
                "baseline best, training instability) yet: one is named only for a final answer, from all contrasts "
                "together."))
    doc.append(("p", f"Primary endpoint, declared in the config before running: **{v['primary']['label']}**, "
                     f"relative change of the mean over seeds versus the baseline; equivalence margin ±{v['delta']:.0%}; "
                     f"{level_text(v['confidence'])} confidence intervals (Welch with the delta method on the log ratio; "
                     f"Bonferroni over the {len(v['contrasts'])} mining strategies compared"
                     + (f" and the {v['looks']} looks until_stable took" if v.get("looks", 1) > 1 else "")
                     + "). Plateau check: "
                     f"{v['convergence_rule']}, {plateau_scope(v)}."))
    if v.get("uninformative"):
        doc.append(("p", "Uninformative at this budget (best arm's skill versus the per-entry-mean predictor below "
                         "5%): " + "; ".join(v["uninformative"]) + "."))
    if v.get("growth"):
        doc.append(("p", v["growth"]["text"] + "."))
    doc += ladder_blocks(v, t) + stability_blocks(v, t)
    doc.append(("h", 2, "The comparison at the full budget"))
    doc.append(("ul", _scale_lines(v.get("training", {}))))
    if v.get("missing") or v.get("missing_rungs"):
        doc.append(("p", "**Missing runs and rung models** (failed or not run; excluded from every statistic): "
                    + ", ".join([*v.get("missing", []), *v.get("missing_rungs", [])])))
    doc.append(("fig", "forest", "Forest plot: relative MSE change versus the baseline"))
    if v["contrasts"]:
        primary = pd.DataFrame(v["contrasts"])
        doc.append(("table", select(primary, {"strategy": "strategy", "versus": "versus",
                                              "estimate": ("MSE change", "pct"),
                                              ("ci_low", "ci_high"): (f"{level_text(v['confidence'])} CI (decisions)",
                                                                      "ci_pct"),
                                              ("eq_low", "eq_high"): (f"{level_text(equivalence_level(v['confidence']))} CI "
                                                                      "(equivalence)", "ci_pct"),
                                              "p": ("Welch p", "p"), "n_a": "seeds",
                                              "n_b": "baseline seeds", "outcome": "outcome"})))
    if v.get("reasons"):
        doc.append(("ul", v["reasons"]))
    doc += failure_blocks(v, t)

    doc.append(("h", 2, "Beside the verdict (reported, never overriding it)"))
    doc += [("ul", v["interpretation"])] if v.get("interpretation") else []
    cost = t.get("cost", pd.DataFrame())
    if not cost.empty:
        doc.append(("p", "Training cost per step: compute seconds (process CPU time on a CPU, wall time on a GPU) and "
                         "matmul FLOPs counted by torch.profiler."))
        doc.append(("table", select(cost, {"strategy": "strategy", "cost_seconds_per_step": "s / step",
                                           "time_ratio": "× baseline time", "flops_per_step": "FLOP / step",
                                           "flops_ratio": "× baseline FLOPs"})))
    doc += compute_matched_blocks(v, t)
    strategies = t.get("strategies", pd.DataFrame())
    trivial = v.get("trivial_mse", {})
    if not strategies.empty:
        sel = strategies[(strategies["set"] == "test_id") & (strategies["inner_steps"] == v["default_inner"])]
        doc.append(("p", f"Reconstruction residual ‖AŶ − I‖_F (ID test, {v['default_inner']} inner steps), mean over "
                         "seeds with its 95% CI; diverged runs per strategy in the last column."))
        doc.append(("table", select(sel, {"strategy": "strategy", "residual_mean_mean": "residual",
                                          ("residual_mean_ci_low", "residual_mean_ci_high"): "95% CI",
                                          "runs": "runs", "diverged": "diverged"})))
    doc += skill_blocks(v, t)
    contrasts = t.get("contrasts", pd.DataFrame())
    if not contrasts.empty:
        level = f"{1 - v['alpha']:.0%}"
        sec = contrasts[contrasts["endpoint_role"] == "secondary"]
        doc.append(("h", 3, f"Secondary endpoints ({level} CI; Holm-adjusted p within each contrast, and over the "
                            "whole primary family)"))
        doc.append(("table", select(sec, {"strategy": "strategy", "versus": "versus", "role": "contrast",
                                          "label": "endpoint", "estimate": ("MSE change", "pct"),
                                          ("ci_low", "ci_high"): (f"{level} CI", "ci_pct"), "p": ("p", "p"),
                                          "p_holm": ("p (Holm)", "p"),
                                          "p_holm_family": ("p (Holm, primary family)", "p"),
                                          "outcome": "outcome"})))

    doc.append(("h", 2, "Convergence"))
    conv = t.get("convergence", pd.DataFrame())
    if not conv.empty:
        doc.append(("p", f"Plateau check: {v['convergence_rule']}, {plateau_scope(v)}. `fitted change`: the fitted "
                         "line's change over those evaluations on the mean curve; `runs passing`: the same check on "
                         "each run's own curve."))
        conv = conv.assign(slope_text=[f"{a:+.3f} ({lo:+.3f} to {hi:+.3f})" if pd.notna(a) else "n/a"
                                       for a, lo, hi in zip(conv["slope"], conv["slope_low"], conv["slope_high"])])
        doc.append(("table", select(conv, {"strategy": "strategy", "converged": ("plateau (mean curve)", "yesno"),
                                            "slope_text": "slope of log MSE (95% CI)",
                                            "tail_change": ("fitted change", "pct"),
                                            "runs_converged": "runs passing", "runs": "runs"})))
    doc.append(("fig", "curves", "Learning curves"))
    doc.append(("fig", "compute", "Validation MSE against training compute"))

    doc.append(("h", 2, "Test MSE per strategy (mean over seeds, 95% t CI)"))
    doc.append(("p", "Reference predictors: " + "; ".join(
        f"{SET_LABELS.get(s, s)}: zeros {r['zeros']:.4f}, per-entry mean {r['entry_mean']:.4f}"
        for s, r in trivial.items()) + ". Skill = 1 − MSE / MSE(per-entry mean). IRED paper: 0.0096 (ID)."))
    if not strategies.empty:
        sel = strategies[strategies["inner_steps"].isin([0, v["default_inner"]])]
        doc.append(("table", select(sel, {"strategy": "strategy", "set": "set", "inner_steps": "inner steps",
                                           "mse_n": "seeds", "mse_mean": "MSE", ("mse_ci_low", "mse_ci_high"): "95% CI",
                                           "mse_raw_model_mean": "MSE, raw model", "skill_mean": ("skill", "pct"),
                                           "rel_err_mean_mean": "relative error",
                                           "infer_ms_per_problem": "ms / problem"})))
    doc.append(("fig", "mse", "Test MSE per strategy"))

    doc.append(("h", 2, "Diagnostics"))
    diag = t.get("diagnostics", pd.DataFrame())
    if not diag.empty:
        doc.append(("p", "Means over seeds of the last third of training; `inference acceptance`: share of accepted "
                         f"inner opt steps at inference (ID test, {v['default_inner']} inner steps)."))
        doc.append(("table", select(diag, {"strategy": "strategy", "grad_norm": "gradient norm",
                                            "clip_frac": ("clipped steps", "share"), "energy_gap": "E⁻ − E⁺",
                                            "saturated_frac": ("saturated pairs", "share"),
                                            "mine_accept": ("mining acceptance", "share"),
                                            "infer_accept": ("inference acceptance", "share")})))
    doc.append(("fig", "diagnostics", "Training diagnostics"))
    land = t.get("landscape", pd.DataFrame())
    if not land.empty:
        summary = land.groupby(["strategy", "negative"], sort=False)["rank_acc"].mean().unstack("negative")
        summary = summary[list(dict.fromkeys(land["negative"]))].reset_index()
        doc.append(("p", "Energy-ranking accuracy P(E⁺ < E⁻) averaged over t and seeds, per probe (50% is chance; "
                         "the random and near-miss probes give every model the same negatives, the adversarial probe "
                         "descends each model's own energy):"))
        doc.append(("table", select(summary, {c: (c, "text" if c == "strategy" else "share") for c in summary})))
    doc.append(("fig", "landscape", "Energy landscape"))

    doc.append(("h", 2, "Test-time compute (MSE against inference inner steps)"))
    tt = t.get("test_time", pd.DataFrame())
    if not tt.empty:
        wide = tt.pivot_table(index=["strategy", "set"], columns="inner_steps", values="mse_mean").reset_index()
        wide.columns = [f"{c} steps" if isinstance(c, (int, np.integer)) else c for c in wide.columns]
        doc.append(("table", wide))
        doc.append(("p", "IRED paper, Table 2 (matrix inverse, n = 20): 0.0096 → 0.0095 on the training difficulty "
                         "and 0.2110 → 0.2063 on the harder one, from 10 to 40 inference steps."))
    doc.append(("fig", "test_time", "Test-time compute"))
    doc += ablation_blocks(v, t, figures)
    doc += stability_study_blocks(v, t, figures)
    doc.append(("h", 2, "Files for papers"))
    doc.append(("p", "Every figure is in `figures/` as the PNG embedded here and, for each other format in "
                     "`report.format` (e.g. `[png, pdf]`), a vector copy next to it; the primary and secondary "
                     "contrasts and every endpoint per strategy are LaTeX (booktabs) tables in "
                     "`tables/contrasts_primary.tex`, `tables/contrasts_secondary.tex` and `tables/endpoints.tex`, "
                     "their captions naming the budget."))
    doc.append(("h", 2, "Environment"))
    doc.append(("p", f"torch {', '.join(v.get('torch', []))}; device(s): {', '.join(v.get('devices', []))}."))
    return doc


