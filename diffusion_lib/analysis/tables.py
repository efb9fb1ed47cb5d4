"""Tidy tables of a study, built from the per-run files (method §7–8); the seed is the unit throughout.

Every statistic here is computed over runs (one value per training seed). Intervals are Student-t
(:func:`statistics.summarize`) for a strategy's mean and Welch + delta method
(:func:`statistics.relative_change_ci`) for a relative change versus the baseline.

Endpoints: an :class:`Endpoint` is a test set, a number of inference inner steps and a model (the
EMA model, or the raw model for the ``raw`` endpoint). The config declares the primary one; the
secondary family is ID/OOD × {0, default} inner steps and the raw model, Holm-corrected within each
contrast.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .statistics import holm, judged_change, summarize

SET_LABELS = {"test_id": "ID (ε = 0.5)", "test_ood": "OOD (ε = 0.1)"}
SET_SHORT = {"test_id": "ID", "test_ood": "OOD"}
SUMMARY_METRICS = ["mse", "residual_mean", "residual_median", "rel_err_mean", "infer_ms_per_problem", "accept_rate"]
CONTRAST_COLUMNS = ["strategy", "versus", "role", "endpoint_role", "endpoint", "label", "mean", "mean_versus",
                    "estimate", "ci_low", "ci_high", "confidence", "eq_low", "eq_high", "eq_confidence", "p", "p_holm",
                    "df", "n_a", "n_b", "outcome"]
RUN_KEYS = ("strategy", "seed", "run", "mode", "status", "diverged_at", "steps_done", "train_seconds", "seconds_per_step",
            "cost_seconds_per_step", "flops_per_step", "device", "torch")


@dataclass(frozen=True)
class Endpoint:
    """One measured outcome of a run: test MSE on ``set`` with ``inner_steps`` inference inner steps,
    of the EMA model (``model='ema'``) or the raw model (``'raw'``)."""

    set: str
    inner_steps: int
    model: str = "ema"

    @property
    def key(self) -> str:
        return f"{self.set}/{self.model}/{self.inner_steps}"

    @property
    def label(self) -> str:
        model = ", raw model" if self.model == "raw" else ""
        return f"{SET_SHORT.get(self.set, self.set)} test MSE{model}, {self.inner_steps} inner steps"


def endpoint_family(primary: Endpoint, default_inner: int) -> list[Endpoint]:
    """The primary endpoint first, then the secondary ones (method §8) that differ from it."""
    family = [Endpoint(s, k) for s in ("test_id", "test_ood") for k in dict.fromkeys((default_inner, 0))]
    family.append(Endpoint("test_id", default_inner, "raw"))
    return [primary, *[e for e in family if e != primary]]


# --------------------------------------------------------------------------- loading
def load_run(metrics_path: str | Path, curve_path: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """One run's metrics dict and learning curve."""
    with open(metrics_path) as fh:
        metrics = json.load(fh)
    return metrics, pd.read_csv(curve_path)


# --------------------------------------------------------------------------- per-run tables
def runs_table(metrics: Iterable[Mapping[str, Any]], sweep_points: Mapping[str, Mapping[str, Any]] = {}
               ) -> pd.DataFrame:
    """One row per (strategy, seed, set, inner_steps) with the run's summary metrics and status;
    ``mse_raw_model`` on the default-inner rows; ``sweep_<param>`` columns for grid points."""
    rows = []
    for m in metrics:
        base = {k: m.get(k, math.nan) for k in RUN_KEYS}
        base.update({f"sweep_{k}": v for k, v in sweep_points.get(m["strategy"], {}).items()})
        if not m["sets"]:  # diverged: one row with its status and no metrics
            rows.append({**base, "set": None, "inner_steps": None, **{k: math.nan for k in SUMMARY_METRICS},
                         "mse_raw_model": math.nan})
        for set_name, by_inner in m["sets"].items():
            for inner, summary in by_inner.items():
                raw = m.get("raw_model_mse", {}).get(set_name, math.nan) if int(inner) == m["default_inner"] else math.nan
                rows.append({**base, "set": set_name, "inner_steps": int(inner), **summary, "mse_raw_model": raw})
    return pd.DataFrame(rows)


