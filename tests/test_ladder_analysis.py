"""The budget ladder's analysis (SPEC §8.1–8.2): budgets in the verdict sentence, gap stability and its
labelled extrapolation, the new verdict rules, the ladder and compute-matched tables, the
interpretation lines, the ladder figure and the report's order.

The first groups call the library directly; the last runs the whole aggregation on synthetic run
and rung files (:mod:`synthetic_study`)."""
import math

import pandas as pd
import pytest
from synthetic_study import study, values

from diffusion_lib import interpretation as interp
from diffusion_lib.budget import Budget, samples_text, share_text
from diffusion_lib.jobs.study import _cached
from diffusion_lib.ladder_figure import plot_ladder
from diffusion_lib.report import build_report
from diffusion_lib.stability import GapStability, gap_stability, log_linear_crossings
from diffusion_lib.verdict import BASELINE_BETTER, MINING_HELPS, NO_DIFFERENCE, NOT_DECIDED, Arm, decide

PILOT = Budget(2900, 64)
SAMPLES = (46_400, 92_800, 185_600)


def _arm(name, mode, mean, spread=0.01, n=5, runs_converged=None):
    gate = {"converged": True, "tail_change": -0.001, "spread": 0.001, "evals_seen": 3,
            "runs_converged": n if runs_converged is None else runs_converged, "runs": n}
    return Arm(name, mode, values(mean, spread, n), n, 0, gate, {})


