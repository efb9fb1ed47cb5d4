"""What the report says beside the verdict, never overriding it (method §8 and §8.2).

* :func:`skill_table`: every endpoint's skill versus the per-entry-mean predictor, 1 - MSE/MSE_mean,
  per arm, with the endpoint flagged ``uninformative`` when its best arm's skill is below 5%;
* :func:`family_holm` and :func:`inner_loop_flips`: whether the inference inner loop flips the
  answer, judged on Holm-adjusted p over the whole primary family (every endpoint of every verdict
  contrast), with each arm's skill without the loop: a sentence for the verdict paragraph;
* :func:`residual_line`: why every model's residual ‖AŶ − I‖ can sit above the zeros predictor's;
* :func:`diagnostic_lines`: the shares of clipped steps and of saturated contrastive pairs per arm.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .statistics import holm, level_text, p_text
from .tables import SET_SHORT, Endpoint

UNINFORMATIVE_SKILL = 0.05


def skill_table(values: pd.DataFrame, trivial: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Per (endpoint, strategy) of the per-seed endpoint ``values``: mean MSE, the per-entry-mean
    predictor's MSE on that test set, the skill, the best arm's skill on the endpoint and the
    ``uninformative`` flag (best skill below 5%)."""
    rows = []
    for (endpoint, strategy), g in values.groupby(["endpoint", "strategy"], sort=False):
        entry_mean = float(trivial.get(endpoint.split("/")[0], {}).get("entry_mean", math.nan))
        mse = float(g["value"].mean())
        rows.append({"endpoint": endpoint, "label": g["label"].iloc[0], "strategy": strategy, "n": len(g),
                     "mse_mean": mse, "entry_mean_mse": entry_mean, "skill": 1 - mse / entry_mean})
    table = pd.DataFrame(rows, columns=["endpoint", "label", "strategy", "n", "mse_mean", "entry_mean_mse", "skill"])
    table["best_skill"] = table.groupby("endpoint")["skill"].transform("max")
    table["uninformative"] = table["best_skill"] < UNINFORMATIVE_SKILL
    return table


def family_holm(contrasts: pd.DataFrame) -> pd.Series:
    """Holm-adjusted p over the whole primary family: every endpoint of every ``verdict`` contrast
    (NaN for the other rows)."""
    out = pd.Series(math.nan, index=contrasts.index, dtype=float)
    verdict = contrasts[contrasts["role"] == "verdict"]
    out[verdict.index] = holm(verdict["p"].tolist())
    return out


def _skill_of(skill: pd.DataFrame, strategy: str, endpoint: str) -> float:
    sel = skill[(skill["strategy"] == strategy) & (skill["endpoint"] == endpoint)]
    return float(sel["skill"].iloc[0]) if len(sel) else math.nan


def _ci(row: Any) -> str:
    return f"{level_text(row['confidence'])} CI {row['ci_low']:+.1%} to {row['ci_high']:+.1%}"


