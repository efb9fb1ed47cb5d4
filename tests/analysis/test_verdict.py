"""The decision table of method §8: one test per outcome, from synthetic per-seed results and curves.

The first group calls :func:`verdict.decide` directly; the second runs the whole aggregation
(:func:`diffusion_lib.jobs.study.aggregate`) on synthetic per-run files, so the tables, the convergence gate and the
verdict are exercised together.
"""
import numpy as np
import pandas as pd
import pytest
from tests.synthetic_study import gap, study

from diffusion_lib.analysis.convergence import ConvergenceRule, run_gate, strategy_gate
from diffusion_lib.analysis.statistics import BETTER, BETTER_BEYOND, EQUIVALENT, WORSE, WORSE_BEYOND
from diffusion_lib.analysis.verdict import (BASELINE_BETTER, FINAL, MINING_HELPS, MOVING, NO_DIFFERENCE, NOT_DECIDED,
                                            UNDECIDED, UNSTABLE, Arm, decide, scenario)

CONVERGED = {"converged": True, "slope": 0.0, "slope_low": -0.01, "slope_high": 0.01, "from_step": 3000,
             "to_step": 4600, "evals_seen": 6, "per": "doubling", "tolerance": 0.025}


def _values(mean, spread=0.01, n=5):
    z = np.linspace(-1, 1, n)
    return list(mean * (1 + spread * (z - z.mean()) / z.std(ddof=1)))


def _arm(name, mode, mean, spread=0.01, n=5, gate=None, diverged=0):
    return Arm(name, mode, _values(mean, spread, n), n + diverged, diverged, gate if gate is not None else CONVERGED)


def _settled(name):
    """A contrast whose two trend readings are flat and tight over a three-rung ladder."""
    return gap(name, (0.0, 0.0, 0.0))


def _decide(baseline, mining, *args, **kw):
    """decide() with every mining contrast's trend flat unless ``gates`` is given."""
    kw.setdefault("gates", {a.name: _settled(a.name) for a in mining})
    return decide(baseline, mining, *args, **kw)


BASE = _arm("baseline", "none", 0.0100)


def test_mining_helps_names_the_adversarial_strategy():
    v = _decide(BASE, [_arm("adversarial", "adversarial", 0.0090), _arm("random", "random", 0.0100)], "ID MSE", 0.05)
    assert v.outcome == MINING_HELPS and v.strategy == "adversarial" and v.status == FINAL
    assert v.scenario == "adversarial wins" and v.contrasts[0]["outcome"] == BETTER_BEYOND
    assert v.confidence == pytest.approx(0.975)  # Bonferroni over the two mining strategies
    assert "meaningfully better" in v.sentence and "Final" in v.sentence


def test_mining_helps_names_random_when_only_random_helps():
    v = _decide(BASE, [_arm("adversarial", "adversarial", 0.0101), _arm("random", "random", 0.0085)], "ID MSE", 0.05)
    assert v.outcome == MINING_HELPS and v.strategy == "random" and v.scenario == "random best"


def test_outcomes_are_symmetric_a_mirror_image_reads_the_mirror_outcome():
    """Today's pilot (adversarial about +4.6%, CI above 0 but not beyond the margin) reads "baseline
    better, size not established"; its mirror image reads "mining helps", not "inconclusive"."""
    worse = _decide(BASE, [_arm("adversarial", "adversarial", 0.01046, spread=0.01, n=8)], "ID MSE", 0.05)
    better = _decide(BASE, [_arm("adversarial", "adversarial", 0.01 / 1.046, spread=0.01, n=8)], "ID MSE", 0.05)
    assert worse.outcome == BASELINE_BETTER and worse.contrasts[0]["outcome"] == WORSE
    assert better.outcome == MINING_HELPS and better.contrasts[0]["outcome"] == BETTER


def test_no_meaningful_difference_when_every_ci_is_inside_the_margin():
    v = _decide(BASE, [_arm("adversarial", "adversarial", 0.0101), _arm("random", "random", 0.0099)], "ID MSE", 0.05)
    # an equivalence outcome is not "baseline best": nothing is better, the baseline is only cheapest
    assert v.outcome == NO_DIFFERENCE and v.scenario == "no difference (the baseline is cheapest)"
    # every label stands beside the interval it was judged on: equivalence beside the TOST CI
    assert "(95% TOST CI" in v.sentence and "): equivalent" in v.sentence


