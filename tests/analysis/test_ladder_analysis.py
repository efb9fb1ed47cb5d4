"""The budget ladder's analysis (method §8.1–8.2): budgets in the verdict sentence, gap stability and its
labelled extrapolation, the new verdict rules, the ladder and compute-matched tables, the
interpretation lines, the ladder figure and the report's order.

The first groups call the library directly; the last runs the whole aggregation on synthetic run
and rung files (:mod:`synthetic_study`)."""
import math

import numpy as np
import pandas as pd
import pytest
from tests.synthetic_study import gap, study, values

from diffusion_lib.analysis import interpretation as interp
from diffusion_lib.settings.budget import Budget, samples_text, share_text
from diffusion_lib.jobs.study import _cached
from diffusion_lib.report.ladder import plot_ladder
from diffusion_lib.report.document import build_report
from diffusion_lib.analysis.stability import gap_stability, log_linear_crossings
from diffusion_lib.analysis.statistics import BETTER_WITHIN, EQUIVALENT, WORSE, WORSE_BEYOND
from diffusion_lib.analysis.verdict import BASELINE_BETTER, FINAL, MINING_HELPS, MOVING, NO_DIFFERENCE, NOT_DECIDED, Arm, decide

PILOT = Budget(2900, 64)
SAMPLES = (46_400, 92_800, 185_600)


def _arm(name, mode, mean, spread=0.01, n=5):
    gate = {"converged": True, "slope": 0.0, "slope_low": -0.01, "slope_high": 0.01, "from_step": 1000,
            "to_step": 2320, "evals_seen": 6, "per": "doubling", "tolerance": 0.025}
    return Arm(name, mode, values(mean, spread, n), n, 0, gate)


def _decide(mining, gaps=None, baseline=None):
    gaps = gaps if gaps is not None else {a.name: gap(a.name, (0.0, 0.0, 0.0)) for a in mining}
    return decide(baseline or _arm("baseline", "none", 0.0100), mining, "ID test MSE", 0.05, budget=PILOT,
                  gates=gaps)


# --------------------------------------------------------------------------- the budget
def test_budget_phrase_names_samples_and_the_papers_share():
    assert PILOT.samples == 185_600 and samples_text(PILOT.samples) == "186K"
    assert PILOT.phrase() == "186K training samples (2,900 steps × batch 64; 0.09% of the paper's 100,000 × 2,048)"
    assert samples_text(204_800_000) == "205M" and share_text(3_072_000 / 204_800_000) == "1.5%"
    assert share_text(1.0) == "100%" and share_text(0.0046) == "0.5%"


# --------------------------------------------------------------------------- gap stability
ENTRY_MEAN = 0.014  # the per-entry-mean predictor's MSE: skill 5% is an MSE of 0.0133


def _ladder(per_rung, seeds=5, spread=0.01, steps=(725, 1450, 2900), jitter=None):
    """(primary contrasts, per-seed values) of adversarial vs baseline at rungs ``steps``: ``per_rung``
    gives (adversarial mean, baseline mean) per rung; ``jitter``: per-seed multiplicative noise of the
    adversarial arm's change between rungs (each seed its own)."""
    from diffusion_lib.analysis.statistics import relative_change_ci
    rows, contrasts = [], []
    for k, ((adv, base), rung) in enumerate(zip(per_rung, steps)):
        a = values(adv, spread, seeds)
        if jitter is not None:
            a = [v * (1 + jitter * ((-1) ** seed) * k) for seed, v in enumerate(a)]
        b = values(base, spread, seeds)
        rows += [{"strategy": s, "seed": seed, "rung": rung, "value": v}
                 for s, vals in (("adversarial", a), ("baseline", b)) for seed, v in enumerate(vals)]
        contrasts.append({"strategy": "adversarial", "versus": "baseline", "rung": rung, "samples": rung * 64,
                          "estimate": relative_change_ci(a, b).estimate})
    return pd.DataFrame(contrasts), pd.DataFrame(rows)


def _stability(per_rung, **kw):
    unstable = kw.pop("unstable_rungs", ())
    primary, values_ = _ladder(per_rung, **kw)
    return gap_stability(primary, values_, ENTRY_MEAN, "adversarial", "baseline", 0.05, unstable_rungs=unstable)


