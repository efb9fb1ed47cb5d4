"""Statistics with the seed as the unit: intervals, the relative-change CI, Holm, classification."""
import math

import numpy as np
import pytest
from scipy import stats

from diffusion_lib.analysis.power import EQUIVALENCE, SUPERIORITY, allocate, equivalence_power, pending_decision, seeds_needed, superiority_power
from diffusion_lib.analysis.statistics import BETTER, BETTER_BEYOND, BETTER_WITHIN, EQUIVALENT, INCONCLUSIVE, LABELS, WORSE, WORSE_BEYOND, WORSE_WITHIN, classify, shifted_label, equivalence_level, holm, judged_change, relative_change_ci, summarize, t_interval


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
    (-0.12, -0.06, BETTER_BEYOND), (0.06, 0.12, WORSE_BEYOND), (-0.04, 0.03, EQUIVALENT),
    (0.01, 0.04, WORSE_WITHIN), (-0.04, -0.01, BETTER_WITHIN), (0.02, 0.09, WORSE), (-0.09, -0.02, BETTER),
    (-0.08, 0.01, INCONCLUSIVE), (-0.06, 0.06, INCONCLUSIVE), (math.nan, 0.1, INCONCLUSIVE)])
def test_classify_regions_in_spec_order(low, high, outcome):
    assert classify(low, high, 0.05) == outcome


@pytest.mark.parametrize("low, high", [(-0.12, -0.06), (-0.04, 0.03), (0.01, 0.04), (0.02, 0.09), (-0.08, 0.01),
                                       (0.036, 0.056)])
def test_labels_are_symmetric_around_zero(low, high):
    """method §8.2: the same rules on both sides of 0. Mirroring a CI mirrors its label (today's pilot,
    +3.6% to +5.6%, and its mirror image read 'worse' and 'better', size not established)."""
    pairs = [(BETTER_BEYOND, WORSE_BEYOND), (BETTER_WITHIN, WORSE_WITHIN), (BETTER, WORSE)]
    mirror = {**dict(pairs), **{b: a for a, b in pairs}, EQUIVALENT: EQUIVALENT, INCONCLUSIVE: INCONCLUSIVE}
    assert set(mirror) == set(LABELS)
    assert classify(-high, -low, 0.05) == mirror[classify(low, high, 0.05)]
    assert classify(0.036, 0.056, 0.05) == WORSE and classify(-0.056, -0.036, 0.05) == BETTER


def test_shifted_label_moves_both_cis_on_the_log_scale():
    change = {"ci_low": 0.036, "ci_high": 0.056, "eq_low": 0.04, "eq_high": 0.052, "outcome": WORSE}
    assert shifted_label(change, 0.0, 0.05) == WORSE
    assert shifted_label(change, -0.045, 0.05) == EQUIVALENT  # a closing trend brings the CI around 0
    assert shifted_label(change, -0.07, 0.05) == BETTER_WITHIN  # and past it
    assert shifted_label(change, 0.03, 0.05) == WORSE_BEYOND


def _exact(mean, std, n):
    """n values with exactly this mean and sample standard deviation."""
    z = np.linspace(-1, 1, n)
    return mean + std * (z - z.mean()) / z.std(ddof=1)


def test_equivalence_is_judged_on_its_own_ci_two_one_sided_tests():
    """method §8.2: equivalence by TOST at the Bonferroni level is the 95% CI beside the decisions' 97.5%:
    a CI that is inside the margin at 95% but not at 97.5% is equivalent; other decisions stay at 97.5%."""
    assert equivalence_level(0.975) == pytest.approx(0.95) and equivalence_level(0.95) == pytest.approx(0.90)
    # 97.5% CI pokes out of the margin, 95% CI lies inside it: equivalent (fails with a single CI)
    assert classify(-0.055, 0.03, 0.05) == INCONCLUSIVE
    assert classify(-0.055, 0.03, 0.05, -0.045, 0.025) == EQUIVALENT
    # beyond-the-margin labels are read on the decision CI, not on the narrower equivalence CI
    assert classify(-0.12, -0.045, 0.05, -0.11, -0.055) == BETTER
    assert classify(-0.001, 0.09, 0.05, 0.004, 0.08) == INCONCLUSIVE
    base, adv = _exact(0.0100, 0.00012, 5), _exact(0.0102, 0.00025, 6)
    judged = judged_change(adv, base, 0.05, 0.975)
    wide, narrow = relative_change_ci(adv, base, 0.975), relative_change_ci(adv, base, 0.95)
    assert judged["ci_low"] == wide.ci_low and judged["eq_low"] == narrow.ci_low and judged["eq_confidence"] == 0.95
    assert judged["outcome"] == classify(wide.ci_low, wide.ci_high, 0.05, narrow.ci_low, narrow.ci_high)