def completed(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows of completed runs that carry metrics."""
    return runs[runs["status"] == "completed"].dropna(subset=["set"])


def endpoint_values(runs: pd.DataFrame, endpoints: Sequence[Endpoint]) -> pd.DataFrame:
    """Long table (strategy, mode, seed, endpoint, value): one value per completed run and endpoint."""
    ok = completed(runs)
    frames = []
    for e in endpoints:
        sel = ok[(ok["set"] == e.set) & (ok["inner_steps"] == e.inner_steps)]
        column = "mse_raw_model" if e.model == "raw" else "mse"
        frames.append(sel[["strategy", "mode", "seed"]].assign(endpoint=e.key, label=e.label, value=sel[column]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["strategy", "mode", "seed", "endpoint", "label", "value"])


def strategies_table(runs: pd.DataFrame, trivial: Mapping[str, Mapping[str, float]] = {}) -> pd.DataFrame:
    """Per (strategy, set, inner_steps): mean, std and 95% CI over seeds of MSE and residual, the raw
    model's MSE, the skill 1 - MSE / MSE(per-entry-mean predictor), costs and the run counts."""
    rows = []
    for (strategy, set_name, inner), g in completed(runs).groupby(["strategy", "set", "inner_steps"], sort=False):
        row = {"strategy": strategy, "mode": g["mode"].iloc[0], "set": set_name, "inner_steps": int(inner)}
        for metric in ("mse", "residual_mean", "residual_median", "rel_err_mean", "mse_raw_model"):
            s = summarize(g[metric].tolist())
            row.update({f"{metric}_{k}": v for k, v in s.items() if k != "n" or metric == "mse"})
        entry_mean = trivial.get(set_name, {}).get("entry_mean", math.nan)
        row["skill_mean"] = summarize((1 - g["mse"] / entry_mean).tolist())["mean"]
        for col in ("seconds_per_step", "cost_seconds_per_step", "flops_per_step", "infer_ms_per_problem",
                    "accept_rate"):
            row[col] = g[col].mean() if col in g else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    status = runs.drop_duplicates(["strategy", "seed"]).groupby("strategy")["status"]
    if len(table):
        table["runs"] = table["strategy"].map(status.size())
        table["diverged"] = table["strategy"].map(status.apply(lambda s: int((s == "diverged").sum())))
    return table


# --------------------------------------------------------------------------- contrasts
def contrasts_table(values: pd.DataFrame, pairs: Sequence[tuple[str, str, str]], primary: Endpoint,
                    delta: float, alpha: float, primary_confidence: float) -> pd.DataFrame:
    """Relative change of each (strategy, versus, role) pair on every endpoint of ``values``.

    ``role`` is ``verdict`` (a mining strategy of the verdict versus the baseline) or
    ``exploratory`` (sweep points, adversarial versus random). Rows on the primary endpoint of a
    verdict pair carry the verdict's CI (level ``primary_confidence``, Bonferroni over the primary
    contrasts); every other row is a secondary endpoint with a 95% (1 - alpha) CI and Holm-adjusted
    p-values within its pair. ``outcome`` classifies each CI against ±delta, equivalence on the
    equivalence CI beside it (``eq_low``/``eq_high`` at ``eq_confidence``: two one-sided tests at the
    row's error rate per side, :func:`statistics.judged_change`).
    """
    rows = []
    endpoints = list(dict.fromkeys(values["endpoint"]))
    for strategy, versus, role in pairs:
        family = []
        for key in endpoints:
            sel = values[values["endpoint"] == key]
            a = sel.loc[sel["strategy"] == strategy, "value"].tolist()
            b = sel.loc[sel["strategy"] == versus, "value"].tolist()
            if not a or not b:
                continue
            is_primary = role == "verdict" and key == primary.key
            confidence = primary_confidence if is_primary else 1 - alpha
            family.append({"strategy": strategy, "versus": versus, "role": role,
                           "endpoint_role": "primary" if is_primary else "secondary", "endpoint": key,
                           "label": sel["label"].iloc[0], "mean": float(np.mean(a)), "mean_versus": float(np.mean(b)),
                           **judged_change(a, b, delta, confidence)})
        secondary = [r for r in family if r["endpoint_role"] == "secondary"]
        for r, p in zip(secondary, holm([r["p"] for r in secondary])):
            r["p_holm"] = p
        rows += family
    return pd.DataFrame(rows).reindex(columns=CONTRAST_COLUMNS)


# --------------------------------------------------------------------------- compute
def diagnostics_table(curves: pd.DataFrame, runs: pd.DataFrame, default_inner: int, tail: float = 1 / 3) -> pd.DataFrame:
    """Per strategy, means over seeds of the training diagnostics over the last ``tail`` of training
    (gradient norm, clip fraction, energy gap E⁻ - E⁺, share of saturated pairs, mining acceptance)
    and the inference inner loop's acceptance rate on the ID test set."""
    cols = ["grad_norm", "clip_frac", "energy_gap", "saturated_frac", "mine_accept"]
    rows = []
    ok = completed(runs)
    for strategy, g in curves.groupby("strategy", sort=False):
        cut = g["step"].max() * (1 - tail)
        late = g[g["step"] > cut]
        per_seed = late.groupby("seed")[[c for c in cols if c in late]].mean()
        row = {"strategy": strategy, **{c: per_seed[c].mean() if c in per_seed else math.nan for c in cols}}
        inf = ok[(ok["strategy"] == strategy) & (ok["set"] == "test_id") & (ok["inner_steps"] == default_inner)]
        row["infer_accept"] = inf["accept_rate"].mean() if "accept_rate" in inf and len(inf) else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["strategy", *cols, "infer_accept"])


def cost_table(runs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Training cost per strategy: compute seconds and profiler FLOPs per step, and ratios to the baseline."""
    per_run = runs.drop_duplicates(["strategy", "seed"])
    g = per_run.groupby("strategy", sort=False)[["cost_seconds_per_step", "flops_per_step"]].mean()
    if baseline in g.index:
        g["time_ratio"] = g["cost_seconds_per_step"] / g.loc[baseline, "cost_seconds_per_step"]
        g["flops_ratio"] = g["flops_per_step"] / g.loc[baseline, "flops_per_step"]
    return g.reset_index()


# --------------------------------------------------------------------------- other views
def landscape_table(metrics: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [{"strategy": m["strategy"], "seed": m["seed"], "mode": m["mode"], **r}
            for m in metrics for r in m.get("landscape", [])]
    return pd.DataFrame(rows, columns=["strategy", "seed", "mode", "t", "negative", "rank_acc", "gap_mean"])


def test_time_table(runs: pd.DataFrame) -> pd.DataFrame:
    """MSE vs inference inner steps per strategy and set: mean and CI over seeds (IRED Table 2 style)."""
    rows = []
    for (strategy, set_name, inner), g in completed(runs).groupby(["strategy", "set", "inner_steps"], sort=False):
        s = summarize(g["mse"].tolist())
        rows.append({"strategy": strategy, "set": set_name, "inner_steps": int(inner), "mse_mean": s["mean"],
                     "mse_ci_low": s["ci_low"], "mse_ci_high": s["ci_high"], "seeds": s["n"]})
    return pd.DataFrame(rows).sort_values(["strategy", "set", "inner_steps"]) if rows else pd.DataFrame(rows)
