"""Statistics of the comparison (method §8), with the training run (one seed) as the unit of replication.

Per-problem errors inside a run are never treated as replicates: every function here takes one
number per run (a seed's test MSE on the whole held-out set).

* :func:`summarize` / :func:`t_interval`: mean, std and the Student-t confidence interval over seeds,
  the one interval method of every table and figure.
* :func:`relative_change_ci`: the relative change mean(a)/mean(b) - 1 with its confidence interval
  and p-value, by Welch's method with the delta method on the log scale (below).
* :func:`holm`: Holm's step-down adjustment of the secondary endpoints' p-values.
* :func:`classify`: the label of a contrast (method §8.2, symmetric around 0), equivalence judged on
  its own CI (:func:`equivalence_level`: two one-sided tests); :func:`shifted_label` the label one
  doubling along a trend would give; the seeds a pending decision needs are
  :mod:`diffusion_lib.analysis.power`'s.

The relative change. With per-seed values a (n_a seeds) and b (n_b seeds), the log of the ratio of
means d = log(mean a) - log(mean b) has, by the delta method, variance
v = s_a² / (n_a · mean_a²) + s_b² / (n_b · mean_b²) (the squared coefficients of variation of the
two means), and Welch–Satterthwaite degrees of freedom
df = v² / ((s_a²/(n_a mean_a²))² / (n_a - 1) + (s_b²/(n_b mean_b²))² / (n_b - 1)).
The CI is exp(d ± t_{df, 1-α/2} · √v) - 1 and the p-value that of t = d / √v on df degrees of
freedom, so the CI excludes 0 exactly when p < α. Working on the log scale keeps the interval
inside (-100%, ∞) and makes it symmetric in the ratio.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05
#: The labels of one contrast (method §8.2), the same rules on both sides of 0: the decision CI beyond
#: the margin; equivalence (TOST) with the decision CI also excluding 0; equivalence alone; the
#: decision CI excluding 0 only; anything else.
BETTER_BEYOND, WORSE_BEYOND = "meaningfully better", "meaningfully worse"
BETTER_WITHIN, WORSE_WITHIN = "better by less than the margin", "worse by less than the margin"
EQUIVALENT = "equivalent"
BETTER, WORSE = "better, size not established", "worse, size not established"
INCONCLUSIVE = "inconclusive"
LABELS = (BETTER_BEYOND, BETTER_WITHIN, BETTER, EQUIVALENT, INCONCLUSIVE, WORSE, WORSE_WITHIN, WORSE_BEYOND)
BETTER_LABELS = (BETTER_BEYOND, BETTER_WITHIN, BETTER)
WORSE_LABELS = (WORSE_BEYOND, WORSE_WITHIN, WORSE)
EQUIVALENT_LABELS = (BETTER_WITHIN, EQUIVALENT, WORSE_WITHIN)


def _finite(values: Sequence[float]) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)


def p_text(p: float) -> str:
    """A p-value for people: ``< 0.001`` or three decimals (``n/a`` when undefined), never e-notation."""
    if p is None or not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def level_text(confidence: float) -> str:
    """A confidence level for people: ``97.5%``, ``95%`` (no trailing ``.0``)."""
    return f"{100 * confidence:.3g}%"


def summarize(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """n, mean, std, sem and a two-sided Student-t confidence interval of the finite ``values``."""
    x = _finite(values)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "sem": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    mean = float(x.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "std": math.nan, "sem": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    std = float(x.std(ddof=1))
    sem = std / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sem
    return {"n": n, "mean": mean, "std": std, "sem": sem, "ci_low": mean - half, "ci_high": mean + half}


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """(low, high) of the Student-t CI of the mean; seaborn takes it as ``errorbar=t_interval``.
    With one value the interval collapses to that value."""
    s = summarize(values, confidence)
    if s["n"] == 1:
        return s["mean"], s["mean"]
    return s["ci_low"], s["ci_high"]


@dataclass(frozen=True)
class RelativeChange:
    """mean(a)/mean(b) - 1 with its CI (at ``confidence``) and two-sided p-value; see the module doc."""

    estimate: float
    ci_low: float
    ci_high: float
    p: float
    df: float
    se_log: float
    n_a: int
    n_b: int
    confidence: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def _log_ratio_parts(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """(d, va, vb) with va, vb the delta-method variances of log(mean a), log(mean b)."""
    ma, mb = a.mean(), b.mean()
    va = a.var(ddof=1) / (len(a) * ma ** 2)
    vb = b.var(ddof=1) / (len(b) * mb ** 2)
    return float(math.log(ma) - math.log(mb)), float(va), float(vb), float(ma / mb - 1)


def welch_df(va: float, vb: float, na: int, nb: int) -> float:
    """Welch–Satterthwaite degrees of freedom of two means with variances ``va``, ``vb`` of ``na``, ``nb`` values."""
    denom = va ** 2 / (na - 1) + vb ** 2 / (nb - 1)
    return (va + vb) ** 2 / denom if denom > 0 else math.inf


def relative_change_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> RelativeChange:
    """Relative change of mean(``a``) versus mean(``b``) (per-seed values, positive), Welch + delta method.

    NaN where it is undefined: fewer than two finite values in an arm, or a non-positive mean.
    Two arms without any spread give a zero-width interval and p = 0 (or 1 when the means agree).
    """
    x, y = _finite(a), _finite(b)
    if not (len(x) and len(y) and x.mean() > 0 and y.mean() > 0):
        return RelativeChange(*[math.nan] * 6, len(x), len(y), confidence)
    if len(x) < 2 or len(y) < 2:  # a point estimate, but no interval
        return RelativeChange(float(x.mean() / y.mean() - 1), *[math.nan] * 5, len(x), len(y), confidence)
    d, va, vb, estimate = _log_ratio_parts(x, y)
    se = math.sqrt(va + vb)
    if se == 0:
        p = 1.0 if d == 0 else 0.0
        return RelativeChange(estimate, estimate, estimate, p, math.inf, 0.0, len(x), len(y), confidence)
    df = welch_df(va, vb, len(x), len(y))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    p = float(2 * stats.t.sf(abs(d) / se, df))
    return RelativeChange(estimate, math.expm1(d - half), math.expm1(d + half), p, df, se, len(x), len(y), confidence)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control); NaN entries stay NaN and do not
    count towards the family size."""
    p = np.asarray(pvalues, dtype=float)
    idx = [i for i in np.argsort(p, kind="stable") if math.isfinite(p[i])]
    m = len(idx)
    adjusted = [math.nan] * len(p)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def equivalence_level(confidence: float) -> float:
    """The level of the CI that decides equivalence beside a two-sided CI at ``confidence``: two
    one-sided tests each at the same error rate per side, i.e. ``1 - 2 (1 - confidence)`` (95% beside
    the verdict's 97.5%, 90% beside a 95% CI)."""
    return 1 - 2 * (1 - confidence)


