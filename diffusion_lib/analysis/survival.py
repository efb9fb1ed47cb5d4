"""How long each run stays stable, and whether arms differ in it (issue 44: the stability study).

A run's *time to instability* is the step of its first validation evaluation that the instability
rule flags (:class:`~diffusion_lib.analysis.instability.InstabilityRule`: the EMA model's validation
MSE above ``factor`` × the lowest it reached before); a run never flagged is *censored* at its last
evaluation (it was stable for as long as it was watched, no longer). The run is the unit: one time
per run, never one per evaluation or per problem.

* :func:`run_times`: each run's time and whether the event happened, from the study's curves.
* :func:`kaplan_meier`: the share of a group's runs still stable after each step, with a 95%
  interval (Greenwood's variance on the log-log scale, which stays inside [0, 1]).
* :func:`log_rank`: whether two groups' times differ (the log-rank test, one degree of freedom,
  the runs as subjects; exact ties handled as in the usual hypergeometric form), with the exact
  permutation p-value beside the χ² one: with five runs a group the χ² approximation is rough,
  while every split of the pooled runs into two groups of the same sizes is equally likely when the
  groups do not differ, so the share of splits whose statistic is at least the observed one is exact.
* :func:`clopper_pearson`: the exact interval of a share of runs (k unstable of n).
* :func:`stable_range`: for each arm, the largest learning rate at which no run became unstable and
  the smallest at which one did, with a one-sided 95% upper bound on the chance that a run at the
  largest stable rate becomes unstable (Clopper-Pearson for 0 of n: 1 − 0.05^(1/n)).
* :func:`fisher_counts`: unstable / stable counts of two groups and Fisher's exact test (one-sided,
  the first group more often unstable), the test the earlier two-seed reading quoted.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .instability import InstabilityRule

Z95 = 1.959963984540054


@dataclass(frozen=True)
class RunTime:
    """One run of a stability study: its arm, learning rate and seed, the step it was last seen
    stable or first seen unstable (``time``), whether it became unstable (``event``), the step of
    its last evaluation (``watched_to``; None where not known), and, descriptive only, how far it rose
    (``peak``) and where it ended (``end_ratio``) relative to its best
    (:meth:`~diffusion_lib.analysis.instability.InstabilityRule.excursion`; NaN where not known)."""

    arm: str
    lr: float
    seed: int
    time: int
    event: bool
    watched_to: int | None = None
    peak: float = math.nan
    end_ratio: float = math.nan


def run_times(curves: pd.DataFrame, rule: InstabilityRule, groups: Mapping[str, tuple[str, float]],
              metric: str | None = None) -> list[RunTime]:
    """Each run's time to instability from the study's learning curves (``curves.csv``: one row per
    logged step with ``strategy``, ``seed``, ``step`` and the rule's metric, NaN where no validation
    ran). ``groups`` maps a strategy to its (arm, learning rate)."""
    metric = metric or rule.metric
    out = []
    for (strategy, seed), curve in curves.groupby(["strategy", "seed"], sort=False):
        if strategy not in groups:
            continue
        evaluated = curve.dropna(subset=[metric]).sort_values("step")
        if evaluated.empty:
            continue
        first = rule.first(evaluated["step"], evaluated[metric])
        arm, lr = groups[strategy]
        last = int(evaluated["step"].iloc[-1])
        rose = rule.excursion(evaluated[metric])
        out.append(RunTime(arm, float(lr), int(seed), int(first["step"]) if first else last, first is not None, last,
                           rose["peak"], rose["end"]))
    return out


def kaplan_meier(times: Sequence[int], events: Sequence[bool]) -> pd.DataFrame:
    """The Kaplan-Meier curve of one group: at each step where a run became unstable, the runs at
    risk, the events, the share still stable and its 95% interval (log-log Greenwood)."""
    t, e = np.asarray(times, dtype=float), np.asarray(events, dtype=bool)
    rows, survival, greenwood = [], 1.0, 0.0
    for step in np.unique(t[e]):
        at_risk, d = int((t >= step).sum()), int(((t == step) & e).sum())
        survival *= 1 - d / at_risk
        greenwood += d / (at_risk * (at_risk - d)) if at_risk > d else math.inf
        rows.append({"step": int(step), "at_risk": at_risk, "events": d, "stable": survival,
                     **_loglog_interval(survival, greenwood)})
    return pd.DataFrame(rows, columns=["step", "at_risk", "events", "stable", "ci_low", "ci_high"])


def _loglog_interval(survival: float, greenwood: float) -> dict[str, float]:
    if survival <= 0 or survival >= 1 or not math.isfinite(greenwood):
        return {"ci_low": 0.0 if survival <= 0 else math.nan, "ci_high": math.nan if survival <= 0 else 1.0}
    log_s = math.log(survival)
    half = Z95 * math.sqrt(greenwood) / abs(log_s)
    return {"ci_low": survival ** math.exp(half), "ci_high": survival ** math.exp(-half)}


def _log_rank_parts(times: np.ndarray, events: np.ndarray, in_a: np.ndarray) -> tuple[np.ndarray, ...]:
    """Observed and expected events of group a and the variance, for every row of ``in_a`` (splits ×
    runs, True where the run is in group a)."""
    a = in_a.astype(float)
    observed = np.zeros(len(a))
    expected, variance = np.zeros(len(a)), np.zeros(len(a))
    for step in np.unique(times[events]):
        at_risk, died = times >= step, (times == step) & events
        n, d = at_risk.sum(), died.sum()
        na = a @ at_risk
        observed += a @ died
        expected += d * na / n
        if n > 1:
            variance += d * (na / n) * (1 - na / n) * (n - d) / (n - 1)
    return observed, expected, variance


def _chi2(observed: np.ndarray, expected: np.ndarray, variance: np.ndarray) -> np.ndarray:
    safe = np.where(variance > 0, variance, 1.0)
    return np.where(variance > 0, (observed - expected) ** 2 / safe, 0.0)


def log_rank(a: Iterable[RunTime], b: Iterable[RunTime], max_splits: int = 100_000, seed: int = 0) -> dict[str, Any]:
    """The log-rank test of two groups of runs: ``chi2`` (1 df) and its two-sided ``p``; ``p_exact``,
    the share of splits of the pooled runs into groups of the same sizes whose statistic is at least
    the observed one (all splits, or ``max_splits`` random ones with the observed split among them,
    seeded); and the events ``observed`` and ``expected`` in the first group under no difference
    (more observed than expected: the first group becomes unstable sooner). Both p-values are 1 where
    no run of either group had the event."""
    a, b = list(a), list(b)
    times = np.array([r.time for r in a + b], float)
    events = np.array([r.event for r in a + b], bool)
    n, na = len(times), len(a)
    own = np.arange(n) < na
    o, e, v = (float(x[0]) for x in _log_rank_parts(times, events, own[None]))
    out = {"observed": o, "expected": e, "n_a": na, "n_b": n - na, "splits": 0}
    if v <= 0:
        return {**out, "chi2": 0.0, "p": 1.0, "p_exact": 1.0}
    chi2 = (o - e) ** 2 / v
    if math.comb(n, na) <= max_splits:
        splits = np.zeros((math.comb(n, na), n), bool)
        for row, members in enumerate(itertools.combinations(range(n), na)):
            splits[row, list(members)] = True
    else:
        rng = np.random.default_rng(seed)
        splits = np.vstack([own] + [rng.permutation(own) for _ in range(max_splits - 1)])
    null = _chi2(*_log_rank_parts(times, events, splits))
    p_exact = float((null >= chi2 * (1 - 1e-9)).mean())
    return {**out, "chi2": float(chi2), "p": float(stats.chi2.sf(chi2, 1)), "p_exact": p_exact,
            "splits": len(splits)}


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided interval of a share: ``k`` of ``n`` runs."""
    if n <= 0:
        return math.nan, math.nan
    tail = (1 - level) / 2
    low = 0.0 if k == 0 else float(stats.beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - tail, k + 1, n - k))
    return low, high


