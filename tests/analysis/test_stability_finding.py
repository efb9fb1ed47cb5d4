"""The stability study's declared tests and readings (issue 44; diffusion_lib.analysis.stability_finding):
the exact log-rank p-value, Clopper-Pearson shares, the Holm family, each control's reading, and the
finding's wording. Synthetic cases where a difference must be found and where it must not."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from diffusion_lib.analysis.instability import InstabilityRule
from diffusion_lib.analysis.stability_finding import (APART, BOTH, FIRST, SECOND, StabilityDesign, analyse_stability,
                                                      km_table, run_table, shares_table)
from diffusion_lib.analysis.survival import RunTime, clopper_pearson, log_rank
from diffusion_lib.plan.config import ConfigError, load_study_config, strategy_arms

STEPS = list(range(290, 9281, 290))
CONTROLS = {"w0": {"like_first": "needs the loss", "like_second": "mining alone"},
            "matched": {"like_first": "step size does not explain it", "like_second": "step size may explain it"}}


def _curve(strategy, seed, blow_up=None):
    """A run's validation curve: settles at 0.01, then (from ``blow_up``) 5x above it."""
    return [{"strategy": strategy, "seed": seed, "step": s,
             "val_mse_ema": 0.05 if blow_up is not None and s >= blow_up else 0.01 + 1e-4 / s} for s in STEPS]


def _curves(groups):
    return pd.DataFrame([row for strategy, blowups in groups.items() for seed, t in enumerate(blowups, start=100)
                         for row in _curve(strategy, seed, t)])


def _runs(arm, times, events):
    return [RunTime(arm, 5e-4, 100 + i, t, e) for i, (t, e) in enumerate(zip(times, events))]


def test_the_exact_log_rank_p_counts_every_split_of_the_pooled_runs():
    # two events against two censored runs: the observed split and its mirror are the two most extreme of 6
    test = log_rank(_runs("a", [1, 2], [True, True]), _runs("b", [3, 3], [False, False]))
    assert test["splits"] == 6 and test["p_exact"] == pytest.approx(2 / 6)
    # five early blow-ups against five stable runs: 2 of the 252 splits are as extreme
    sure = log_rank(_runs("a", [2900, 3190, 3480, 3770, 4060], [True] * 5), _runs("b", [9280] * 5, [False] * 5))
    assert sure["splits"] == 252 and sure["p_exact"] == pytest.approx(2 / 252)
    # many splits: a seeded random subset with the observed split in it, the same p every time
    big = [_runs("a", list(range(1000, 1000 + 290 * 12, 290)), [True] * 12), _runs("b", [9280] * 12, [False] * 12)]
    first, again = log_rank(*big, max_splits=2000), log_rank(*big, max_splits=2000)
    assert first["splits"] == 2000 and first["p_exact"] == again["p_exact"] < 0.01


def test_the_exact_log_rank_p_grows_as_the_groups_overlap():
    early = _runs("a", [2900, 3190, 3480, 3770, 4060], [True] * 5)
    # one run of the other group unstable among the early ones: still a difference, no longer the floor
    p = [log_rank(early, _runs("b", [t] + [9280] * 4, [True] + [False] * 4))["p_exact"] for t in (3600, 3300, 3000)]
    assert p == pytest.approx([6 / 252, 8 / 252, 10 / 252]) and all(2 / 252 < x < 0.05 for x in p)


def test_the_exact_log_rank_does_not_find_a_difference_that_is_not_there():
    found = 0
    for seed in range(20):
        draw = np.random.default_rng(seed)
        same = [_runs(arm, draw.integers(1000, 9280, 5).tolist(), (draw.random(5) < 0.5).tolist()) for arm in "ab"]
        found += log_rank(*same)["p_exact"] < 0.05
    assert found <= 2  # at most what a 5% test gives by chance in 20 tries (expected 1)


def test_clopper_pearson_matches_the_known_intervals():
    assert clopper_pearson(0, 5) == pytest.approx((0.0, 0.5218), abs=1e-4)
    assert clopper_pearson(5, 5) == pytest.approx((0.4782, 1.0), abs=1e-4)
    low, high = clopper_pearson(2, 5)
    assert low == pytest.approx(0.0527, abs=1e-4) and high == pytest.approx(0.8534, abs=1e-4)


def _design():
    return StabilityDesign(("baseline", "adversarial"), (("random", "adversarial"),), CONTROLS)