def test_equivalence_is_decided_on_the_95_percent_ci_and_other_decisions_on_97_5():
    """Two mining arms: the TOST at the Bonferroni level is the 95% CI. A contrast whose 95% CI lies inside
    ±5% while its 97.5% CI does not is equivalent (method §8.2); the level is named in the sentence."""
    adv = _arm("adversarial", "adversarial", 0.0102, spread=0.025, n=6)
    v = _decide(BASE, [adv, _arm("random", "random", 0.0100)], "ID MSE", 0.05)
    c = v.contrasts[0]
    assert c["confidence"] == pytest.approx(0.975) and c["eq_confidence"] == pytest.approx(0.95)
    assert c["ci_high"] >= 0.05 > c["eq_high"] and c["eq_low"] > -0.05  # only the 95% CI is inside the margin
    assert v.outcome == NO_DIFFERENCE and "95% TOST CI" in v.sentence


def test_baseline_better_when_the_adversarial_ci_lies_beyond_the_margin():
    v = _decide(BASE, [_arm("adversarial", "adversarial", 0.0110), _arm("random", "random", 0.0100)], "ID MSE", 0.05)
    assert v.outcome == BASELINE_BETTER and v.contrasts[0]["outcome"] == WORSE_BEYOND
    # random is equivalent, so the baseline is not better than every mining arm: not "baseline best"
    assert v.scenario == "no gain from mining"


def test_baseline_best_needs_the_baseline_better_than_every_mining_arm():
    v = _decide(BASE, [_arm("adversarial", "adversarial", 0.0110), _arm("random", "random", 0.0108)], "ID MSE", 0.05)
    assert v.outcome == BASELINE_BETTER and v.scenario == "baseline best"
    assert scenario([{"mode": "adversarial", "outcome": WORSE}, {"mode": "random", "outcome": EQUIVALENT}]) \
        == "no gain from mining"
    assert scenario([{"mode": "adversarial", "outcome": "inconclusive"}]) is None


def test_the_adversarial_contrast_decides_when_random_is_open():
    v = _decide(BASE, [_arm("adversarial", "adversarial", 0.0110), _arm("random", "random", 0.0097, spread=0.08, n=3)],
                "ID MSE", 0.05)
    assert v.outcome == BASELINE_BETTER and v.strategy == "adversarial"
    assert "Beside it, random" in v.sentence and "inconclusive" in v.sentence
    assert v.scenario is None  # an open contrast supports no scenario
    v = _decide(BASE, [_arm("adversarial", "adversarial", 0.0100, spread=0.08, n=3), _arm("random", "random", 0.0110)],
                "ID MSE", 0.05)
    assert v.outcome == UNDECIDED and v.strategy == "adversarial"


def test_inconclusive_names_the_pending_decision_and_seeds_where_the_variance_is():
    """Inside the margin the pending decision is equivalence at the observed change; the noisy arm gets
    the seeds (the pilot's case: adversarial CV 2.4% vs baseline 0.09%)."""
    v = _decide(_arm("baseline", "none", 0.0100, spread=0.0009, n=5),
                [_arm("adversarial", "adversarial", 0.0102, spread=0.06, n=6)], "ID MSE", 0.05)
    assert v.outcome == UNDECIDED and v.scenario is None
    plan = v.contrasts[0]["seeds_needed"]
    assert plan["decision"] == "equivalence" and plan["n_a"] > plan["n_b"] and plan["power"] >= 0.8
    assert (f"the pending decision is equivalence at the observed change +2.0% (its 90% CI inside the margin): 80% "
            f"power would need about {plan['n_a']} adversarial and {plan['n_b']} baseline seeds") in v.sentence
    assert "the study has 6 and 5" in v.sentence
    far = _decide(_arm("baseline", "none", 0.0100, spread=0.05, n=3),
                  [_arm("adversarial", "adversarial", 0.0090, spread=0.08, n=3)], "ID MSE", 0.05)
    assert far.outcome == UNDECIDED and far.contrasts[0]["seeds_needed"]["decision"] == "superiority"
    assert "a change of 5% (its 95% CI excluding 0)" in far.sentence  # one mining arm: decisions at 95%


def test_an_arm_failing_the_plateau_check_is_not_decided_but_the_measurement_is_stated():
    falling = {"converged": False, "slope": -0.092, "slope_low": -0.12, "slope_high": -0.064, "from_step": 3190,
               "to_step": 4640, "evals_seen": 6, "per": "doubling", "tolerance": 0.025}
    v = _decide(BASE, [_arm("adversarial", "adversarial", 0.0080, gate=falling)], "ID MSE", 0.05)
    assert v.outcome == NOT_DECIDED and v.scenario is None and v.status is None
    assert "adversarial has not plateaued on its trunk: slope -0.092 per doubling" in v.sentence
    assert "Measured at this budget, not a verdict: adversarial -20.0%" in v.sentence
    unknown = _decide(BASE, [_arm("adversarial", "adversarial", 0.0080, gate={"converged": None, "evals_seen": 1})],
                      "ID MSE", 0.05)
    assert unknown.outcome == NOT_DECIDED and "too few trunk evaluations" in unknown.sentence


