"""The study's report, leading with the answer: built once as a list of blocks, written as Markdown
(``report.md``) and as a self-contained HTML page (``report.html``, figures embedded) that the
Snakemake HTML report shows on its own page.

Order: the verdict in one sentence and the scenario it supports; the training scale against the
paper's; the forest plot and the primary contrasts; what is reported beside the verdict and never
overrides it (cost, compute-matched view, residuals, diverged runs, secondary endpoints with Holm
correction); convergence; learning curves; per-strategy numbers; diagnostics; landscape;
test-time compute; ablations; environment.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from .tables import SET_LABELS

PAPER_SCALE = {"steps": 100_000, "batch_size": 2048, "lr": 1e-4, "schedule": "constant"}
Block = tuple  # ("h", level, text) | ("p", text) | ("ul", [text]) | ("table", DataFrame) | ("fig", key, alt)


def _fmt(x: Any, digits: int = 4) -> str:
    if isinstance(x, (float, np.floating)):
        return f"{x:.{digits}g}" if math.isfinite(x) else "n/a"
    if x is None:
        return "n/a"
    return str(x)


def _pct(x: Any) -> str:
    return f"{x:+.1%}" if isinstance(x, (int, float, np.floating)) and math.isfinite(x) else "n/a"


def _ci(lo: Any, hi: Any) -> str:
    return f"{_pct(lo)} to {_pct(hi)}"


def _select(df: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    """``df`` restricted to ``columns`` (source -> header) that exist, renamed."""
    keep = {k: v for k, v in columns.items() if k in df.columns}
    return df[list(keep)].rename(columns=keep)


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
            f"{samples / paper:.2%} of the paper's {PAPER_SCALE['steps']:,} × {PAPER_SCALE['batch_size']:,} = "
            f"{paper:,} (IRED; SPEC §9).",
            f"Learning rate {training.get('lr'):g}, schedule {text}; paper: {PAPER_SCALE['lr']:g}, constant. "
            f"EMA updated every {_every(training.get('ema_update_every'))}. Seeds (training runs) per strategy: "
            f"{_seed_counts(training.get('seeds'))}.",
            "A verdict at this scale is a verdict about this scale; config/paper.yaml runs the paper's."]


def build_report(v: Mapping[str, Any], t: Mapping[str, pd.DataFrame], figures: Mapping[str, str]) -> list[Block]:
    """The report's blocks from the cached verdict ``v`` and tables ``t`` (see the module docstring)."""
    doc: list[Block] = [("h", 1, f"IRED negative-mining study: {v['name']}")]
    sentence = v["sentence"]
    if sentence.lower().startswith(v["outcome"] + ":"):  # the bold lead already names the outcome
        sentence = sentence[len(v["outcome"]) + 1:].strip()
        sentence = sentence[:1].upper() + sentence[1:]
    doc.append(("p", f"**Verdict: {v['outcome']}.** {sentence}"))
    scenario = v.get("scenario")
    doc.append(("p", f"Scenario of the seed design the data support: **{scenario}**." if scenario else
                "The data do not support any of the seed design's scenarios (adversarial wins, random best, "
                "baseline best, training instability) yet."))
    doc.append(("p", f"Primary endpoint, declared in the config before running: **{v['primary']['label']}**, "
                     f"relative change of the mean over seeds versus the baseline; equivalence margin ±{v['delta']:.0%}; "
                     f"{v['confidence']:.1%} confidence intervals (Welch with the delta method on the log ratio; "
                     f"Bonferroni over the {len(v['contrasts'])} mining strategies compared). Convergence gate: "
                     f"{v['convergence_rule']}, on the mean curve over seeds."))
    doc.append(("ul", _scale_lines(v.get("training", {}))))
    if v.get("missing"):
        doc.append(("p", "**Missing runs** (failed or not run; excluded from every statistic): "
                    + ", ".join(v["missing"])))
    doc.append(("fig", "forest", "Forest plot: relative MSE change versus the baseline"))
    if v["contrasts"]:
        primary = pd.DataFrame(v["contrasts"])
        primary["change"] = primary["estimate"].map(_pct)
        primary["CI"] = [_ci(a, b) for a, b in zip(primary["ci_low"], primary["ci_high"])]
        doc.append(("table", _select(primary, {"strategy": "strategy", "versus": "versus", "change": "MSE change",
                                               "CI": f"{v['confidence']:.1%} CI", "p": "Welch p", "n_a": "seeds",
                                               "n_b": "baseline seeds", "outcome": "outcome",
                                               "seeds_needed": "seeds per arm to decide"})))
    if v.get("reasons"):
        doc.append(("ul", v["reasons"]))
    doc += [("ul", v["inner_loop_flips"])] if v.get("inner_loop_flips") else []

    doc.append(("h", 2, "Beside the verdict (reported, never overriding it)"))
    cost = t.get("cost", pd.DataFrame())
    if not cost.empty:
        doc.append(("p", "Training cost per step: compute seconds (process CPU time on a CPU, wall time on a GPU) and "
                         "matmul FLOPs counted by torch.profiler."))
        doc.append(("table", _select(cost, {"strategy": "strategy", "cost_seconds_per_step": "s / step",
                                            "time_ratio": "× baseline time", "flops_per_step": "FLOP / step",
                                            "flops_ratio": "× baseline FLOPs"})))
    matched = t.get("compute_matched", pd.DataFrame())
    if not matched.empty:
        doc.append(("p", "Compute-matched view: validation MSE (EMA model) of every run read at the cheapest "
                         "strategy's total training compute, with the relative change versus the baseline (95% CI). "
                         "It reads validation, not test, MSE, and a run read part-way is not a run trained for that "
                         "budget."))
        m = matched.copy()
        m["change"] = m["estimate"].map(_pct)
        m["CI"] = [_ci(a, b) for a, b in zip(m["ci_low"], m["ci_high"])]
        doc.append(("table", _select(m, {"measure": "compute measure", "strategy": "strategy", "budget": "budget",
                                         "budget_fraction": "fraction of its training", "runs_at_budget": "runs read",
                                         "val_mse_mean": "val MSE at budget", "change": "change vs baseline",
                                         "CI": "95% CI"})))
    strategies = t.get("strategies", pd.DataFrame())
    trivial = v.get("trivial_mse", {})
    if not strategies.empty:
        sel = strategies[(strategies["set"] == "test_id") & (strategies["inner_steps"] == v["default_inner"])]
        doc.append(("p", f"Reconstruction residual ‖AŶ − I‖_F (ID test, {v['default_inner']} inner steps), mean over "
                         "seeds; predicting zeros gives √n (4.47 for n = 20). Diverged runs per strategy in the last "
                         "column."))
        doc.append(("table", _select(sel, {"strategy": "strategy", "residual_mean_mean": "residual",
                                           "residual_mean_ci_low": "95% CI low", "residual_mean_ci_high": "95% CI high",
                                           "runs": "runs", "diverged": "diverged"})))
    contrasts = t.get("contrasts", pd.DataFrame())
    if not contrasts.empty:
        sec = contrasts[contrasts["endpoint_role"] == "secondary"].copy()
        sec["change"] = sec["estimate"].map(_pct)
        sec["CI"] = [_ci(a, b) for a, b in zip(sec["ci_low"], sec["ci_high"])]
        doc.append(("h", 3, "Secondary endpoints (95% CI; Holm-adjusted p within each contrast)"))
        doc.append(("table", _select(sec, {"strategy": "strategy", "versus": "versus", "role": "contrast",
                                           "label": "endpoint", "change": "MSE change", "CI": "95% CI", "p": "p",
                                           "p_holm": "p (Holm)", "outcome": "outcome"})))

    doc.append(("h", 2, "Convergence"))
    conv = t.get("convergence", pd.DataFrame())
    if not conv.empty:
        doc.append(("p", f"Gate: {v['convergence_rule']}. `tail change`: first to last of those evaluations."))
        doc.append(("table", _select(conv, {"strategy": "strategy", "converged": "converged (mean curve)",
                                            "tail_change": "tail change", "spread": "spread",
                                            "runs_converged": "runs converged", "runs": "runs"})))
    doc.append(("fig", "curves", "Learning curves"))
    doc.append(("fig", "compute", "Validation MSE against training compute"))

    doc.append(("h", 2, "Test MSE per strategy (mean over seeds, 95% t CI)"))
    doc.append(("p", "Reference predictors: " + "; ".join(
        f"{SET_LABELS.get(s, s)}: zeros {r['zeros']:.4f}, per-entry mean {r['entry_mean']:.4f}"
        for s, r in trivial.items()) + ". Skill = 1 − MSE / MSE(per-entry mean). IRED paper: 0.0096 (ID)."))
    if not strategies.empty:
        sel = strategies[strategies["inner_steps"].isin([0, v["default_inner"]])]
        doc.append(("table", _select(sel, {"strategy": "strategy", "set": "set", "inner_steps": "inner steps",
                                           "mse_n": "seeds", "mse_mean": "MSE", "mse_ci_low": "95% CI low",
                                           "mse_ci_high": "95% CI high", "mse_raw_model_mean": "MSE, raw model",
                                           "skill_mean": "skill", "rel_err_mean_mean": "relative error",
                                           "infer_ms_per_problem": "ms / problem"})))
    doc.append(("fig", "mse", "Test MSE per strategy"))

    doc.append(("h", 2, "Diagnostics"))
    diag = t.get("diagnostics", pd.DataFrame())
    if not diag.empty:
        doc.append(("p", "Means over seeds of the last third of training; `inference acceptance`: share of accepted "
                         f"inner opt steps at inference (ID test, {v['default_inner']} inner steps)."))
        doc.append(("table", _select(diag, {"strategy": "strategy", "grad_norm": "gradient norm",
                                            "clip_frac": "clipped steps", "energy_gap": "E⁻ − E⁺",
                                            "saturated_frac": "saturated pairs", "mine_accept": "mining acceptance",
                                            "infer_accept": "inference acceptance"})))
    doc.append(("fig", "diagnostics", "Training diagnostics"))
    land = t.get("landscape", pd.DataFrame())
    if not land.empty:
        summary = land.groupby(["strategy", "negative"], sort=False)["rank_acc"].mean().unstack("negative")
        doc.append(("p", "Energy-ranking accuracy P(E⁺ < E⁻) averaged over t and seeds, per probe (0.5 is chance):"))
        doc.append(("table", summary.reset_index()))
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
    ablation = t.get("ablation", pd.DataFrame())
    if not ablation.empty:
        doc.append(("h", 2, "Ablations (exploratory)"))
        doc.append(("table", _select(ablation, {"parameter": "parameter", "value": "value", "others": "others",
                                                "set": "set", "mse_mean": "MSE", "mse_ci_low": "95% CI low",
                                                "mse_ci_high": "95% CI high", "seeds": "seeds"})))
        doc += [("fig", k, f"Ablation {k[9:]}") for k in figures if k.startswith("ablation_")]
    doc.append(("h", 2, "Environment"))
    doc.append(("p", f"torch {', '.join(v.get('torch', []))}; device(s): {', '.join(v.get('devices', []))}."))
    return doc