def test_the_rung_trend_is_per_doubling_paired_within_each_run():
    """Each seed's change of log MSE between the last two informative rungs, divided by their distance
    in doublings, differenced between the arms (Welch): the same change means twice the rate over half
    the spacing."""
    settled = _stability([(0.0114, 0.0100), (0.0107, 0.0100), (0.0106, 0.0100)])
    t = settled.rungs_trend
    assert settled.direction == "shrinking" and settled.usable == (0, 1, 2) and t.points == 3 and t.n_a == 5
    near = _stability([(0.0107, 0.0100), (0.0106, 0.0100)], steps=(4350, 5800))  # 0.415 doublings apart
    assert near.rungs_trend.estimate == pytest.approx(math.log(0.0106 / 0.0107) / math.log2(5800 / 4350))
    far = _stability([(0.0107, 0.0100), (0.0106, 0.0100)], steps=(1450, 5800))  # two doublings apart
    assert far.rungs_trend.estimate == pytest.approx(math.log(0.0106 / 0.0107) / 2)
    # seeds that disagree about the change widen its CI: the reading is not within ±delta/2
    noisy = _stability([(0.0114, 0.0100), (0.0107, 0.0100)], jitter=0.06, steps=(4350, 5800))
    assert not noisy.rungs_trend.within(0.025) and noisy.rungs_trend.ci_high - noisy.rungs_trend.ci_low > 0.1
    flip = _stability([(0.0105, 0.0100), (0.0102, 0.0100), (0.0099, 0.0100)])
    assert flip.direction == "changing sign"


def test_a_burn_in_rung_is_left_out_of_the_trend():
    """At the first rung every arm is worse than the per-entry-mean predictor (skill < 5%: burn-in);
    its +1,000% is labelled and left out, and the two informative rungs give the trend (issue 31)."""
    burn_in = _stability([(0.15, 0.0136), (0.0102, 0.0100), (0.01021, 0.0100)])
    assert burn_in.informative == (False, True, True) and burn_in.rungs_trend.first == 1450
    assert burn_in.decision_reason() == "" and abs(burn_in.rungs_trend.estimate) < 0.01
    assert "(uninformative)" in burn_in.trajectory() and burn_in.as_dict()["informative_rungs"] == [1450, 2900]
    assert not burn_in.monotone  # the extrapolation never reads the burn-in rung either
    one_left = _stability([(0.15, 0.0136), (0.0135, 0.0100), (0.0102, 0.0100)])
    assert "fewer than two informative rungs" in one_left.decision_reason()
    assert "at 725 steps the lowest run skill is" in one_left.decision_reason()
    assert not one_left.rungs_trend.assessable


def test_an_unstable_full_rung_is_not_read():
    gap_ = _stability([(0.0114, 0.0100), (0.0107, 0.0100), (0.0106, 0.0100)], unstable_rungs=[2900])
    assert gap_.usable == (0, 1) and "(unstable)" in gap_.trajectory() and gap_.crossings() is None
    assert "full-budget rung (2,900 steps)" in gap_.decision_reason() and "unstable" in gap_.decision_reason()


def test_a_single_rung_cannot_be_read():
    single = _stability([(0.0106, 0.0100)], steps=(2900,))
    assert not single.rungs_trend.assessable and "fewer than two informative rungs" in single.decision_reason()


def test_extrapolation_fits_the_log_ratio_over_informative_rungs_and_is_labelled():
    samples = (16_000, 32_000, 64_000)
    ratios = [math.exp(0.20 - 0.05 * k) - 1 for k in range(3)]  # log ratio -0.05 per doubling: 0 at 4 doublings
    cross = log_linear_crossings(samples, ratios, {"0": 0.0})
    assert cross["0"] == pytest.approx(256_000)
    text = gap("adversarial", ratios, samples).extrapolation_text(204_800_000)
    assert text.startswith("Extrapolation, not a finding (log-linear fit of the log ratio") and "256K" in text
    assert gap("adversarial", ratios, samples).as_dict()["extrapolation"].endswith("not a finding")
    assert gap("adversarial", [0.1, 0.05], samples[1:]).extrapolation_text(1e8) is None  # two rungs: no fit
    assert gap("adversarial", [0.1, 0.02, 0.03], samples).crossings() is None  # not monotone
    assert gap("adversarial", [5.0, *ratios[1:]], samples, informative=(False, True, True)).crossings() is None
    behind = log_linear_crossings(samples, [-0.01, -0.02, -0.03], {"0": 0.0})
    assert behind["0"] is None  # moving away from 0: the crossing lies behind the ladder
    decay = gap("adversarial", [4.383, 0.443, 0.043], (46_400, 92_800, 185_600)).extrapolation_text(204_800_000)
    assert "is not described by that line" in decay and "no crossing budget" in decay


