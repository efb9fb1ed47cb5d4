"""The SPEC §8 decision table: one test per outcome, from synthetic per-seed results and curves.

The first group calls :func:`verdict.decide` directly; the second runs the whole aggregation
(:func:`diffusion_lib.jobs.study.aggregate`) on synthetic per-run files, so the tables, the convergence gate and the
verdict are exercised together.
"""
import numpy as np
import pandas as pd
import pytest
from synthetic_study import gap, study

from diffusion_lib.analysis.convergence import ConvergenceRule, gap_trend, run_gate, strategy_gate
from diffusion_lib.analysis.verdict import BASELINE_BETTER, MINING_HELPS, NO_DIFFERENCE, NOT_DECIDED, UNDECIDED, UNSTABLE, Arm, decide

CONVERGED = {"converged": True, "tail_change": -0.001, "spread": 0.001, "evals_seen": 3}


def _values(mean, spread=0.01, n=5):
    z = np.linspace(-1, 1, n)
    return list(mean * (1 + spread * (z - z.mean()) / z.std(ddof=1)))


def _arm(name, mode, mean, spread=0.01, n=5, gate=None, diverged=0, trend=None):
    gate = gate if gate is not None else {**CONVERGED, "runs_converged": n, "runs": n}  # every run plateaued
    return Arm(name, mode, _values(mean, spread, n), n + diverged, diverged, gate, trend or {})


def _settled(name):
    """A gap that has stopped moving over a three-rung ladder."""
    return gap(name, (0.0, 0.0, 0.0))


def _decide(baseline, mining, *args, **kw):
    """decide() with every mining contrast stable across the ladder unless ``stability`` is given."""
    kw.setdefault("stability", {a.name: _settled(a.name) for a in mining})
    return decide(baseline, mining, *args, **kw)


BASE = _arm("baseline", "none", 0.0100)


def test_mining_helps_names_the_adversarial_strategy():
    v = _decide(BASE, [_arm("adversarial", "adversarial", 0.0090), _arm("random", "random", 0.0100)], "ID MSE", 0.05)
    assert v.outcome == MINING_HELPS and v.strategy == "adversarial" and v.scenario == "adversarial wins"
    assert v.confidence == pytest.approx(0.975)  # Bonferroni over the two mining strategies
    assert "adversarial lowers" in v.sentence


def test_mining_helps_names_random_when_only_random_helps():
    v = _decide(BASE, [_arm("adversarial", "adversarial", 0.0101), _arm("random", "random", 0.0085)], "ID MSE", 0.05)
    assert v.outcome == MINING_HELPS and v.strategy == "random" and v.scenario == "random best"


def test_no_meaningful_difference_when_every_ci_is_inside_the_margin():
    v = _decide(BASE, [_arm("adversarial", "adversarial", 0.0101), _arm("random", "random", 0.0099)], "ID MSE", 0.05)
    # an equivalence outcome is not "baseline best": nothing is better, the baseline is only cheapest
    assert v.outcome == NO_DIFFERENCE and v.scenario == "no difference (the baseline is cheapest)"
    assert "equivalence by two one-sided tests: 95.0% CI" in v.sentence and "97.5%" in v.sentence  # random beside it


def test_equivalence_is_decided_on_the_95_percent_ci_and_other_decisions_on_97_5():
    """Two mining arms: the TOST at the Bonferroni level is the 95% CI. A contrast whose 95% CI lies inside
    ±5% while its 97.5% CI does not is equivalent (SPEC §8.2); the level is named in the sentence."""
    adv = _arm("adversarial", "adversarial", 0.0102, spread=0.025, n=6)
    v = _decide(BASE, [adv, _arm("random", "random", 0.0100)], "ID MSE", 0.05)
    c = v.contrasts[0]
    assert c["confidence"] == pytest.approx(0.975) and c["eq_confidence"] == pytest.approx(0.95)
    assert c["ci_high"] >= 0.05 > c["eq_high"] and c["eq_low"] > -0.05  # only the 95% CI is inside the margin
    assert v.outcome == NO_DIFFERENCE and "95.0% CI" in v.sentence


def test_baseline_better_when_a_ci_lies_above_zero_and_outside_the_margin():
    v = _decide(BASE, [_arm("adversarial", "adversarial", 0.0110), _arm("random", "random", 0.0100)], "ID MSE", 0.05)
    assert v.outcome == BASELINE_BETTER and "adversarial" in v.sentence


def test_the_adversarial_contrast_decides_when_random_is_open():
    v = _decide(BASE, [_arm("adversarial", "adversarial", 0.0110), _arm("random", "random", 0.0097, spread=0.08, n=3)],
               "ID MSE", 0.05)
    assert v.outcome == BASELINE_BETTER and v.strategy == "adversarial"
    assert "Beside it, random" in v.sentence and "inconclusive" in v.sentence
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
    assert (f"the pending decision is equivalence at the observed change +2.0% (its 90.0% CI inside the margin): 80% "
            f"power would need about {plan['n_a']} adversarial and {plan['n_b']} baseline seeds") in v.sentence
    assert "the study has 6 and 5" in v.sentence
    far = _decide(_arm("baseline", "none", 0.0100, spread=0.05, n=3),
                  [_arm("adversarial", "adversarial", 0.0090, spread=0.08, n=3)], "ID MSE", 0.05)
    assert far.outcome == UNDECIDED and far.contrasts[0]["seeds_needed"]["decision"] == "superiority"
    assert "a change of 5% (its 95.0% CI excluding 0)" in far.sentence  # one mining arm: decisions at 95%


