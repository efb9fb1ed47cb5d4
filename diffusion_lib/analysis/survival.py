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
  the runs as subjects; exact ties handled as in the usual hypergeometric form).
* :func:`stable_range`: for each arm, the largest learning rate at which no run became unstable and
  the smallest at which one did, with a one-sided 95% upper bound on the chance that a run at the
  largest stable rate becomes unstable (Clopper-Pearson for 0 of n: 1 − 0.05^(1/n)).
* :func:`fisher_counts`: unstable / stable counts of two groups and Fisher's exact test (one-sided,
  the first group more often unstable), the test the earlier two-seed reading quoted.
"""
from __future__ import annotations

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
    stable or first seen unstable (``time``), and whether it became unstable (``event``)."""

    arm: str
    lr: float
    seed: int
    time: int
    event: bool


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
        time = first["step"] if first else int(evaluated["step"].iloc[-1])
        out.append(RunTime(arm, float(lr), int(seed), int(time), first is not None))
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


def log_rank(a: Iterable[RunTime], b: Iterable[RunTime]) -> dict[str, Any]:
    """The log-rank test of two groups of runs: ``chi2`` (1 df), its two-sided ``p``, and the events
    ``observed`` and ``expected`` in the first group under no difference (more observed than expected:
    the first group becomes unstable sooner). ``p`` is 1 where no run of either group had the event."""
    a, b = list(a), list(b)
    ta, ea = np.array([r.time for r in a], float), np.array([r.event for r in a], bool)
    tb, eb = np.array([r.time for r in b], float), np.array([r.event for r in b], bool)
    observed = expected = variance = 0.0
    for step in np.unique(np.concatenate([ta[ea], tb[eb]])):
        na, nb = (ta >= step).sum(), (tb >= step).sum()
        da, db = ((ta == step) & ea).sum(), ((tb == step) & eb).sum()
        n, d = na + nb, da + db
        observed += da
        expected += d * na / n
        if n > 1:
            variance += d * (na / n) * (nb / n) * (n - d) / (n - 1)
    if variance <= 0:
        return {"chi2": 0.0, "p": 1.0, "observed": observed, "expected": expected, "n_a": len(a), "n_b": len(b)}
    chi2 = (observed - expected) ** 2 / variance
    return {"chi2": float(chi2), "p": float(stats.chi2.sf(chi2, 1)), "observed": float(observed),
            "expected": float(expected), "n_a": len(a), "n_b": len(b)}


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