def test_a_sure_difference_is_found_and_each_control_read_as_declared():
    curves = _curves({"baseline": [2900, 3190, 3480, 3480, 4060], "adversarial": [None] * 5,
                      "random": [3190, 3480, 3770, 4060, 4350], "w0": [2900, 3190, 3190, 3480, 3770],
                      "matched": [None] * 5})
    arms = {s: (s, 5e-4) for s in ("baseline", "adversarial", "random", "w0", "matched")}
    tables, found = analyse_stability(curves, InstabilityRule(2.0), arms, _design(), "At lr 0.0005, 9,280 steps")
    tests = tables["stability_tests"]
    primary = tests[tests["role"] == "primary"].iloc[0]
    assert primary["p"] == pytest.approx(2 / 252) and primary["differs"]
    # the Holm family: random and each control against both primary groups, five tests
    secondary = tests[tests["role"] == "secondary"]
    assert list(zip(secondary["a"], secondary["b"])) == [("random", "adversarial"), ("w0", "adversarial"),
                                                         ("w0", "baseline"), ("matched", "adversarial"),
                                                         ("matched", "baseline")]
    # Holm over five: the three smallest (2/252 each) times 5; the rest capped at 1 (no events in either
    # group of matched vs adversarial: p = 1)
    assert secondary["p"].tolist()[:2] == pytest.approx([2 / 252, 2 / 252])
    assert secondary.set_index(["a", "b"])["p_holm"].to_dict() == pytest.approx({
        ("random", "adversarial"): 10 / 252, ("w0", "adversarial"): 10 / 252, ("w0", "baseline"): 1.0,
        ("matched", "adversarial"): 1.0, ("matched", "baseline"): 10 / 252})
    reading = {r["control"]: r for r in found["readings"]}
    assert reading["w0"]["like"] == FIRST and reading["w0"]["means"] == "needs the loss"
    assert reading["matched"]["like"] == SECOND and reading["matched"]["means"] == "step size may explain it"
    assert found["outcome"] == "baseline unstable sooner"
    assert "5 of 5 baseline runs and 0 of 5 adversarial runs became unstable" in found["sentence"]
    assert found["sentence"].startswith("At lr 0.0005, 9,280 steps") and "p = 0.008" in found["sentence"]
    shares = tables["stability_shares"].set_index("arm")
    assert shares.loc["baseline", "unstable"] == 5 and shares.loc["baseline", "median_time"] == 3480
    assert shares.loc["adversarial", "share"] == 0 and math.isnan(shares.loc["adversarial", "median_time"])


def test_a_null_difference_is_not_called_one_and_a_mixed_control_is_not_told_apart():
    curves = _curves({"baseline": [2900, None, 4060, None, 6090], "adversarial": [3190, None, None, 5220, 8410],
                      "random": [None] * 5, "w0": [2900, None, 5510, None, None], "matched": [3190] * 5})
    arms = {s: (s, 5e-4) for s in ("baseline", "adversarial", "random", "w0", "matched")}
    tables, found = analyse_stability(curves, InstabilityRule(2.0), arms, _design(), "At lr 0.0005")
    assert found["outcome"] == "not told apart" and "does not tell the two apart" in found["sentence"]
    assert not tables["stability_tests"]["differs"].any()
    assert [r["like"] for r in found["readings"]] == [APART, APART]
    # with no primary difference there is nothing for a control to explain: no meaning is claimed
    assert all(r["means"].startswith("not interpreted") for r in found["readings"])


def test_a_control_between_the_two_and_groups_without_runs_are_named_as_such():
    curves = _curves({"baseline": [1160] * 5, "adversarial": [None] * 5, "random": [4640, 4930, 5220, 5510, 5800],
                      "w0": [4640, 4930, 5220, 5510, 5800]})
    arms = {s: (s, 5e-4) for s in ("baseline", "adversarial", "random", "w0", "matched")}
    tables, found = analyse_stability(curves, InstabilityRule(2.0), arms, _design(), "At lr 0.0005")
    reading = {r["control"]: r for r in found["readings"]}
    # a control unstable even sooner than the baseline differs from both too, on the other side
    sooner = _curves({"baseline": [4640, 4930, 5220, 5510, 5800], "adversarial": [None] * 5, "w0": [1160] * 5})
    one = StabilityDesign(("baseline", "adversarial"), (), {"w0": CONTROLS["w0"]})
    _, early = analyse_stability(sooner, InstabilityRule(2.0), arms, one, "At lr 0.0005")
    assert early["readings"][0]["like"] == BOTH and early["readings"][0]["means"] == (
        "its runs became unstable even sooner than the baseline runs")
    assert reading["w0"]["like"] == BOTH and reading["w0"]["means"] == (
        "its runs stayed stable longer than the baseline runs, not as long as the adversarial runs")
    assert reading["matched"]["like"] is None and reading["matched"]["means"] == "not read: no runs of matched"
    untested = tables["stability_tests"].set_index(["a", "b"]).loc[("matched", "baseline")]
    assert untested["differs"] is None and math.isnan(untested["p_holm"])
    # the primary pair without runs of one group: not tested, said so
    tables, found = analyse_stability(curves[curves["strategy"] != "adversarial"], InstabilityRule(2.0), arms,
                                      _design(), "At lr 0.0005")
    assert found["outcome"] == "not tested" and found["sentence"].startswith("Not tested")