def test_a_gap_closing_per_doubling_is_still_moving_and_says_where_it_heads():
    """Synthetic fail case of the finality rule: a contrast closing at 0.07 per doubling on the trunk
    (the pilot's rate) keeps its label at this budget but is still moving, with the 2x extrapolation."""
    closing = gap("adversarial", (0.054, 0.046), samples=(278_400, 371_200), trunk=(-0.07, 0.04), rungs=(-0.02, 0.06))
    v = decide(BASE, [_arm("adversarial", "adversarial", 0.01046, n=8)], "ID MSE", 0.05,
               gates={"adversarial": closing})
    assert v.outcome == BASELINE_BETTER and v.status == MOVING and v.scenario is None
    assert "Still moving" in v.sentence and "closing" in v.sentence and "at 2× the budget" in v.sentence
    assert "Extrapolation, not a finding" in v.sentence and not v.finality["adversarial"]["final"]
    # the pass case: the same contrast with flat, tight trends is final
    flat = gap("adversarial", (0.046, 0.046), samples=(278_400, 371_200), trunk=(0.0, 0.01), rungs=(0.0, 0.02))
    v = decide(BASE, [_arm("adversarial", "adversarial", 0.0110, n=8)], "ID MSE", 0.05, gates={"adversarial": flat})
    assert v.status == FINAL and v.finality["adversarial"]["final"]


def test_a_flat_trend_that_one_doubling_would_relabel_is_not_final():
    """Both trend CIs lie within ±delta/2, but the contrast sits so close to 0 that one more doubling at
    a CI end would change its label: still moving."""
    near = gap("adversarial", (0.01, 0.01), samples=(278_400, 371_200), trunk=(-0.015, 0.005), rungs=(0.0, 0.005))
    v = decide(BASE, [_arm("adversarial", "adversarial", 0.0101, spread=0.001, n=8)], "ID MSE", 0.05,
               gates={"adversarial": near})
    assert v.status == MOVING and any("one more doubling" in r for r in v.finality["adversarial"]["reasons"])


def test_the_verdict_reads_only_a_usable_full_budget_rung():
    """The bug of issue 41: rungs 1,450 / 2,900 / 5,800, the full rung uninformative (the baseline drifts
    to skill ~3%). The gate used to pass on the first two while the verdict read the third."""
    excluded = gap("adversarial", (-0.30, -0.31, -0.347), samples=(92_800, 185_600, 371_200),
                   informative=(True, True, False))
    v = decide(BASE, [_arm("adversarial", "adversarial", 0.0065)], "ID MSE", 0.05, gates={"adversarial": excluded})
    assert v.outcome == NOT_DECIDED and "full-budget rung (5,800 steps)" in v.sentence and "uninformative" in v.sentence
    single = gap("adversarial", (-0.30, -0.31), samples=(185_600, 371_200), informative=(False, True))
    v = decide(BASE, [_arm("adversarial", "adversarial", 0.0065)], "ID MSE", 0.05, gates={"adversarial": single})
    assert v.outcome == NOT_DECIDED and "fewer than two informative rungs" in v.sentence


def test_looks_of_until_stable_widen_the_decision_ci():
    arms = [_arm("adversarial", "adversarial", 0.0110)]
    one, three = _decide(BASE, arms, "ID MSE", 0.05), _decide(BASE, arms, "ID MSE", 0.05, looks=3)
    assert one.confidence == pytest.approx(0.95) and three.confidence == pytest.approx(1 - 0.05 / 3)
    assert three.contrasts[0]["ci_low"] < one.contrasts[0]["ci_low"] and "3 looks of until_stable" in three.sentence


def test_a_diverged_run_makes_training_unstable_first():
    v = _decide(BASE, [_arm("adversarial", "adversarial", 0.0080, diverged=1)], "ID MSE", 0.05)
    assert v.outcome == UNSTABLE and v.scenario == "training instability" and "1 of 6 adversarial" in v.sentence


def test_an_unstable_run_without_a_nan_makes_training_unstable_naming_it():
    blown = "baseline seed 1 (rung 5,800): validation MSE 0.454 at step 5,220, 43.2x its best 0.0105 (step 2,900)"
    base = Arm("baseline", "none", _values(0.0100), 5, 0, CONVERGED, [blown])
    v = _decide(base, [_arm("adversarial", "adversarial", 0.0012)], "ID MSE", 0.05)
    assert v.outcome == UNSTABLE and v.scenario == "training instability"
    assert "1 of 5 baseline runs are unstable" in v.sentence and blown in v.sentence
    assert "No contrast involving these runs is reported as an estimate" in v.sentence


