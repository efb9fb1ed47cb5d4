"""Tables for papers: booktabs LaTeX of the primary and secondary contrasts and of every endpoint
per strategy, from a study's cached tables, with the report's formatting (:func:`report_render.select`).

Each table is a complete ``table`` environment (``\\usepackage{booktabs}`` in the preamble) whose
caption names the study's training budget, so a table lifted into a paper keeps its scale. Text
is escaped for LaTeX, and the few non-ASCII symbols the tables use (ε, σ, ρ, ±, −, <, ×, →) are
written as math, so the tables compile with pdfLaTeX as well as with XeLaTeX or LuaLaTeX.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from .render import levels, select
from ..analysis.statistics import summarize

#: what each paper table holds (the file stem under ``tables/`` is the key)
PAPER_TABLES = ("contrasts_primary", "contrasts_secondary", "endpoints")
_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "ε": r"$\varepsilon$",
            "σ": r"$\sigma$", "ρ": r"$\rho$", "±": r"$\pm$", "−": "-", "<": r"$<$", ">": r"$>$", "×": r"$\times$",
            "→": r"$\to$", "⁻": r"$^-$", "⁺": r"$^+$"}
TEXT_COLUMNS = {"strategy", "versus", "contrast", "endpoint", "outcome", "set"}


def escape(text: Any) -> str:
    """``text`` with LaTeX's special characters escaped and its symbols written as math."""
    return "".join(_SPECIAL.get(ch, ch) for ch in str(text))


def booktabs(df: pd.DataFrame, caption: str, label: str) -> str:
    """A ``table`` environment holding ``df`` (already formatted cells) as a booktabs tabular;
    text columns left-aligned, numbers right-aligned."""
    spec = "".join("l" if c in TEXT_COLUMNS else "r" for c in df.columns)
    rows = [" & ".join(escape(x) for x in row) + r" \\" for row in df.itertuples(index=False)]
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{escape(caption)}}}",
                      rf"\label{{{label}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
                      " & ".join(escape(c) for c in df.columns) + r" \\", r"\midrule", *rows, r"\bottomrule",
                      r"\end{tabular}", r"\end{table}"]) + "\n"


def _endpoint_summary(endpoints: pd.DataFrame, strategies: list[str]) -> pd.DataFrame:
    """Per endpoint and strategy: the mean over seeds with its Student-t 95% CI and the seed count."""
    rows = []
    for (label, strategy), g in endpoints.dropna(subset=["value"]).groupby(["label", "strategy"], sort=False):
        s = summarize(g["value"].tolist())
        rows.append({"label": label, "strategy": strategy, "mean": s["mean"], "ci_low": s["ci_low"],
                     "ci_high": s["ci_high"], "n": int(s["n"])})
    out = pd.DataFrame(rows, columns=["label", "strategy", "mean", "ci_low", "ci_high", "n"])
    rank = {name: i for i, name in enumerate(strategies)}
    out["order"] = out["strategy"].map(lambda s: rank.get(s, len(rank)))
    labels = list(dict.fromkeys(out["label"]))
    out["label_order"] = out["label"].map(labels.index)
    return out.sort_values(["label_order", "order"], kind="stable")


def paper_tables(t: Mapping[str, pd.DataFrame], v: Mapping[str, Any]) -> dict[str, str]:
    """The LaTeX of each of :data:`PAPER_TABLES` from the cached tables ``t`` and verdict ``v``."""
    budget = (v.get("budget") or {}).get("short") or "this budget"
    study = v.get("name", "study")
    contrasts = t.get("contrasts", pd.DataFrame())
    out = {}
    primary = contrasts[contrasts["endpoint_role"] == "primary"] if len(contrasts) else contrasts
    primary = primary[primary["role"] == "verdict"] if "role" in primary else primary
    out["contrasts_primary"] = booktabs(
        select(primary, {"strategy": "strategy", "versus": "versus", "estimate": ("MSE change", "pct"),
                         ("ci_low", "ci_high"): (f"{levels(primary)} CI", "ci_pct"), "p": ("Welch p", "p"),
                         "n_a": "seeds", "n_b": "seeds (versus)", "outcome": "outcome"}),
        f"Primary endpoint ({v.get('primary', {}).get('label', '')}) at {budget}: relative change of the mean "
        "test MSE over seeds versus the baseline (Welch, delta method on the log ratio; Bonferroni over the "
        f"mining strategies). Study {study}.", f"tab:{study}-primary")
    secondary = contrasts[contrasts["endpoint_role"] == "secondary"] if len(contrasts) else contrasts
    out["contrasts_secondary"] = booktabs(
        select(secondary, {"strategy": "strategy", "versus": "versus", "role": "contrast", "label": "endpoint",
                           "estimate": ("MSE change", "pct"),
                           ("ci_low", "ci_high"): (f"{levels(secondary)} CI", "ci_pct"), "p": ("p", "p"),
                           "p_holm": ("p (Holm)", "p"), "p_holm_family": ("p (Holm, primary family)", "p"),
                           "outcome": "outcome"}),
        f"Secondary endpoints at {budget}: relative change versus the baseline; Holm-adjusted p within each "
        f"contrast and over the whole primary family. Study {study}.", f"tab:{study}-secondary")
    endpoints = t.get("endpoints", pd.DataFrame())
    summary = (_endpoint_summary(endpoints, list(v.get("strategies", []))) if len(endpoints)
               else pd.DataFrame(columns=["label", "strategy", "mean", "ci_low", "ci_high", "n"]))
    out["endpoints"] = booktabs(
        select(summary, {"label": "endpoint", "strategy": "strategy", "mean": ("test MSE", "num"),
                         ("ci_low", "ci_high"): ("95% CI", "ci"), "n": "seeds"}),
        f"Every endpoint per strategy at {budget}: mean test MSE over seeds (training runs) with its Student-t "
        f"95% CI. Study {study}.", f"tab:{study}-endpoints")
    return out


def write_paper_tables(t: Mapping[str, pd.DataFrame], v: Mapping[str, Any], paths: Mapping[str, str | Path]) -> None:
    """Write the tables of :func:`paper_tables` named in ``paths`` (key → file)."""
    tables = paper_tables(t, v)
    for key, path in paths.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(tables[key])
