"""The stability study's analysis (issue 44; diffusion_lib.analysis.survival): times to instability
with censoring, Kaplan-Meier, the log-rank test with the run as the unit, the stable learning-rate
range. Synthetic cases where the test must find a difference and where it must not."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from diffusion_lib.analysis.instability import InstabilityRule, ratio_to_best
from diffusion_lib.analysis.survival import RunTime, fisher_counts, kaplan_meier, log_rank, run_times, stable_range


def _runs(arm, lr, times, events, first_seed=100):
    return [RunTime(arm, lr, first_seed + i, t, e) for i, (t, e) in enumerate(zip(times, events))]


def test_kaplan_meier_and_log_rank_match_a_hand_computation():
    km = kaplan_meier([1, 2, 3, 3], [True, True, False, False])
    assert km[["step", "at_risk", "events"]].values.tolist() == [[1, 4, 1], [2, 3, 1]]
    assert km["stable"].tolist() == pytest.approx([0.75, 0.5])
    assert (km["ci_low"] < km["stable"]).all() and (km["stable"] < km["ci_high"]).all() and (km["ci_high"] <= 1).all()
    # events at steps 1 and 2 in the first group, the second group censored at 3: O = 2, E = 1/2 + 1/3,
    # V = 1/4 + 2/9
    test = log_rank(_runs("a", 1e-3, [1, 2], [True, True]), _runs("b", 1e-3, [3, 3], [False, False]))
    assert test["observed"] == 2 and test["expected"] == pytest.approx(5 / 6)
    assert test["chi2"] == pytest.approx((7 / 6) ** 2 / (1 / 4 + 2 / 9))
    assert test["p"] == pytest.approx(0.0896, abs=5e-4)


def test_a_sure_difference_is_detected_and_a_null_one_is_not():
    rng = np.random.default_rng(0)
    # five runs of one arm blow up between steps 2,900 and 4,060; five of the other stay stable to 9,280
    early = _runs("baseline", 5e-4, rng.integers(2900, 4060, 5).tolist(), [True] * 5)
    stable = _runs("adversarial", 5e-4, [9280] * 5, [False] * 5)
    sure = log_rank(early, stable)
    assert sure["p"] < 0.01 and sure["observed"] > sure["expected"]
    assert fisher_counts(early, stable)["p"] < 0.01
    # two arms drawn from one distribution (each run unstable with chance 1/2 at a uniform step)
    for seed in range(5):
        draw = np.random.default_rng(seed)
        same = [_runs(arm, 5e-4, draw.integers(1000, 9280, 5).tolist(), (draw.random(5) < 0.5).tolist())
                for arm in ("baseline", "adversarial")]
        assert log_rank(*same)["p"] > 0.05, seed
    # nothing happened in either arm: no evidence at all
    assert log_rank(stable, _runs("random", 5e-4, [9280] * 5, [False] * 5))["p"] == 1.0


def test_the_earlier_two_seed_reading_is_weak_evidence():
    """4 of 4 runs without mined negatives unstable at lr 5e-4 against 0 of 2 adversarial runs
    (config/stability.yaml): Fisher's exact test, one-sided, p = 1/15."""
    without = _runs("none+random", 5e-4, [2900, 3480, 3480, 4060], [True] * 4)
    adversarial = _runs("adversarial", 5e-4, [9280, 9280], [False, False])
    assert fisher_counts(without, adversarial)["p"] == pytest.approx(1 / 15)


def test_times_come_from_the_curves_with_censoring_at_the_last_evaluation():
    rule = InstabilityRule(2.0)
    steps = [290, 580, 870, 1160, 1450]
    curves = pd.DataFrame(
        [{"strategy": "baseline", "seed": 100, "step": s, "val_mse_ema": v} for s, v in zip(steps, [1, .5, .2, .5, .6])]
        + [{"strategy": "adversarial", "seed": 100, "step": s, "val_mse_ema": v} for s, v in zip(steps, [1, .5, .4, .3, .3])]
        + [{"strategy": "adversarial", "seed": 100, "step": 1479, "val_mse_ema": math.nan}])
    times = run_times(curves, rule, {"baseline": ("none", 5e-4), "adversarial": ("adversarial", 5e-4)})
    # both watched to their last evaluation (1450; the unevaluated row at 1479 does not count)
    assert [t.__dict__ for t in times] == [
        {**RunTime("none", 5e-4, 100, 1160, True, 1450).__dict__, "peak": pytest.approx(3.0), "end_ratio": pytest.approx(3.0)},
        {**RunTime("adversarial", 5e-4, 100, 1450, False, 1450).__dict__, "peak": 1.0, "end_ratio": 1.0}]


def test_an_excursion_is_measured_against_the_lowest_value_before_it():
    rule = InstabilityRule(2.0)
    assert rule.excursion([1.0, 0.5, 2.0, 0.25, 0.5]) == {"peak": 4.0, "end": 2.0}
    assert rule.excursion([1.0, 0.9, math.nan, 0.8]) == {"peak": 1.0, "end": 1.0}  # non-finite skipped
    assert all(math.isnan(v) for v in rule.excursion([1.0, math.nan]).values())  # one finite value: unknown
    # a best of exactly 0: any rise above it is infinitely far, staying at it is no rise
    assert rule.excursion([0.5, 0.0, 0.0]) == {"peak": 1.0, "end": 1.0}
    assert rule.excursion([0.5, 0.0, 0.1]) == {"peak": math.inf, "end": math.inf}
    assert rule.first([1, 2, 3], [0.5, 0.0, 0.1])["ratio"] == math.inf
    assert ratio_to_best([{"val_mse_ema": v} for v in (0.5, 0.0, 0.1)]) == math.inf  # the live view's ratio too


def test_the_stable_range_names_the_edge_and_the_risk_bound_at_it():
    runs = (_runs("none", 2.5e-4, [9280] * 5, [False] * 5) + _runs("none", 5e-4, [3000] + [9280] * 4, [True] + [False] * 4)
            + _runs("adversarial", 2.5e-4, [9280] * 5, [False] * 5) + _runs("adversarial", 5e-4, [9280] * 5, [False] * 5)
            + _runs("adversarial", 1e-3, [2000] * 5, [True] * 5))
    table = stable_range(runs).set_index("arm")
    assert table.loc["none", "largest_stable_lr"] == 2.5e-4 and table.loc["none", "smallest_unstable_lr"] == 5e-4
    assert table.loc["adversarial", "largest_stable_lr"] == 5e-4 and table.loc["adversarial", "smallest_unstable_lr"] == 1e-3
    assert table.loc["adversarial", "risk_upper_95"] == pytest.approx(1 - 0.05 ** (1 / 5))  # 0 of 5: up to 45%
    # a stable rate above an unstable one does not extend the range
    odd = stable_range(_runs("none", 2.5e-4, [3000], [True]) + _runs("none", 5e-4, [9280], [False])).iloc[0]
    assert math.isnan(odd["largest_stable_lr"]) and odd["smallest_unstable_lr"] == 2.5e-4
