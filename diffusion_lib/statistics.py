"""Statistics of the comparison (SPEC §8): per-strategy summaries, pairwise tests, the verdict.

* :func:`summarize`: per group, n, mean, std (ddof 1), and the 95% Student-t confidence interval.
* :func:`welch`: Welch's two-sided two-sample t-test over per-seed values.
* :func:`paired`: a paired test on per-problem errors. Every run sees the same held-out problems,
  so each strategy's per-problem error is averaged over its seeds and the two strategies are
  compared problem by problem (paired t-test, and the Wilcoxon signed-rank test as a check that
  does not assume normal differences).
* :func:`verdict`: which of the four scenarios of SPEC §8 the data support, with the reasons.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05


def summarize(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """n, mean, std, sem and a two-sided Student-t confidence interval of finite ``values``."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
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


def welch(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Welch's t-test of mean(a) vs mean(b) (two-sided); NaN where it is undefined (n < 2 or no spread)."""
    x = np.asarray([v for v in a if math.isfinite(v)], dtype=float)
    y = np.asarray([v for v in b if math.isfinite(v)], dtype=float)
    if len(x) < 2 or len(y) < 2 or (x.std() == 0 and y.std() == 0):
        return {"t": math.nan, "p": math.nan}
    res = stats.ttest_ind(x, y, equal_var=False)
    return {"t": float(res.statistic), "p": float(res.pvalue)}


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Paired tests of per-problem errors ``a`` vs ``b`` (same problems, same order)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(f"paired test needs two equal-length vectors, got {a.shape} and {b.shape}")
    diff = a - b
    if not np.isfinite(diff).all() or np.all(diff == 0):
        return {"mean_diff": float(np.mean(diff)), "t": math.nan, "p_t": math.nan, "p_wilcoxon": math.nan}
    t = stats.ttest_rel(a, b)
    w = stats.wilcoxon(a, b)
    return {"mean_diff": float(diff.mean()), "t": float(t.statistic), "p_t": float(t.pvalue),
            "p_wilcoxon": float(w.pvalue)}


def relative_change(value: float, reference: float) -> float:
    """(value - reference) / reference: negative means lower (better for errors) than the reference."""
    return (value - reference) / reference if reference else math.nan


@dataclass
class StrategyOutcome:
    """What the verdict needs of one strategy (over its seeds)."""

    name: str
    mode: str
    mse: list[float]              # primary metric per completed seed
    residual: list[float]         # mean reconstruction residual per completed seed
    seconds_per_step: list[float]  # training cost per step (CPU time on CPU, wall time on GPU)
    diverged: int = 0             # runs that diverged
    runs: int = 0                 # runs expected


@dataclass
class Verdict:
    scenario: str                 # "adversarial wins" | "random best" | "baseline best" | "training unstable"
    criteria: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def verdict(baseline: StrategyOutcome, random: StrategyOutcome | None, adversarial: StrategyOutcome | None,
            improvement: float = 0.05, alpha: float = ALPHA) -> Verdict:
    """Decide the scenario of SPEC §8 from per-seed outcomes.

    Adversarial mining wins when (1) its mean MSE is lower than the baseline's by more than
    ``improvement`` (relative) with Welch p < ``alpha``, (2) its mean residual is lower, (3) no run
    diverged, and (4) its time per training step is below 2x the baseline's. Otherwise: "training
    unstable" if a mining strategy (or the baseline) diverged; "random best" if random negatives
    beat the baseline by the same significance standard and have the lowest mean; else "baseline
    best" (mining does not help).
    """
    v = Verdict("baseline best")
    base_mse, base_res, base_time = _mean(baseline.mse), _mean(baseline.residual), _mean(baseline.seconds_per_step)
    unstable = [s.name for s in (baseline, random, adversarial) if s is not None and s.diverged]
    if adversarial is not None:
        adv_mse = _mean(adversarial.mse)
        rel = relative_change(adv_mse, base_mse)
        test = welch(adversarial.mse, baseline.mse)
        time_ratio = _mean(adversarial.seconds_per_step) / base_time if base_time else math.nan
        c = {
            "1_mse_better_by_5pct_and_significant": bool(rel < -improvement and test["p"] < alpha),
            "2_residual_lower": bool(_mean(adversarial.residual) < base_res),
            "3_stable": adversarial.diverged == 0,
            "4_time_below_2x": bool(time_ratio < 2.0),
        }
        v.criteria = {**c, "relative_mse_change": rel, "welch_p": test["p"], "time_ratio": time_ratio}
        v.reasons.append(f"adversarial vs baseline: MSE change {rel:+.2%} (Welch p = {test['p']:.3g}), "
                         f"residual {_mean(adversarial.residual):.4g} vs {base_res:.4g}, "
                         f"{adversarial.diverged}/{adversarial.runs} runs diverged, time/step ratio {time_ratio:.2f}")
        if all(c.values()):
            v.scenario = "adversarial wins"
            return v
    if unstable:
        v.scenario = "training unstable"
        v.reasons.append(f"runs diverged in: {', '.join(unstable)}")
        return v
    if random is not None:
        rnd_mse = _mean(random.mse)
        rel = relative_change(rnd_mse, base_mse)
        test = welch(random.mse, baseline.mse)
        v.reasons.append(f"random vs baseline: MSE change {rel:+.2%} (Welch p = {test['p']:.3g})")
        lowest = adversarial is None or not rnd_mse > _mean(adversarial.mse)
        if rel < -improvement and test["p"] < alpha and lowest:
            v.scenario = "random best"
            return v
    v.reasons.append("no mining strategy beats the baseline by more than "
                     f"{improvement:.0%} with p < {alpha}: mining does not help at this scale")
    return v