def classify(ci_low: float, ci_high: float, delta: float, eq_low: float | None = None,
             eq_high: float | None = None) -> str:
    """The label of a relative change (method §8.2; "better" means a lower MSE than the versus arm),
    from its decision CI (``ci_low``, ``ci_high``) and its equivalence CI (``eq_low``, ``eq_high``, at
    :func:`equivalence_level`; the decision CI when not given), the same rules on both sides of 0:
    decision CI entirely below -delta / above +delta: :data:`BETTER_BEYOND` / :data:`WORSE_BEYOND`;
    equivalence CI inside (-delta, +delta): :data:`EQUIVALENT`, or :data:`BETTER_WITHIN` /
    :data:`WORSE_WITHIN` when the decision CI also lies below / above 0; decision CI below / above 0
    otherwise: :data:`BETTER` / :data:`WORSE` (size not established); else (or NaN)
    :data:`INCONCLUSIVE`."""
    eq_low, eq_high = (ci_low, ci_high) if eq_low is None or eq_high is None else (eq_low, eq_high)
    if not all(math.isfinite(x) for x in (ci_low, ci_high, eq_low, eq_high)):
        return INCONCLUSIVE
    if ci_high < -delta:
        return BETTER_BEYOND
    if ci_low > delta:
        return WORSE_BEYOND
    if -delta < eq_low and eq_high < delta:
        return BETTER_WITHIN if ci_high < 0 else WORSE_WITHIN if ci_low > 0 else EQUIVALENT
    if ci_high < 0:
        return BETTER
    if ci_low > 0:
        return WORSE
    return INCONCLUSIVE


def side(label: str) -> str:
    """``better``, ``worse``, ``equivalent`` or ``open``: which way a label points."""
    if label in BETTER_LABELS:
        return "better"
    if label in WORSE_LABELS:
        return "worse"
    return "equivalent" if label == EQUIVALENT else "open"


def shifted_label(change: Mapping[str, Any], shift: float, delta: float) -> str:
    """The label of ``change`` (a :func:`judged_change` dict) with both its CIs moved by ``shift`` on
    the log scale: where one more doubling along a trend of ``shift`` per doubling would put it."""
    def move(x: float) -> float:
        return math.expm1(math.log1p(x) + shift) if math.isfinite(x) and x > -1 else math.nan
    return classify(move(change["ci_low"]), move(change["ci_high"]), delta, move(change["eq_low"]),
                    move(change["eq_high"]))


def judged_change(a: Sequence[float], b: Sequence[float], delta: float, confidence: float) -> dict[str, float | str]:
    """The relative change of ``a`` versus ``b`` (:func:`relative_change_ci` at ``confidence``, the
    decisions' level), its equivalence CI (``eq_low``, ``eq_high`` at ``eq_confidence``,
    :func:`equivalence_level`) and the ``outcome`` those two CIs give (:func:`classify`)."""
    rc = relative_change_ci(a, b, confidence)
    level = equivalence_level(confidence)
    eq = relative_change_ci(a, b, level)
    return {**rc.as_dict(), "eq_low": eq.ci_low, "eq_high": eq.ci_high, "eq_confidence": level,
            "outcome": classify(rc.ci_low, rc.ci_high, delta, eq.ci_low, eq.ci_high)}