# --------------------------------------------------------------------------- plateau check
def _curve(values, start=1000, every=500):
    return pd.DataFrame({"step": [start + every * i for i in range(len(values))], "val_mse_ema": values})


def test_slope_rule_passes_a_plateau_and_fails_a_four_percent_linear_decline():
    """method §8.1: a slope, not a spread. A curve falling 4% per window of three evaluations passes the
    old ±2% window on three points; the slope over six evaluations fails it."""
    rule = ConvergenceRule()
    flat = rule.assess(*_curve([0.05, 0.0101, 0.0100, 0.01005, 0.0100, 0.01002, 0.0100]).T.values)
    assert flat["converged"] is True and abs(flat["slope"]) < 0.01
    decline = [0.0100 * (1 - 0.017 * i) for i in range(8)]  # linear: about -4% over a window of three
    falling = rule.assess(*_curve(decline).T.values)
    assert falling["converged"] is False and falling["slope_high"] < -0.025
    window = np.asarray(decline[-3:])
    assert np.max(np.abs(window - window.mean())) / window.mean() <= 0.02  # the old rule would have passed it
    assert rule.assess([500, 1000], [0.02, 0.01])["converged"] is None


def test_invalid_plateau_rules_name_the_field():
    with pytest.raises(ValueError, match="comparison.convergence.evals"):
        ConvergenceRule(evals=3)
    with pytest.raises(ValueError, match="comparison.convergence.per"):
        ConvergenceRule(per="epoch")
    per_k = ConvergenceRule(per="1000 steps", tolerance=0.01).assess(*_curve([0.01] * 6).T.values)
    assert per_k["converged"] is True and per_k["slope"] == pytest.approx(0.0)


def test_strategy_gate_reads_the_seed_mean_and_counts_runs():
    rows = []
    for seed, wiggle in enumerate([0.04, -0.04]):  # runs wiggle ±4% in opposite directions, the mean is flat
        for i, step in enumerate([1000, 1500, 2000, 2500, 3000, 3500]):
            rows.append({"strategy": "a", "seed": seed, "step": step, "val_mse_ema": 0.01 * (1 + wiggle * (i % 2))})
    curves = pd.DataFrame(rows)
    gate = strategy_gate(curves, ConvergenceRule()).iloc[0]
    assert gate["converged"] and gate["runs"] == 2 and gate["per"] == "doubling"
    assert len(run_gate(curves, ConvergenceRule())) == 2


# --------------------------------------------------------------------------- whole aggregation
def _study(tmp_path, arms):
    """Aggregate synthetic runs over a three-rung ladder whose smaller rungs repeat the full budget's
    values (a settled gap); ``arms`` maps strategy -> (mode, mean test MSE, kwargs)."""
    return study(tmp_path, arms)


def test_adversarial_ten_percent_better_but_costlier_never_reads_baseline_best(tmp_path):
    v = _study(tmp_path, {"baseline": ("none", 0.0100, {"cost": 0.010}),
                          "random": ("random", 0.0100, {"cost": 0.015}),
                          "adversarial": ("adversarial", 0.0090, {"cost": 0.021})})
    assert v["outcome"] == MINING_HELPS and v["strategy"] == "adversarial" and v["scenario"] == "adversarial wins"
    cost = pd.read_csv(tmp_path / "cost.csv").set_index("strategy")
    assert cost.loc["adversarial", "time_ratio"] == pytest.approx(2.1)  # reported beside, not a veto


def test_unconverged_study_is_not_decided(tmp_path):
    v = _study(tmp_path, {"baseline": ("none", 0.0100, {}),
                          "adversarial": ("adversarial", 0.0090, {"falling": True})})
    assert v["outcome"] == NOT_DECIDED and "adversarial has not plateaued" in v["sentence"]
    contrasts = pd.read_csv(tmp_path / "contrasts.csv")
    primary = contrasts[contrasts["endpoint_role"] == "primary"]
    assert len(primary) == 1 and primary["confidence"].iloc[0] == pytest.approx(0.95)  # one mining arm: no split
    secondary = contrasts[contrasts["endpoint_role"] == "secondary"]
    assert len(secondary) == 4 and secondary["p_holm"].notna().all()
    assert (secondary["p_holm"] >= secondary["p"] - 1e-15).all()


def test_diverged_run_in_a_study_is_unstable(tmp_path):
    runs_dir = tmp_path
    v = _study(runs_dir, {"baseline": ("none", 0.0100, {}), "adversarial": ("adversarial", 0.0090, {})})
    assert v["outcome"] == MINING_HELPS
    sick = tmp_path / "sick"
    sick.mkdir()
    v = _study(sick, {"baseline": ("none", 0.0100, {}), "adversarial": ("adversarial", 0.0090, {"status": "diverged"})})
    assert v["outcome"] == UNSTABLE
