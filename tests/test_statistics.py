"""Statistics with the seed as the unit: intervals, the relative-change CI, Holm, classification."""
import math

import numpy as np
import pytest
from scipy import stats

from diffusion_lib.statistics import (EQUIVALENT, HELPS, INCONCLUSIVE, WORSE, classify, holm, relative_change_ci,
                                      seeds_needed, summarize, t_interval, welch_power)


def test_summarize_student_t_interval():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s["mean"] == 2.5 and s["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    half = stats.t.ppf(0.975, 3) * s["std"] / 2
    assert s["ci_low"] == pytest.approx(2.5 - half) and s["ci_high"] == pytest.approx(2.5 + half)
    assert summarize([5.0])["n"] == 1 and math.isnan(summarize([5.0])["ci_low"])
    assert summarize([1.0, math.nan, 3.0])["n"] == 2
    assert t_interval([1.0, 2.0, 3.0, 4.0]) == pytest.approx((s["ci_low"], s["ci_high"]))
    assert t_interval([7.0]) == (7.0, 7.0)


def test_relative_change_matches_the_delta_method_by_hand():
    a, b = [0.0102, 0.0099, 0.0105, 0.0101], [0.0110, 0.0108, 0.0113, 0.0109, 0.0111]
    rc = relative_change_ci(a, b)
    ma, mb = np.mean(a), np.mean(b)
    va, vb = np.var(a, ddof=1) / (4 * ma ** 2), np.var(b, ddof=1) / (5 * mb ** 2)
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 4)
    d, se = math.log(ma / mb), math.sqrt(va + vb)
    half = stats.t.ppf(0.975, df) * se
    assert rc.estimate == pytest.approx(ma / mb - 1)
    assert (rc.ci_low, rc.ci_high) == pytest.approx((math.expm1(d - half), math.expm1(d + half)))
    assert rc.p == pytest.approx(2 * stats.t.sf(abs(d) / se, df)) and rc.df == pytest.approx(df)
    assert rc.ci_high < 0 and rc.p < 0.05  # the CI excludes 0 exactly when p < alpha


def test_relative_change_ci_has_its_nominal_coverage():
    """Simulated studies (5 vs 5 seeds, 3% seed-to-seed spread, true change -4%): the 95% CI covers
    the truth in 95% ± 1.5% of them. A pooled per-problem interval would not come close."""
    rng = np.random.default_rng(0)
    truth, hits, trials = -0.04, 0, 4000
    for _ in range(trials):
        a = 0.0100 * (1 + truth) * (1 + 0.03 * rng.standard_normal(5))
        b = 0.0100 * (1 + 0.03 * rng.standard_normal(5))
        rc = relative_change_ci(a, b)
        hits += rc.ci_low <= truth <= rc.ci_high
    assert abs(hits / trials - 0.95) < 0.015


def test_relative_change_degenerate_inputs():
    assert math.isnan(relative_change_ci([1.0], [1.0, 2.0]).ci_low)
    assert relative_change_ci([1.0], [2.0, 2.0]).estimate == pytest.approx(-0.5)
    assert math.isnan(relative_change_ci([], [1.0, 2.0]).estimate)
    same = relative_change_ci([2.0, 2.0], [1.0, 1.0])
    assert same.estimate == same.ci_low == same.ci_high == pytest.approx(1.0) and same.p == 0.0


def test_holm_adjusts_step_down_and_keeps_nan():
    adjusted = holm([0.01, 0.04, 0.03, math.nan])
    assert adjusted[0] == pytest.approx(0.03) and adjusted[2] == pytest.approx(0.06)
    assert adjusted[1] == pytest.approx(0.06) and math.isnan(adjusted[3])  # monotone: max(0.06, 0.04)
    assert holm([0.5, 0.9]) == [1.0, 1.0]


@pytest.mark.parametrize("low, high, outcome", [
    (-0.12, -0.06, HELPS), (-0.04, 0.03, EQUIVALENT), (0.01, 0.04, EQUIVALENT), (0.02, 0.09, WORSE),
    (-0.08, 0.01, INCONCLUSIVE), (-0.06, -0.03, INCONCLUSIVE), (math.nan, 0.1, INCONCLUSIVE)])
def test_classify_regions_in_spec_order(low, high, outcome):
    assert classify(low, high, 0.05) == outcome


def _exact(mean, std, n):
    """n values with exactly this mean and sample standard deviation."""
    z = np.linspace(-1, 1, n)
    return mean + std * (z - z.mean()) / z.std(ddof=1)


def _simulated_power(cv_a, cv_b, n, delta, confidence, trials=4000, seed=0):
    """Share of simulated studies (n seeds per arm, true change delta, each arm its own spread)
    whose Welch + delta-method CI excludes 0."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(trials):
        a = (1 + delta) * (1 + cv_a * rng.standard_normal(n))
        b = 1 + cv_b * rng.standard_normal(n)
        rc = relative_change_ci(a, b, confidence)
        hits += rc.ci_low > 0 or rc.ci_high < 0
    return hits / trials


def test_seeds_needed_gives_80_percent_power_at_delta():
    """The returned size detects a change of delta in 80% of simulated studies; one seed fewer does not."""
    adv, base = _exact(0.0103, 0.0004, 3), _exact(0.0100, 0.0002, 3)
    n = seeds_needed(adv, base, 0.05, confidence=0.975)
    cv_a, cv_b = 0.0004 / 0.0103, 0.0002 / 0.0100
    assert n is not None and n > 2
    assert welch_power(cv_a ** 2, cv_b ** 2, n, 0.05, 0.975) >= 0.8 > welch_power(cv_a ** 2, cv_b ** 2, n - 1, 0.05,
                                                                                  0.975)
    assert _simulated_power(cv_a, cv_b, n, 0.05, 0.975) == pytest.approx(welch_power(cv_a ** 2, cv_b ** 2, n, 0.05,
                                                                                     0.975), abs=0.03)
    # the planning figure does not depend on where the observed means happen to lie
    assert seeds_needed(_exact(0.0095, 0.0004 * 0.95 / 1.03, 3), base, 0.05, confidence=0.975) == n


def test_seeds_needed_uses_each_arms_own_variance():
    """A noisy arm against a quiet one needs the same seeds in either role, and fewer than two noisy
    arms: neither arm's variance stands in for the other's."""
    noisy, quiet = _exact(0.0100, 0.0008, 4), _exact(0.0100, 0.0001, 4)
    one_way, other_way = seeds_needed(noisy, quiet, 0.05), seeds_needed(quiet, noisy, 0.05)
    both = seeds_needed(noisy, _exact(0.0100, 0.0008, 4), 0.05)
    assert one_way == other_way and both > one_way
    assert seeds_needed(quiet, quiet, 0.05) < one_way
    assert seeds_needed([0.01], quiet, 0.05) is None
    assert seeds_needed(_exact(0.0100, 0.005, 3), _exact(0.0100, 0.005, 3), 0.05, max_seeds=20) is None