def _simulated(cv_a, cv_b, n_a, n_b, effect, confidence, decided, trials=4000, seed=1):
    """Share of simulated studies (true relative change ``effect``, each arm its own spread) whose CI
    at ``confidence`` satisfies ``decided(ci_low, ci_high)``."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(trials):
        a = (1 + effect) * (1 + cv_a * rng.standard_normal(n_a))
        b = 1 + cv_b * rng.standard_normal(n_b)
        rc = relative_change_ci(a, b, confidence)
        hits += decided(rc.ci_low, rc.ci_high)
    return hits / trials


def test_superiority_power_matches_simulated_studies_with_unequal_arms():
    for n_a, n_b in ((6, 3), (9, 4)):
        predicted = superiority_power(0.04 ** 2, 0.01 ** 2, n_a, n_b, 0.05, 0.975)
        simulated = _simulated(0.04, 0.01, n_a, n_b, 0.05, 0.975, lambda lo, hi: lo > 0 or hi < 0, trials=3000)
        assert simulated == pytest.approx(predicted, abs=0.04)


def test_equivalence_power_matches_simulated_studies():
    for n_a, n_b, effect in ((8, 3, 0.01), (12, 4, 0.02)):
        predicted = equivalence_power(0.024 ** 2, 0.001 ** 2, n_a, n_b, effect, 0.05, 0.95)
        inside = _simulated(0.024, 0.001, n_a, n_b, effect, 0.95, lambda lo, hi: -0.05 < lo and hi < 0.05)
        assert inside == pytest.approx(predicted, abs=0.05)
    assert equivalence_power(0.024 ** 2, 0.001 ** 2, 8, 3, 0.06, 0.05, 0.95) < 0.05  # outside the margin: hopeless


def test_the_pending_decision_gets_its_seeds_where_the_variance_is():
    """Inside the margin the pending decision is equivalence at the observed change, else superiority
    at delta; the noisy arm gets the seeds (the pilot: baseline CV 0.09%, adversarial 2.4%)."""
    assert pending_decision(0.02, 0.05) == EQUIVALENCE and pending_decision(-0.08, 0.05) == SUPERIORITY
    assert pending_decision(0.06, 0.05) == SUPERIORITY
    assert allocate(10, 0.024 ** 2, 0.0009 ** 2) == (8, 2) and allocate(10, 0.01, 0.01) == (5, 5)
    adv, base = _exact(0.0102, 0.0102 * 0.024, 6), _exact(0.0100, 0.0100 * 0.0009, 5)
    plan = seeds_needed(adv, base, 0.05, 0.975, 0.95)
    assert plan.decision == EQUIVALENCE and plan.effect == pytest.approx(0.02)
    assert plan.n_a > plan.n_b == 2 and plan.power >= 0.8
    fewer = allocate(plan.total - 1, 0.024 ** 2, 0.0009 ** 2)
    assert equivalence_power(0.024 ** 2, 0.0009 ** 2, *fewer, 0.02, 0.05, 0.95) < 0.8  # the smallest total
    # the same arms at 8% apart: the pending decision is superiority at delta
    far = seeds_needed(_exact(0.0092, 0.0092 * 0.024, 6), base, 0.05, 0.975, 0.95)
    assert far.decision == SUPERIORITY and far.effect == 0.05 and far.confidence == 0.975
    assert superiority_power(0.024 ** 2, 0.0009 ** 2, far.n_a, far.n_b, 0.05, 0.975) >= 0.8
    assert seeds_needed([0.01], base, 0.05, 0.975, 0.95) is None
    assert seeds_needed(_exact(0.0100, 0.005, 3), _exact(0.0100, 0.005, 3), 0.05, 0.975, 0.95, max_seeds=20) is None