def fisher_counts(a: Iterable[RunTime], b: Iterable[RunTime]) -> dict[str, Any]:
    """Unstable and stable counts of two groups and Fisher's exact test, one-sided: is the first
    group more often unstable than the second?"""
    a, b = list(a), list(b)
    ua, ub = sum(r.event for r in a), sum(r.event for r in b)
    _, p = stats.fisher_exact([[ua, len(a) - ua], [ub, len(b) - ub]], alternative="greater")
    return {"unstable_a": ua, "n_a": len(a), "unstable_b": ub, "n_b": len(b), "p": float(p)}


def stable_range(runs: Iterable[RunTime]) -> pd.DataFrame:
    """Per arm: ``largest_stable_lr`` (the largest learning rate at which none of its runs became
    unstable, with every smaller rate stable too), ``smallest_unstable_lr`` (the smallest at which one
    did), the runs at the largest stable rate and the one-sided 95% upper bound on the chance that a
    run there becomes unstable (0 of n: 1 − 0.05^(1/n))."""
    frame = pd.DataFrame([r.__dict__ for r in runs])
    rows = []
    for arm, d in frame.groupby("arm", sort=False):
        by_lr = d.groupby("lr")["event"].agg(["sum", "count"]).sort_index()
        unstable = by_lr.index[by_lr["sum"] > 0]
        smallest_unstable = float(unstable.min()) if len(unstable) else math.nan
        stable = by_lr.index[(by_lr["sum"] == 0) & ~(by_lr.index > smallest_unstable)]
        largest = float(stable.max()) if len(stable) else math.nan
        n = int(by_lr.loc[largest, "count"]) if len(stable) else 0
        rows.append({"arm": arm, "largest_stable_lr": largest, "smallest_unstable_lr": smallest_unstable,
                     "runs_at_largest": n, "risk_upper_95": 1 - 0.05 ** (1 / n) if n else math.nan})
    return pd.DataFrame(rows)