# --------------------------------------------------------------------------- the verdict rules
def test_a_moving_gap_keeps_its_label_at_this_budget_and_says_it_is_still_moving():
    adv = _arm("adversarial", "adversarial", 0.0090)  # a clear win at the full budget...
    v = _decide([adv], {"adversarial": gap("adversarial", (0.04, -0.03, -0.10), rungs=(-0.05, 0.01),
                                           trunk=(-0.06, 0.01))})  # ...still moving
    assert v.outcome == MINING_HELPS and v.status == MOVING and v.scenario is None
    assert v.sentence.startswith(f"Mining helps at {PILOT.phrase()}:")
    assert "widening" in v.sentence and "not within ±0.025 per doubling" in v.sentence


def test_too_few_informative_rungs_are_not_decided_and_say_why():
    v = _decide([_arm("adversarial", "adversarial", 0.0090)],
                {"adversarial": gap("adversarial", (-0.10,), samples=(185_600,))})
    assert v.outcome == NOT_DECIDED and "the ladder has fewer than two informative rungs" in v.sentence
    v = _decide([_arm("adversarial", "adversarial", 0.0090)],
                {"adversarial": gap("adversarial", (3.0, -0.10, -0.10), informative=(False, False, True))})
    assert v.outcome == NOT_DECIDED and "fewer than two informative rungs for adversarial vs baseline (1 of 3" in v.sentence
    assert _decide([_arm("adversarial", "adversarial", 0.0090)], gaps={}).outcome == NOT_DECIDED  # no ladder at all


def test_better_or_worse_by_less_than_the_margin_is_said_on_both_sides():
    """The same rule on both sides: a CI above (below) 0 whose TOST CI lies inside the margin reads
    'baseline better' ('mining helps'), labelled by less than the margin, beside both intervals."""
    v = _decide([_arm("adversarial", "adversarial", 0.0102, spread=0.002)])
    assert v.outcome == BASELINE_BETTER and v.contrasts[0]["ci_low"] > 0
    assert "worse by less than the margin" in v.sentence and "90% TOST CI" in v.sentence and "95% CI" in v.sentence
    mirror = _decide([_arm("adversarial", "adversarial", 0.01 / 1.02, spread=0.002)])
    assert mirror.outcome == MINING_HELPS and mirror.contrasts[0]["outcome"] == BETTER_WITHIN
    v = _decide([_arm("adversarial", "adversarial", 0.0100)])
    assert v.outcome == NO_DIFFERENCE and v.contrasts[0]["outcome"] == EQUIVALENT


def test_baseline_better_says_whether_harm_beyond_delta_is_established():
    big = _decide([_arm("adversarial", "adversarial", 0.0112, spread=0.005)])
    assert big.outcome == BASELINE_BETTER and big.contrasts[0]["outcome"] == WORSE_BEYOND
    small = _decide([_arm("adversarial", "adversarial", 0.0106)])
    assert small.outcome == BASELINE_BETTER and small.contrasts[0]["outcome"] == WORSE
    assert "worse, size not established" in small.sentence
    assert small.sentence.startswith(f"Baseline better at {PILOT.phrase()}:")


# --------------------------------------------------------------------------- interpretation
def test_skill_flags_an_endpoint_whose_best_arm_is_below_five_percent():
    rows = [{"endpoint": e, "label": e, "strategy": s, "value": v}
            for e, by in (("test_id/ema/5", {"a": 0.010, "b": 0.011}), ("test_ood/ema/5", {"a": 0.099, "b": 0.097}))
            for s, v in by.items()]
    skill = interp.skill_table(pd.DataFrame(rows), {"test_id": {"entry_mean": 0.014}, "test_ood": {"entry_mean": 0.1}})
    by = skill.set_index(["endpoint", "strategy"])
    assert by.loc[("test_id/ema/5", "a"), "skill"] == pytest.approx(1 - 0.010 / 0.014)
    assert not by.loc[("test_id/ema/5", "b"), "uninformative"]
    assert by.loc[("test_ood/ema/5", "a"), "uninformative"] and by.loc[("test_ood/ema/5", "b"), "best_skill"] == \
        pytest.approx(0.03)