def _gap(name, estimates, samples=SAMPLES, plateaued=10, runs=10):
    steps = tuple(s // 64 for s in samples)
    return GapStability(name, "baseline", 0.05, steps, samples, tuple(estimates), plateaued, runs)


def _decide(mining, gaps=None, baseline=None):
    gaps = gaps if gaps is not None else {a.name: _gap(a.name, (0.0, 0.0, 0.0)) for a in mining}
    return decide(baseline or _arm("baseline", "none", 0.0100), mining, "ID test MSE", 0.05, budget=PILOT,
                  stability=gaps)


# --------------------------------------------------------------------------- the budget
def test_budget_phrase_names_samples_and_the_papers_share():
    assert PILOT.samples == 185_600 and samples_text(PILOT.samples) == "186K"
    assert PILOT.phrase() == "186K training samples (2,900 steps × batch 64; 0.09% of the paper's 100,000 × 2,048)"
    assert samples_text(204_800_000) == "205M" and share_text(3_072_000 / 204_800_000) == "1.5%"
    assert share_text(1.0) == "100%" and share_text(0.0046) == "0.5%"


# --------------------------------------------------------------------------- gap stability
def _ladder_rows(estimates, strategy="adversarial", samples=SAMPLES):
    return pd.DataFrame({"strategy": strategy, "versus": "baseline", "rung": [s // 64 for s in samples],
                         "samples": samples, "estimate": estimates})


def _gates(failing=()):
    return pd.DataFrame([{"strategy": s, "seed": k, "converged": (s, k) not in failing}
                         for s in ("baseline", "adversarial", "random") for k in range(3)])


def test_gap_stability_needs_a_settled_estimate_and_every_run_plateaued():
    settled = gap_stability(_ladder_rows([0.14, 0.07, 0.06]), _gates(), "adversarial", "baseline", 0.05)
    assert settled.stable and settled.change == pytest.approx(-0.01) and settled.direction == "shrinking"
    assert settled.runs == 6 and settled.runs_plateaued == 6  # random's runs are not compared here
    moving = gap_stability(_ladder_rows([0.14, 0.09, 0.06]), _gates(), "adversarial", "baseline", 0.05)
    assert not moving.stable and not moving.settled  # 3 points >= delta/2 = 2.5 points
    assert "+14.0% at 46.4K → +9.0% at 92.8K → +6.0% at 186K samples" in moving.ladder_reason()
    one_run = gap_stability(_ladder_rows([0.14, 0.07, 0.06]), _gates({("baseline", 2)}), "adversarial", "baseline",
                            0.05)
    assert one_run.settled and not one_run.stable and "baseline/seed2" in one_run.plateau_reason()
    single = gap_stability(_ladder_rows([0.06], samples=(185_600,)), _gates(), "adversarial", "baseline", 0.05)
    assert not single.assessable and not single.stable and "with 1 rung" in single.ladder_reason()
    flip = gap_stability(_ladder_rows([0.05, 0.02, -0.01]), _gates(), "adversarial", "baseline", 0.05)
    assert flip.direction == "changing sign" and not flip.settled


def test_extrapolation_follows_the_log_linear_fit_and_is_labelled():
    samples = (16_000, 32_000, 64_000)
    estimates = [0.20 - 0.05 * k for k in range(3)]  # -5 points per doubling: 0 at 4 doublings past 16K
    cross = log_linear_crossings(samples, estimates, {"0": 0.0, "+5%": 0.05, "-5%": -0.05})
    assert cross["0"] == pytest.approx(256_000) and cross["+5%"] == pytest.approx(128_000)
    assert cross["-5%"] == pytest.approx(512_000)
    gap = _gap("adversarial", estimates, samples)
    text = gap.extrapolation_text(204_800_000)
    assert text.startswith("Extrapolation, not a finding") and "cross +5% at about 128K samples (0.06% of the paper's), then 0 at about 256K" in text
    assert gap.as_dict()["extrapolation"].endswith("not a finding")
    assert _gap("adversarial", [0.1, 0.05], samples[1:]).extrapolation_text(1e8) is None  # two rungs: no fit
    assert _gap("adversarial", [0.1, 0.02, 0.03], samples).crossings() is None  # not monotone
    behind = log_linear_crossings(samples, [-0.01, -0.02, -0.03], {"0": 0.0})
    assert behind["0"] is None  # moving away from 0: the crossing lies behind the ladder
    # a geometric decay (the pilot's +438% -> +44% -> +4.3%) is not a line in log samples: the fit
    # misses the last rung by far more than delta/2, and no crossing is extrapolated from it
    decay = _gap("adversarial", [4.383, 0.443, 0.043], (46_400, 92_800, 185_600)).extrapolation_text(204_800_000)
    assert "is not described by that line" in decay and "no crossing budget" in decay and "-54.7%" in decay


# --------------------------------------------------------------------------- the verdict rules
def test_a_moving_gap_is_not_decided_with_every_rung_estimate_in_the_sentence():
    adv = _arm("adversarial", "adversarial", 0.0090)  # a clear win at the full budget...
    v = _decide([adv], {"adversarial": _gap("adversarial", (0.04, -0.03, -0.10))})  # ...still moving
    assert v.outcome == NOT_DECIDED and v.scenario is None
    assert v.sentence.startswith(f"Not decided at {PILOT.phrase()}:")
    assert "+4.0% at 46.4K → -3.0% at 92.8K → -10.0% at 186K samples" in v.sentence and "growing" in v.sentence
    assert "Extrapolation, not a finding" in v.sentence


def test_a_single_rung_is_not_decided_and_says_why():
    v = _decide([_arm("adversarial", "adversarial", 0.0090)],
                {"adversarial": _gap("adversarial", (-0.10,), samples=(185_600,))})
    assert v.outcome == NOT_DECIDED and "cannot be checked for stability across budgets with 1 rung" in v.sentence
    assert _decide([_arm("adversarial", "adversarial", 0.0090)], gaps={}).outcome == NOT_DECIDED  # no ladder at all


def test_a_mean_curve_that_passes_with_a_run_that_does_not_is_no_win():
    passing = _decide([_arm("adversarial", "adversarial", 0.0090)])
    assert passing.outcome == MINING_HELPS and "every compared run passed the plateau check" in passing.sentence
    v = _decide([_arm("adversarial", "adversarial", 0.0090, runs_converged=4)])
    assert v.outcome == NOT_DECIDED and "1 of 5 adversarial runs fail the plateau check" in v.sentence
    base = _arm("baseline", "none", 0.0100, runs_converged=3)
    assert _decide([_arm("adversarial", "adversarial", 0.0090)], baseline=base).outcome == NOT_DECIDED


def test_baseline_best_only_when_no_mining_arm_lies_below_zero():
    worse, random_below = _arm("adversarial", "adversarial", 0.0110), _arm("random", "random", 0.0097, spread=0.003)
    v = _decide([worse, random_below])
    assert v.outcome == BASELINE_BETTER and v.contrasts[1]["ci_high"] < 0 < v.contrasts[1]["ci_low"] + 0.05
    assert v.scenario is None
    v = _decide([worse, _arm("random", "random", 0.0100)])
    assert v.outcome == BASELINE_BETTER and v.scenario == "baseline best"


def test_equivalence_above_zero_says_better_by_less_than_the_margin():
    v = _decide([_arm("adversarial", "adversarial", 0.0102, spread=0.002)])
    assert v.outcome == NO_DIFFERENCE and v.contrasts[0]["ci_low"] > 0
    assert "the baseline is better by less than the margin" in v.sentence and "97.5%" not in v.sentence
    assert "95.0% CI" in v.sentence  # one mining arm: every CI names its level
    v = _decide([_arm("adversarial", "adversarial", 0.0100)])
    assert v.outcome == NO_DIFFERENCE and "better by less than the margin" not in v.sentence


def test_baseline_better_says_whether_harm_beyond_delta_is_established():
    big = _decide([_arm("adversarial", "adversarial", 0.0112, spread=0.005)])
    assert big.outcome == BASELINE_BETTER and "harm beyond +5% is established" in big.sentence
    small = _decide([_arm("adversarial", "adversarial", 0.0106)])
    assert small.outcome == BASELINE_BETTER and "harm beyond +5% is not established" in small.sentence
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
    assert stability.loc["adversarial", "stable"] and stability.loc["random", "runs"] == 10


def test_aggregate_with_a_moving_gap_is_not_decided(tmp_path):
    v = study(tmp_path, ARMS, rung_scale={"adversarial": [1.2, 1.1]})
    assert v["outcome"] == NOT_DECIDED and v["scenario"] is None
    assert "+8.0% at 16K → -1.0% at 32K → -10.0% at 64K samples" in v["sentence"]
    assert v["extrapolations"] and v["extrapolations"][0].startswith("Extrapolation, not a finding")


def test_aggregate_one_unplateaued_run_blocks_mining_helps(tmp_path):
    v = study(tmp_path, {**ARMS, "adversarial": ("adversarial", 0.0090, {"unplateaued_seeds": [2]})})
    gate = pd.read_csv(tmp_path / "convergence.csv").set_index("strategy")
    assert gate.loc["adversarial", "converged"] and gate.loc["adversarial", "runs_converged"] == 4
    assert v["outcome"] == NOT_DECIDED and "1 of 5 adversarial runs fail the plateau check" in v["sentence"]


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
    from diffusion_lib.jobs.study import TABLES
    t, v = _cached({k: str(tmp_path / f"{k}.csv") for k in TABLES}, str(tmp_path / "verdict.json"))
    plot_ladder(t["ladder_contrasts"], t["compute_matched"], v, tmp_path / "ladder.png", {"dpi": 40})
    assert (tmp_path / "ladder.png").stat().st_size > 1000
    doc = build_report(v, t, {"ladder": str(tmp_path / "ladder.png")})
    assert doc[1][1].startswith("**Verdict: mining helps.** At 64K training samples")
    heads = [b[2] for b in doc if b[0] == "h"]
    assert heads.index("The answer at each training budget (budget ladder)") < heads.index("Gap stability (the gate)") \
        < heads.index("The comparison at the full budget")
    figs = [b[1] for b in doc if b[0] == "fig"]
    assert figs.index("ladder") < figs.index("forest")
    text = " ".join(str(b[1]) for b in doc if b[0] == "p")
    assert "read part-way" not in text and "compute-matched" in text.lower()
