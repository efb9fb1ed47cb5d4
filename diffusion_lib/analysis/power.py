"""How many seeds the pending decision needs (method §8.2, outcome 6: inconclusive).

When the verdict cannot decide, it says how many training runs (seeds) per arm the decision it is
waiting for would need at 80% power, from each arm's own observed seed-to-seed variance (arms are
never pooled) and with the seeds allocated where the variance is:

* **which decision is pending**: when the observed relative change lies inside the margin
  (−delta, +delta), *equivalence* ("no meaningful difference"), at the observed effect: the power of
  two one-sided tests, i.e. that the equivalence CI (level ``1 − 2·a`` for a decision level ``a``,
  95% with two mining arms) lies inside the margin. Otherwise *superiority*: the power of the
  two-sided Welch test at the decision level (97.5% with two mining arms) when the true change is
  delta, the smallest effect of interest.
* **unequal arms**: with per-seed squared coefficients of variation cv²_a and cv²_b, the variance of
  the log ratio of means is cv²_a/n_a + cv²_b/n_b; for a total of N seeds it is smallest with
  n_a/n_b = cv_a/cv_b (Neyman allocation). The smallest N whose allocation reaches the power is
  reported as (n_a, n_b), each at least 2.

Power uses the Welch–Satterthwaite degrees of freedom and, for superiority, the noncentral t; for
equivalence the standard approximation that treats the standard error as known (the estimate a
shifted t). A planning figure, not a promise: new seeds move the variances too.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats

SUPERIORITY, EQUIVALENCE = "superiority", "equivalence"


def _finite(values: Sequence[float]) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)


def per_seed_cv2(values: Sequence[float]) -> float:
    """The squared coefficient of variation of one seed's value (NaN with fewer than two values or
    a non-positive mean): the delta-method variance of log(mean) times the number of seeds."""
    x = _finite(values)
    if len(x) < 2 or x.mean() <= 0:
        return math.nan
    return float(x.var(ddof=1) / x.mean() ** 2)


def _se_df(cv2_a: float, cv2_b: float, n_a: int, n_b: int) -> tuple[float, float]:
    va, vb = cv2_a / n_a, cv2_b / n_b
    denom = va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1)
    return math.sqrt(va + vb), ((va + vb) ** 2 / denom if denom > 0 else math.inf)


def superiority_power(cv2_a: float, cv2_b: float, n_a: int, n_b: int, delta: float, confidence: float) -> float:
    """Power of the two-sided Welch test on the log ratio of means (its CI at ``confidence``
    excludes 0) with ``n_a`` and ``n_b`` seeds when the true relative change is ``delta``."""
    se, df = _se_df(cv2_a, cv2_b, n_a, n_b)
    if se == 0:
        return 1.0
    effect = abs(math.log1p(delta)) / se
    crit = float(stats.t.ppf(0.5 + confidence / 2, df))
    return float(stats.nct.sf(crit, df, effect) + stats.nct.cdf(-crit, df, effect))


def equivalence_power(cv2_a: float, cv2_b: float, n_a: int, n_b: int, effect: float, delta: float,
                      confidence: float) -> float:
    """Power of two one-sided tests: the probability that the CI at ``confidence`` of the relative
    change lies inside (−delta, +delta) when the true change is ``effect`` (see the module docstring)."""
    se, df = _se_df(cv2_a, cv2_b, n_a, n_b)
    theta, low, high = math.log1p(effect), math.log1p(-delta), math.log1p(delta)
    if se == 0:
        return float(low < theta < high)
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    if high - half <= low + half:
        return 0.0
    return float(max(stats.t.cdf((high - half - theta) / se, df) - stats.t.cdf((low + half - theta) / se, df), 0.0))


def allocate(total: int, cv2_a: float, cv2_b: float) -> tuple[int, int]:
    """``total`` seeds split between the arms in proportion to their coefficients of variation (each
    at least 2; an arm without spread gets 2)."""
    sa, sb = math.sqrt(cv2_a), math.sqrt(cv2_b)
    share = 0.5 if sa + sb == 0 else sa / (sa + sb)
    n_a = min(max(int(round(total * share)), 2), total - 2)
    return n_a, total - n_a


@dataclass(frozen=True)
class SeedPlan:
    """Seeds per arm (``n_a`` for the compared strategy, ``n_b`` for the baseline) at which the
    ``decision`` reaches ``power``, assuming the true change ``effect``."""

    decision: str
    n_a: int
    n_b: int
    power: float
    effect: float
    confidence: float

    @property
    def total(self) -> int:
        return self.n_a + self.n_b

    def as_dict(self) -> dict[str, float | int | str]:
        return {**asdict(self), "total": self.total}


def pending_decision(estimate: float, delta: float) -> str:
    """Equivalence when the observed change lies inside the margin, superiority otherwise."""
    return EQUIVALENCE if math.isfinite(estimate) and -delta < estimate < delta else SUPERIORITY


def seeds_needed(a: Sequence[float], b: Sequence[float], delta: float, confidence: float,
                 equivalence_confidence: float, power: float = 0.8, max_seeds: int = 1000) -> SeedPlan | None:
    """The seeds per arm (``a`` the compared strategy's per-seed values, ``b`` the baseline's) that
    the pending decision needs (see the module docstring): superiority at ``delta`` with the CI at
    ``confidence``, or equivalence at the observed change with the CI at ``equivalence_confidence``.
    None when undefined (fewer than two values in an arm, a non-positive mean) or beyond ``max_seeds``
    per arm."""
    x, y = _finite(a), _finite(b)
    cv2_a, cv2_b = per_seed_cv2(x), per_seed_cv2(y)
    if not (math.isfinite(cv2_a) and math.isfinite(cv2_b)):
        return None
    estimate = float(x.mean() / y.mean() - 1)
    decision = pending_decision(estimate, delta)
    for total in range(4, 2 * max_seeds + 1):
        n_a, n_b = allocate(total, cv2_a, cv2_b)
        if max(n_a, n_b) > max_seeds:
            return None
        if decision == EQUIVALENCE:
            reached = equivalence_power(cv2_a, cv2_b, n_a, n_b, estimate, delta, equivalence_confidence)
            effect, level = estimate, equivalence_confidence
        else:
            reached = superiority_power(cv2_a, cv2_b, n_a, n_b, delta, confidence)
            effect, level = delta, confidence
        if reached >= power:
            return SeedPlan(decision, n_a, n_b, reached, effect, level)
    return None