def test_residual_and_diagnostic_lines():
    strategies = pd.DataFrame({"strategy": ["baseline", "adversarial"], "set": "test_id", "inner_steps": 5,
                               "residual_mean_mean": [16.2, 18.9]})
    line = interp.residual_line(strategies, 5, 20)
    assert line.startswith("Every model's") and "16.2–18.9" in line and "√n = 4.47" in line
    assert "large singular directions are amplified" in line
    diag = pd.DataFrame({"strategy": ["baseline", "adversarial"], "clip_frac": [0.99, 1.0],
                         "saturated_frac": [math.nan, 0.9]})
    lines = interp.diagnostic_lines(diag, ["adversarial"])
    assert "baseline 99%, adversarial 100%" in lines[0] and "adversarial 90%" in lines[1] and "baseline" not in lines[1]


# --------------------------------------------------------------------------- the whole aggregation
ARMS = {"baseline": ("none", 0.0100, {}), "random": ("random", 0.0100, {}),
        "adversarial": ("adversarial", 0.0090, {})}


def test_aggregate_builds_the_ladder_tables_and_a_verdict_at_its_budget(tmp_path):
    v = study(tmp_path, ARMS, rung_scale={"adversarial": [0.99, 1.0]},
              compute_matched={"adversarial": (500, 1.05), "random": (750, 1.0)}, delete=["random-4@250-ladder"])
    assert v["outcome"] == MINING_HELPS and v["scenario"] == "adversarial wins"
    assert v["sentence"].startswith("Mining helps at 64K training samples (1,000 steps × batch 64; 0.03% of the paper's")
    assert v["missing_rungs"] == ["random/seed4@250 ladder"]
    ladder = pd.read_csv(tmp_path / "ladder.csv")
    primary = ladder[(ladder["endpoint_role"] == "primary") & (ladder["kind"] == "ladder")]
    assert sorted(set(primary["rung"])) == [250, 500, 1000] and len(primary) == 9
    row = primary[(primary["rung"] == 250) & (primary["strategy"] == "random")].iloc[0]
    assert row["n"] == 4 and row["samples"] == 16_000 and row["paper_share"] == pytest.approx(16_000 / 204_800_000)
    assert set(ladder["endpoint"]) == {"test_id/ema/5", "test_id/ema/0", "test_ood/ema/5", "test_ood/ema/0",
                                       "test_id/raw/5"}
    contrasts = pd.read_csv(tmp_path / "ladder_contrasts.csv")
    rung_primary = contrasts[contrasts["endpoint_role"] == "primary"]
    assert len(rung_primary) == 6 and ((rung_primary["confidence"] - 0.975).abs() < 1e-12).all()
    at_250 = rung_primary[(rung_primary["rung"] == 250) & (rung_primary["strategy"] == "adversarial")].iloc[0]
    assert at_250["estimate"] == pytest.approx(0.0090 * 0.99 / 0.0100 - 1)
    matched = pd.read_csv(tmp_path / "compute_matched.csv").set_index("strategy")
    assert set(matched.index) == {"adversarial", "random"}  # no baseline-versus-itself row
    assert matched.loc["adversarial", "estimate"] == pytest.approx(0.0090 * 1.05 / 0.0100 - 1)
    assert matched.loc["adversarial", "steps"] == 500 and matched.loc["adversarial", "versus_steps"] == 1000
    assert matched.loc["adversarial", "confidence"] == pytest.approx(0.975)
    stability = pd.read_csv(tmp_path / "gap_stability.csv").set_index("strategy")
    assert stability.loc["random", "informative_rungs"] == "250, 500, 1,000" and v["status"] == FINAL
    assert stability.loc["adversarial", "trunk_trend_points"] == 6 and stability.loc["adversarial", "rungs_trend_points"] == 3
    assert rung_primary["informative"].all() and not rung_primary["unstable"].any()