# --------------------------------------------------------------------------- writers
def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(_fmt(x) for x in row) + " |\n" for row in df.itertuples(index=False))


def to_markdown(doc: list[Block], figure_path: Callable[[str], str], figures: Mapping[str, str] | None = None) -> str:
    """Markdown text of ``doc``; ``figure_path`` maps a figure file to the link written."""
    out = []
    for block in doc:
        kind = block[0]
        if kind == "h":
            out.append("#" * block[1] + " " + block[2] + "\n")
        elif kind == "p":
            out.append(block[1] + "\n")
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in block[1]) + "\n")
        elif kind == "table":
            out.append(_md_table(block[1]))
        elif kind == "fig" and figures and block[1] in figures:
            out.append(f"![{block[2]}]({figure_path(figures[block[1]])})\n")
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escape, then render the Markdown emphasis and code this report uses (**bold**, `code`)."""
    parts = html.escape(text).split("**")
    text = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(doc: list[Block], figures: Mapping[str, str] | None = None) -> str:
    """A self-contained HTML page of ``doc`` (figures embedded as data URIs)."""
    body = []
    for block in doc:
        kind = block[0]
        if kind == "h":
            body.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
        elif kind == "p":
            body.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            df = block[1]
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(x))}</td>" for x in row) + "</tr>"
                           for row in df.itertuples(index=False))
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "fig" and figures and block[1] in figures and Path(figures[block[1]]).exists():
            path = Path(figures[block[1]])
            mime = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}.get(path.suffix[1:], "image/png")
            data = base64.b64encode(path.read_bytes()).decode()
            if mime == "application/pdf":
                body.append(f'<p><a download="{path.name}" href="data:{mime};base64,{data}">{html.escape(block[2])} '
                            "(PDF)</a></p>")
            else:
                body.append(f'<figure><img alt="{html.escape(block[2])}" src="data:{mime};base64,{data}">'
                            f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.45}"
             "table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}"
             "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f2f2f2}"
             "img{max-width:100%}figcaption{color:#555;font-size:0.85em}")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>IRED study report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