def test_a_learning_rate_grid_reads_as_one_arm_at_several_rates(tmp_path):
    edge = tmp_path / "edge.yaml"
    edge.write_text("seeds: [100]\nstrategies:\n  baseline: {mode: none, seeds: [100]}\n"
                    "  adversarial: {mode: adversarial, seeds: [100]}\n  matched: {mode: none, train: {lr: 5.5e-4}}\n"
                    "sweeps:\n  - {base: baseline, grid: {train.lr: [2.5e-4, 1.0e-3]}}\n"
                    "  - {base: adversarial, grid: {opt_steps: [1]}}\n")
    cfg = load_study_config(["config/config.yaml", edge])
    arms = strategy_arms(cfg)
    assert arms["baseline__train.lr-0.001"] == ("baseline", 1e-3) and arms["matched"] == ("matched", 5.5e-4)
    assert arms["adversarial__opt_steps-1"] == ("adversarial__opt_steps-1", 2.5e-4)  # not an lr point: its own arm
    curves = _curves({"baseline": [None], "baseline__train.lr-0.001": [1160]})
    runs = run_table(curves, InstabilityRule(2.0), {s: arms[s] for s in ("baseline", "baseline__train.lr-0.001")})
    assert runs[["strategy", "arm", "lr", "time", "event", "watched_to"]].values.tolist() == [
        ["baseline", "baseline", 2.5e-4, 9280, False, 9280], ["baseline__train.lr-0.001", "baseline", 1e-3, 1160, True, 9280]]
    km = km_table(runs)
    assert km.groupby("lr")["stable"].last().tolist() == [1.0, 0.0]
    assert km.groupby("lr")["at_risk"].last().tolist() == [1, 0] and (km.groupby("lr")["step"].last() == 9280).all()
    assert shares_table(runs, 2.0)["first_unstable"].isna().tolist() == [True, False]


def test_how_far_unstable_runs_rose_and_whether_they_came_back_is_described_per_group():
    """Two unstable runs at one rate, one back at its best by the end and one still 5x above it, and a
    stable run: the shares table counts one back and reports the median peak of the unstable runs only."""
    steps = [290, 580, 870, 1160]
    shapes = {100: [0.02, 0.01, 0.2, 0.01], 101: [0.02, 0.01, 0.05, 0.05], 102: [0.02, 0.011, 0.01, 0.0105]}
    curves = pd.DataFrame([{"strategy": "baseline", "seed": seed, "step": st, "val_mse_ema": v}
                           for seed, values in shapes.items() for st, v in zip(steps, values)])
    runs = run_table(curves, InstabilityRule(2.0), {"baseline": ("baseline", 5e-4)})
    assert runs["event"].tolist() == [True, True, False]
    assert runs["peak"].tolist() == pytest.approx([20.0, 5.0, 1.05])
    assert runs["end_ratio"].tolist() == pytest.approx([1.0, 5.0, 1.05])
    row = shares_table(runs, 2.0).iloc[0]
    assert row["back"] == 1 and row["peak_median"] == pytest.approx(12.5)
    # with no unstable run: nothing to describe
    calm = shares_table(runs[~runs["event"]], 2.0).iloc[0]
    assert math.isnan(calm["back"]) and math.isnan(calm["peak_median"])
    # a run whose end is not known: no count of the runs back is claimed
    unknown = shares_table(runs.assign(end_ratio=[1.0, math.nan, 1.05]), 2.0).iloc[0]
    assert math.isnan(unknown["back"]) and unknown["peak_median"] == pytest.approx(12.5)


def test_the_design_names_declared_strategies_only(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("comparison:\n  stability:\n    primary: [baseline, adversarial]\n"
                   "    secondary: [[random, random], [adversarial, baseline]]\n"
                   "    controls: {nowhere: {like_first: a, like_second: b}, baseline: {like_first: a, like_second: b}}\n")
    with pytest.raises(ConfigError) as err:
        load_study_config(["config/config.yaml", bad])
    text = str(err.value)
    assert "comparison.stability.controls.nowhere" in text and "'nowhere' is not declared" in text
    assert "comparison.stability.controls.baseline" in text and "primary pair" in text
    assert "comparison.stability.secondary.0': needs two different strategies" in text
    assert "comparison.stability.secondary.1': the pair ['adversarial', 'baseline'] is already tested (primary)" in text


def test_the_design_may_name_grid_points_and_names_an_alias_by_its_runs(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("comparison:\n  stability:\n    primary: [baseline__train.lr-0.0005, adversarial__train.lr-0.001]\n"
                    "    controls: {adversarial_w0: {like_first: a, like_second: b}}\n")
    cfg = load_study_config(["config/config.yaml", "config/stability-edge.yaml", "config/stability-range.yaml", grid])
    design = cfg["comparison"]["stability"]
    assert design["primary"] == ["baseline", "adversarial__train.lr-0.001"]  # the 5e-4 point is baseline's runs