def test_unconverged_curves_give_not_decided_with_the_direction_of_the_gap():
    falling = {"converged": False, "tail_change": -0.23, "spread": 0.09, "evals_seen": 3}
    trend = {"steps": [1500, 2000, 2500], "gaps": [0.26, 0.069, 0.023], "direction": "shrinking"}
    # even a large apparent win is not read while a strategy is still improving
    v = _decide(BASE, [_arm("adversarial", "adversarial", 0.0080, gate=falling, trend=trend)], "ID MSE", 0.05)
    assert v.outcome == NOT_DECIDED and v.scenario is None
    assert "adversarial has not converged" in v.sentence and "shrinking" in v.sentence
    unknown = _decide(BASE, [_arm("adversarial", "adversarial", 0.0080, gate={"converged": None, "evals_seen": 1})],
                     "ID MSE", 0.05)
    assert unknown.outcome == NOT_DECIDED and "too few validation evaluations" in unknown.sentence


def test_a_diverged_run_makes_training_unstable_first():
    v = _decide(BASE, [_arm("adversarial", "adversarial", 0.0080, diverged=1)], "ID MSE", 0.05)
    assert v.outcome == UNSTABLE and v.scenario == "training instability" and "1 of 6 adversarial" in v.sentence


def test_an_unstable_run_without_a_nan_makes_training_unstable_naming_it():
    blown = "baseline seed 1 (rung 5,800): validation MSE 0.454 at step 5,220, 43.2x its best 0.0105 (step 2,900)"
    base = Arm("baseline", "none", _values(0.0100), 5, 0, {**CONVERGED, "runs_converged": 5, "runs": 5}, {}, [blown])
    v = _decide(base, [_arm("adversarial", "adversarial", 0.0012)], "ID MSE", 0.05)
    assert v.outcome == UNSTABLE and v.scenario == "training instability"
    assert "1 of 5 baseline runs are unstable" in v.sentence and blown in v.sentence
    assert "No contrast involving these runs is reported as an estimate" in v.sentence


# --------------------------------------------------------------------------- convergence gate
def _curve(values, start=500, every=500):
    return pd.DataFrame({"step": [start + every * i for i in range(len(values))], "val_mse_ema": values})


def test_window_rule_passes_a_plateau_and_fails_a_falling_curve():
    rule = ConvergenceRule(evals=3, tolerance=0.02)
    assert rule.assess(*_curve([0.05, 0.02, 0.0101, 0.0100, 0.0100]).T.values)["converged"] is True
    falling = rule.assess(*_curve([0.05, 0.02, 0.013, 0.0115, 0.0100]).T.values)
    assert falling["converged"] is False and falling["tail_change"] == pytest.approx(0.0100 / 0.013 - 1)
    assert rule.assess([500, 1000], [0.02, 0.01])["converged"] is None


def test_slope_rule_and_invalid_rules():
    rule = ConvergenceRule(method="slope", evals=4)
    assert rule.assess(*_curve([0.03, 0.0102, 0.0100, 0.0101, 0.0100]).T.values)["converged"] is True
    assert rule.assess(*_curve([0.03, 0.016, 0.014, 0.012, 0.010]).T.values)["converged"] is False
    with pytest.raises(ValueError, match="slope"):
        ConvergenceRule(method="slope", evals=2)


def test_strategy_gate_reads_the_seed_mean_and_counts_runs():
    rows = []
    for seed, wiggle in enumerate([0.004, -0.004]):  # runs wiggle ±4% in opposite directions, the mean is flat
        for i, step in enumerate([500, 1000, 1500]):
            rows.append({"strategy": "a", "seed": seed, "step": step, "val_mse_ema": 0.01 * (1 + wiggle * 10 * (i % 2))})
    curves = pd.DataFrame(rows)
    rule = ConvergenceRule(evals=3, tolerance=0.02)
    gate = strategy_gate(curves, rule).iloc[0]
    assert gate["converged"] and gate["runs_converged"] == 0 and gate["runs"] == 2
    assert len(run_gate(curves, rule)) == 2


def test_gap_trend_direction():
    rows = [{"strategy": s, "seed": 0, "step": st, "val_mse_ema": v}
            for s, vals in (("base", [0.010, 0.010, 0.010]), ("adv", [0.0126, 0.0107, 0.0102]))
            for st, v in zip([1500, 2000, 2500], vals)]
    trend = gap_trend(pd.DataFrame(rows), "adv", "base", ConvergenceRule(evals=3))
    assert trend["direction"] == "shrinking" and trend["gaps"][0] == pytest.approx(0.26)


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
    assert v["outcome"] == NOT_DECIDED and "adversarial has not converged" in v["sentence"]
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
