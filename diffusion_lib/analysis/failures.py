"""Inference failures: problems whose error lies far beyond their run's own distribution.

The primary endpoint is a run's mean MSE over its held-out problems. Its tail is heavy: one problem
whose inner loop ends far from the solution can move a run's mean by several percent (one seen: MSE
0.288 on one of 512 problems whose median was 0.0098, moving its arm's mean by +5%). Such problems
are seen, not averaged away:

* **the rule** (declared before use, docs/pilot-design.md): a problem is an inference failure when
  its MSE on the primary endpoint exceeds :data:`FAILURE_FACTOR` times its run's median problem MSE;
* **per run** (:func:`failure_table`): the problems, the failures and the worst one, the run's mean
  (the primary endpoint), its mean without the failures, and its median problem MSE, the declared
  robust companion endpoint;
* **per contrast** (:func:`sensitivity_table`): the primary contrast recomputed on the means
  without failures (a sensitivity) and on the medians (the companion endpoint), beside the primary
  one. The primary endpoint stays as declared: these never decide the verdict, and the report says
  when they disagree with it.

The seed stays the unit: each run gives one number per column, and contrasts are over runs.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd

from .statistics import judged_change, side

FAILURE_FACTOR = 10.0
RUN_COLUMNS = ["strategy", "seed", "problems", "median", "failures", "worst", "worst_ratio", "mean",
               "mean_without_failures"]
VARIANTS = {"mean_without_failures": "mean without inference failures (sensitivity)",
            "median": "median problem MSE (robust companion endpoint)"}


def failure_table(per_problem: pd.DataFrame, factor: float = FAILURE_FACTOR) -> pd.DataFrame:
    """One row per run (``RUN_COLUMNS``) from the per-problem MSEs of the primary endpoint
    (``strategy``, ``seed``, ``mse``: one row per problem)."""
    rows = []
    for (strategy, seed), g in per_problem.groupby(["strategy", "seed"], sort=False):
        mse = g["mse"].astype(float)
        median = float(mse.median())
        failed = mse > factor * median
        rows.append({"strategy": strategy, "seed": int(seed), "problems": int(len(mse)), "median": median,
                     "failures": int(failed.sum()), "worst": float(mse.max()),
                     "worst_ratio": float(mse.max() / median) if median > 0 else math.nan, "mean": float(mse.mean()),
                     "mean_without_failures": float(mse[~failed].mean()) if (~failed).any() else math.nan})
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def arm_failures(runs: pd.DataFrame) -> pd.DataFrame:
    """Per arm: runs, runs with a failure, failures in all, and the worst failure's ratio to its run's median."""
    if runs.empty:
        return pd.DataFrame(columns=["strategy", "runs", "runs_with_failures", "failures", "worst_ratio"])
    return (runs.groupby("strategy", sort=False)
            .agg(runs=("seed", "nunique"), runs_with_failures=("failures", lambda f: int((f > 0).sum())),
                 failures=("failures", "sum"), worst_ratio=("worst_ratio", "max")).reset_index())


def sensitivity_table(runs: pd.DataFrame, pairs: Sequence[tuple[str, str]], primary: Mapping[str, Mapping[str, float]],
                      delta: float, confidence: float) -> pd.DataFrame:
    """Each (strategy, versus) of ``pairs`` on each of :data:`VARIANTS`, beside its primary contrast
    (``primary``: strategy -> judged contrast), with whether the variant's label points the same way."""
    rows = []
    for strategy, versus in pairs:
        a, b = runs[runs["strategy"] == strategy], runs[runs["strategy"] == versus]
        if a.empty or b.empty:
            continue
        first = primary.get(strategy, {})
        for column, what in VARIANTS.items():
            change = judged_change(a[column].tolist(), b[column].tolist(), delta, confidence)
            rows.append({"strategy": strategy, "versus": versus, "variant": what, **{
                k: change[k] for k in ("estimate", "ci_low", "ci_high", "confidence", "outcome")},
                "primary_estimate": first.get("estimate", math.nan), "primary_outcome": first.get("outcome"),
                "agrees": side(str(change["outcome"])) == side(str(first.get("outcome", "")))})
    return pd.DataFrame(rows, columns=["strategy", "versus", "variant", "estimate", "ci_low", "ci_high", "confidence",
                                       "outcome", "primary_estimate", "primary_outcome", "agrees"])