def test_aggregate_with_a_moving_gap_is_still_moving(tmp_path):
    v = study(tmp_path, ARMS, rung_scale={"adversarial": [1.2, 1.1]})
    assert v["outcome"] == MINING_HELPS and v["status"] == MOVING and v["scenario"] is None
    assert "+8.0% at 16K → -1.0% at 32K → -10.0% at 64K samples" in " ".join(
        pd.read_csv(tmp_path / "gap_stability.csv")["trajectory"])
    assert v["extrapolations"] and v["extrapolations"][0].startswith("Extrapolation, not a finding")


def test_aggregate_reads_the_trunk_trend_paired_within_runs(tmp_path):
    """Synthetic pass/fail: each arm's own trunk is flat within the plateau tolerance (±0.025 per
    doubling), but the adversarial one drifts down 0.02 and the baseline's up 0.02 per doubling, a gap
    moving 0.04 per doubling: the trunk reading finds it and the contrast is still moving; without the
    drift it is final."""
    v = study(tmp_path, {**ARMS, "baseline": ("none", 0.0100, {"trunk_drift": 0.02}),
                         "adversarial": ("adversarial", 0.0090, {"trunk_drift": -0.02})})
    trend = pd.read_csv(tmp_path / "gap_stability.csv").set_index("strategy").loc["adversarial"]
    assert trend["trunk_trend_estimate"] == pytest.approx(-0.04, abs=1e-9) and v["status"] == MOVING
    flat = study(tmp_path / "flat", ARMS)
    assert flat["status"] == FINAL


def test_one_unplateaued_run_is_a_diagnostic_not_a_veto(tmp_path):
    v = study(tmp_path, {**ARMS, "adversarial": ("adversarial", 0.0090, {"unplateaued_seeds": [2]})})
    gate = pd.read_csv(tmp_path / "convergence.csv").set_index("strategy")
    assert gate.loc["adversarial", "runs_converged"] == 4 and v["outcome"] in (MINING_HELPS, NOT_DECIDED)


def test_the_plateau_check_reads_the_trunk_not_the_decay(tmp_path):
    """Every run's curve is flat on the constant-lr trunk and gains 6% in its decay (synthetic_study.SHAPES):
    the check reads up to the branch point (step 800 of 1,000) and passes. Over the run's last three
    evaluations (800, 900, 1,000: the decay) a ±2% window would fail: the old gate read the annealing."""
    from diffusion_lib.analysis.convergence import ConvergenceRule, strategy_gate
    v = study(tmp_path, ARMS)
    assert v["outcome"] == MINING_HELPS and v["plateau_until"] == 800
    gate = pd.read_csv(tmp_path / "convergence.csv").set_index("strategy")
    assert gate["converged"].all() and (gate["runs_converged"] == gate["runs"]).all()
    curves = pd.read_csv(tmp_path / "curves.csv")
    whole = strategy_gate(curves, ConvergenceRule(), until=None).set_index("strategy")
    assert not whole["converged"].any() and (whole["slope"] < -0.025).all()  # reading the decay fails
    falling = study(tmp_path / "falling", {**ARMS, "adversarial": ("adversarial", 0.0090, {"falling": True})})
    assert falling["outcome"] == NOT_DECIDED and "adversarial has not plateaued" in falling["sentence"]


def test_a_run_that_blows_up_without_a_nan_is_training_unstable(tmp_path):
    """Baseline seed 1 climbs 9x above its best with finite numbers (issue 34): the verdict names it; its
    contrast at the full budget is no estimate, and the ladder's full rung is left out of stability."""
    v = study(tmp_path, {**ARMS, "baseline": ("none", 0.0100, {"blowup_seeds": [1]})})
    assert v["outcome"] == "training unstable" and v["scenario"] == "training instability"
    assert "baseline seed 1 (rung 1,000): validation MSE" in v["sentence"] and "at step 700" in v["sentence"]
    contrasts = pd.read_csv(tmp_path / "contrasts.csv")
    verdict_rows = contrasts[contrasts["role"] == "verdict"]
    assert verdict_rows["unstable"].all() and verdict_rows["estimate"].isna().all()
    assert (verdict_rows["outcome"] == "unstable").all()
    ladder = pd.read_csv(tmp_path / "ladder_contrasts.csv")
    full = ladder[(ladder["rung"] == 1000) & (ladder["endpoint_role"] == "primary")]
    assert full["unstable"].all() and full["estimate"].isna().all()
    assert not ladder.loc[ladder["rung"] < 1000, "unstable"].any()
    stability = pd.read_csv(tmp_path / "gap_stability.csv").set_index("strategy")
    assert stability.loc["adversarial", "informative_rungs"] == "250, 500" and "(unstable)" in \
        stability.loc["adversarial", "trajectory"]
    unstable = pd.read_csv(tmp_path / "instability.csv")
    assert list(unstable[["strategy", "seed", "rung"]].itertuples(index=False, name=None)) == [("baseline", 1, 1000)]
    # the rule's factor is the config's: at 10x, a 9x climb is not unstable
    lenient = study(tmp_path / "lenient", {**ARMS, "baseline": ("none", 0.0100, {"blowup_seeds": [1]})},
                    instability={"factor": 10.0})
    assert lenient["outcome"] != "training unstable"


