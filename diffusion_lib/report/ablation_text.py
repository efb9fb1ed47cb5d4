"""The report's ablation section (exploratory): each swept strategy's overrides, the gap between bases
at each swept value (method or recipe?), every grid point's test MSE, and the figures."""
from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from ..analysis.ablation import ARM, GAP, override_text, points_from_table
from .render import Block, levels, select


def _overrides(ablation: pd.DataFrame) -> list[str]:
    """``name: base, parameter = value, ...`` for each swept strategy in the table."""
    return [f"`{name}`: {override_text(name, point)}" for name, point in points_from_table(ablation).items()]


def _gap_table(gaps: pd.DataFrame) -> pd.DataFrame:
    return select(gaps, {"parameter": "parameter", "value_label": "value", "strategy": "strategy",
                         "versus": "versus", "estimate": ("MSE change", "pct"),
                         ("ci_low", "ci_high"): (f"{levels(gaps)} CI", "ci_pct"), "p": ("p", "p"),
                         "n_a": "seeds", "n_b": "seeds (versus)", "outcome": "outcome"})


def ablation_blocks(v: Mapping[str, Any], t: Mapping[str, pd.DataFrame], figures: Mapping[str, str]) -> list[Block]:
    """The ablation section, or nothing without an ablation table."""
    ablation = t.get("ablation", pd.DataFrame())
    if ablation.empty:
        return []
    kind = ablation["kind"] if "kind" in ablation else pd.Series(ARM, index=ablation.index)
    arms, gaps = ablation[kind == ARM], ablation[kind == GAP]
    doc: list[Block] = [("h", 2, "Ablations (exploratory)"),
                        ("p", "Swept strategies and what they set (the base strategy, then the grid values "
                              "over its configuration):"), ("ul", _overrides(ablation))]
    if len(gaps):
        doc.append(("p", f"Method or recipe? Relative change of the primary endpoint ({gaps['label'].iloc[0]}) of "
                         "each base's grid point versus the baseline's at the same value (for a mining parameter, "
                         "which the baseline does not use, versus the baseline itself); Welch with the delta method, "
                         "seeds as the unit, no multiplicity correction. If the gap moves with a training-recipe "
                         "value, the pilot's answer is about the recipe, not the method."))
        doc.append(("table", _gap_table(gaps)))
    doc.append(("p", f"Test MSE of every grid point at {v['default_inner']} inner steps (mean over seeds, 95% t CI)."))
    arms = arms.assign(others=[o if isinstance(o, str) else "" for o in arms["others"]])  # CSV reads "" as NaN
    doc.append(("table", select(arms, {"parameter": "parameter", "value_label": "value", "base": "base",
                                       "others": "others", "set": "set", "mse_mean": "MSE",
                                       ("mse_ci_low", "mse_ci_high"): "95% CI", "seeds": "seeds",
                                       "runs": "runs", "diverged": "diverged"})))
    doc += [("fig", k, f"Ablation of {k[len('ablation_'):]}") for k in figures if k.startswith("ablation_")]
    return doc
