import math

import numpy as np
import pytest
from scipy import stats

from diffusion_lib.statistics import StrategyOutcome, paired, summarize, verdict, welch


def test_summarize_student_t_interval():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s["mean"] == 2.5 and s["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    half = stats.t.ppf(0.975, 3) * s["std"] / 2
    assert s["ci_low"] == pytest.approx(2.5 - half) and s["ci_high"] == pytest.approx(2.5 + half)
    assert summarize([5.0])["n"] == 1 and math.isnan(summarize([5.0])["ci_low"])
    assert summarize([1.0, math.nan, 3.0])["n"] == 2


def test_welch_matches_scipy_and_handles_degenerate_input():
    a, b = [1.0, 1.2, 0.9, 1.1], [1.5, 1.7, 1.6, 1.9]
    assert welch(a, b)["p"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert math.isnan(welch([1.0], b)["p"])


def test_paired_detects_consistent_per_problem_difference():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.01, 0.02, 200)
    better = base * 0.9
    out = paired(better, base)
    assert out["mean_diff"] < 0 and out["p_t"] < 1e-10 and out["p_wilcoxon"] < 1e-10
    with pytest.raises(ValueError):
        paired(base[:3], base[:4])


def _o(name, mode, mse, residual=None, sps=0.01, diverged=0):
    return StrategyOutcome(name, mode, mse, residual or [m * 100 for m in mse], [sps] * len(mse), diverged, len(mse) + diverged)


BASE = _o("baseline", "none", [0.0100, 0.0101, 0.0099, 0.0100])


def test_verdict_adversarial_wins():
    adv = _o("adversarial", "adversarial", [0.0090, 0.0091, 0.0089, 0.0090], sps=0.015)
    v = verdict(BASE, _o("random", "random", [0.0099, 0.0100, 0.0101, 0.0100]), adv)
    assert v.scenario == "adversarial wins" and all(v.criteria[k] for k in v.criteria if k[0].isdigit())


def test_verdict_fails_on_training_time():
    adv = _o("adversarial", "adversarial", [0.0090, 0.0091, 0.0089, 0.0090], sps=0.03)
    v = verdict(BASE, None, adv)
    assert v.scenario == "baseline best" and v.criteria["4_time_below_2x"] is False


def test_verdict_random_best():
    rnd = _o("random", "random", [0.0080, 0.0081, 0.0079, 0.0080])
    adv = _o("adversarial", "adversarial", [0.0101, 0.0102, 0.0100, 0.0101])
    assert verdict(BASE, rnd, adv).scenario == "random best"


def test_verdict_baseline_best_when_differences_are_small():
    adv = _o("adversarial", "adversarial", [0.0098, 0.0101, 0.0099, 0.0100])
    assert verdict(BASE, _o("random", "random", [0.0100, 0.0102, 0.0099, 0.0101]), adv).scenario == "baseline best"


def test_verdict_unstable_when_a_mining_run_diverged():
    adv = _o("adversarial", "adversarial", [0.0090, 0.0091, 0.0089], diverged=1)
    v = verdict(BASE, None, adv)
    assert v.scenario == "training unstable" and v.criteria["3_stable"] is False