def test_the_instability_rule_ignores_noise_and_names_a_climb():
    from diffusion_lib.analysis.instability import InstabilityRule, ratio_to_best
    rng = np.random.default_rng(0)
    steps = np.arange(1, 41) * 100
    settled = 0.0105 * (1 + 0.5 * np.exp(-steps / 500)) * (1 + 0.05 * rng.standard_normal(40))  # ±5% noise
    rule = InstabilityRule()
    assert rule.first(steps, settled) is None
    climbing = np.concatenate([settled[:20], 0.0105 * np.array([1.5, 2.4, 7, 12] + [30] * 16)])
    hit = rule.first(steps, climbing)
    assert hit["step"] == 2200 and hit["ratio"] > 2 and hit["best_step"] <= 2000
    assert rule.first(steps, np.where(steps > 3000, np.nan, climbing))["step"] == 2200  # NaNs are skipped
    assert ratio_to_best([{"val_mse_ema": v} for v in (0.02, 0.0105, 0.03)]) == pytest.approx(0.03 / 0.0105)
    with pytest.raises(ValueError, match="comparison.instability.factor"):
        InstabilityRule(factor=1.0)


def test_aggregate_puts_the_inner_loop_flip_in_the_verdict_paragraph(tmp_path):
    v = study(tmp_path, {**ARMS, "adversarial": ("adversarial", 0.0090, {"no_loop": 2.4})})
    assert v["outcome"] == MINING_HELPS and len(v["inner_loop_flips"]) == 1
    flip = v["inner_loop_flips"][0]
    assert "flips the answer for adversarial vs baseline" in flip and "Holm p over the primary family" in flip
    assert "without the loop, skill versus the per-entry-mean predictor" in flip
    assert v["paragraph"] == f"{v['sentence']} {flip}"
    contrasts = pd.read_csv(tmp_path / "contrasts.csv")
    verdict_rows = contrasts[contrasts["role"] == "verdict"]
    assert verdict_rows["p_holm_family"].notna().all() and contrasts.loc[contrasts["role"] != "verdict",
                                                                         "p_holm_family"].isna().all()
    assert (verdict_rows["p_holm_family"] >= verdict_rows["p"] - 1e-15).all()


def test_ladder_figure_and_report_lead_with_the_verdict_then_the_ladder(tmp_path):
    study(tmp_path, ARMS, compute_matched={"adversarial": (500, 1.0)})
    from diffusion_lib.plan.files import TABLES
    t, v = _cached({k: str(tmp_path / f"{k}.csv") for k in TABLES}, str(tmp_path / "verdict.json"))
    plot_ladder(t["ladder_contrasts"], t["compute_matched"], v, tmp_path / "ladder.png", {"dpi": 40})
    assert (tmp_path / "ladder.png").stat().st_size > 1000
    doc = build_report(v, t, {"ladder": str(tmp_path / "ladder.png")})
    assert doc[1][1].startswith("**Verdict: mining helps.** At 64K training samples")
    heads = [b[2] for b in doc if b[0] == "h"]
    assert heads.index("The answer at each training budget (budget ladder)") < heads.index(
        "Is the answer final? The gap's trend per doubling of budget") \
        < heads.index("The comparison at the full budget")
    figs = [b[1] for b in doc if b[0] == "fig"]
    assert figs.index("ladder") < figs.index("forest")
    text = " ".join(str(b[1]) for b in doc if b[0] == "p")
    assert "read part-way" not in text and "compute-matched" in text.lower()