def inner_loop_flips(contrasts: pd.DataFrame, skill: pd.DataFrame, default_inner: int, alpha: float,
                     set_name: str = "test_id") -> list[str]:
    """A sentence for each verdict contrast whose sign differs between the default inner loop and none
    on ``set_name`` (method §8): it *flips the answer* only when both sides are significant on
    ``p_holm_family`` (:func:`family_holm`) in opposite directions; otherwise the sentence says only
    that the sign changes, naming which side is significant. With both arms' skill without the loop."""
    lines = []
    if default_inner == 0:
        return lines
    verdict = contrasts[contrasts["role"] == "verdict"]
    key_with, key_without = Endpoint(set_name, default_inner).key, Endpoint(set_name, 0).key
    for (strategy, versus), g in verdict.groupby(["strategy", "versus"], sort=False):
        with_loop, without = g[g["endpoint"] == key_with], g[g["endpoint"] == key_without]
        if with_loop.empty or without.empty:
            continue
        a, b = with_loop.iloc[0], without.iloc[0]
        if not (math.isfinite(a["estimate"]) and math.isfinite(b["estimate"])) or \
                np.sign(a["estimate"]) == np.sign(b["estimate"]):
            continue
        sig_with, sig_without = a["p_holm_family"] < alpha, b["p_holm_family"] < alpha
        if sig_with and sig_without:
            head = f"The inference inner loop flips the answer for {strategy} vs {versus} on {SET_SHORT[set_name]}"
        else:
            which = ("only with the loop is it significant" if sig_with else
                     "only without the loop is it significant" if sig_without else "neither side is significant")
            head = (f"The sign of {strategy} vs {versus} on {SET_SHORT[set_name]} changes with the inference inner "
                    f"loop ({which}, Holm over the primary family, so the answer does not flip)")
        lines.append(
            f"{head}: {a['estimate']:+.1%} ({_ci(a)}; Holm p over the primary family {p_text(a['p_holm_family'])}) with "
            f"{default_inner} inner steps, {b['estimate']:+.1%} ({_ci(b)}; Holm p {p_text(b['p_holm_family'])}) "
            f"without it; without the loop, skill versus the per-entry-mean predictor is "
            f"{_skill_of(skill, strategy, key_without):.1%} for {strategy} and "
            f"{_skill_of(skill, versus, key_without):.1%} for {versus}.")
    return lines


def residual_line(strategies: pd.DataFrame, default_inner: int, rank: int | None) -> str | None:
    """One sentence on the residual ‖AŶ − I‖_F (ID test, default inner steps) against the zeros
    predictor's ‖I‖_F = √n, and why a model can sit above it; None without residuals."""
    if strategies.empty or "residual_mean_mean" not in strategies:
        return None
    sel = strategies[(strategies["set"] == "test_id") & (strategies["inner_steps"] == default_inner)]
    res = sel["residual_mean_mean"].dropna()
    if res.empty:
        return None
    zeros = f"√n = {math.sqrt(rank):.2f}" if rank else "√n"
    low, high = f"{res.min():.3g}", f"{res.max():.3g}"
    span = low if low == high else f"{low}–{high}"
    where = ("Every model's" if rank and (res > math.sqrt(rank)).all() else "The models'")
    return (f"{where} reconstruction residual ‖AŶ − I‖_F (ID test, mean over seeds: {span}) is to be read against "
            f"the zeros predictor's {zeros}: the residual multiplies the error by A, so errors along A's large "
            "singular directions are amplified and a model with a small MSE can sit above the zeros predictor on it; "
            "it measures something other than the MSE and does not enter the verdict.")


def _shares(diag: pd.DataFrame, column: str) -> str:
    d = diag.dropna(subset=[column]) if column in diag else diag.iloc[0:0]
    return ", ".join(f"{s} {v:.0%}" for s, v in zip(d["strategy"], d[column]))


def diagnostic_lines(diag: pd.DataFrame, mining: Sequence[str]) -> list[str]:
    """The shares of clipped training steps and of saturated contrastive pairs per arm (last third of
    training, :func:`tables.diagnostics_table`), for interpretation."""
    lines = []
    if diag.empty:
        return lines
    clipped = _shares(diag, "clip_frac")
    if clipped:
        line = f"Share of training steps whose gradient was clipped (last third of training, mean over seeds): {clipped}."
        busy = diag[diag["strategy"].isin(mining) & (diag.get("clip_frac", np.nan) >= 0.5)]
        if len(busy):
            line += (" With clipping active on most steps, adding the contrastive term shrinks the denoising "
                     "gradient's effective step in the mining arms: part of a difference may be the recipe, not "
                     "the method.")
        lines.append(line)
    saturated = _shares(diag[diag["strategy"].isin(mining)], "saturated_frac")
    if saturated:
        lines.append(f"Share of saturated contrastive pairs (E⁻ − E⁺ > ln 99, where the contrastive loss has almost no "
                     f"gradient; last third of training): {saturated}.")
    return lines
