"""comparison.ladder.until_stable (method §8.1): the look's stopping rule, the walk over looks, the
config checks and the layout of grown rungs. End to end on .test: tests/workflow/test_workflow.py."""
from __future__ import annotations

import pytest

from diffusion_lib.plan.config import ConfigError, load_config
from diffusion_lib.analysis.growth import (MARGIN, MAX_BUDGET, STABLE, UNASSESSABLE, UNMEASURED, UNSTABLE, Look,
                                          decide_look, describe_looks, final_top, read_look, validation_rungs,
                                          walk_looks, write_look)
from diffusion_lib.analysis.study import Comparison
from diffusion_lib.settings.ladder import grown_steps
from diffusion_lib.plan.budgets import Budgets
from diffusion_lib.plan.layout import Layout
from tests.synthetic_study import TRIVIAL, write_model

ROOM = {"next_trunk": 4640, "seen_stable": 9280}  # the next rung's trunk is exactly half of what was seen stable


def moving():
    return {"final": False, "usable_rungs": [1450, 2900], "reason": "rungs trend -0.30 per doubling"}


def flat():
    return {"final": True, "usable_rungs": [1450, 2900], "reason": ""}


def test_a_gap_that_keeps_moving_adds_exactly_the_next_rung():
    look = decide_look(2900, 5800, {"adversarial": moving(), "random": flat()}, margin=ROOM)
    assert look.grow and look.next == 5800 and look.stopped == ""
    assert "adversarial still moving" in look.sentence() and "added the rung of 5,800 steps" in look.sentence()


def test_a_flat_trend_adds_none():
    look = decide_look(2900, 5800, {"adversarial": flat(), "random": flat()}, margin=ROOM)
    assert not look.grow and look.stopped == STABLE


def test_the_maximum_budget_stops_it():
    last = decide_look(5800, None, {"adversarial": moving()}, margin=ROOM)
    assert not last.grow and last.stopped == MAX_BUDGET and "maximum budget reached" in last.sentence()


def test_the_stability_margin_stops_growth_and_an_unmeasured_recipe_never_grows():
    """method §8.1: never grow a trunk past half of the longest seen stable for every arm (the pilot's
    first grown rung, 11,600 steps, would need a 9,280-step trunk: all that was ever seen stable)."""
    beyond = decide_look(5800, 11_600, {"adversarial": moving()}, margin={"next_trunk": 9280, "seen_stable": 9280})
    assert not beyond.grow and beyond.stopped == MARGIN and "past half of the 9,280 seen stable" in beyond.sentence()
    unknown = decide_look(5800, 11_600, {"adversarial": moving()}, margin={"next_trunk": 4640, "seen_stable": None})
    assert not unknown.grow and unknown.stopped == UNMEASURED


def test_an_unstable_run_stops_the_ladder_whatever_the_gap_does():
    look = decide_look(2900, 5800, {"adversarial": moving()}, ["baseline seed 1 (unstable at step 3,480)"], ROOM)
    assert not look.grow and look.stopped == UNSTABLE and "baseline seed 1" in look.sentence()
    assert decide_look(2900, 5800, {}, margin=ROOM).stopped == UNASSESSABLE


def _ladder_files(tmp_path, scale):
    """Rung index entries (curve files only, no test-set metrics) of baseline and adversarial, 3 seeds,
    rungs 250/500/1,000, the adversarial arm's validation MSE times ``scale[i]`` at rung i."""
    entries = []
    for strategy, mode, mse in (("baseline", "none", 0.0100), ("adversarial", "adversarial", 0.0090)):
        for seed in range(3):
            for i, rung in enumerate((250, 500, 1000)):
                value = mse * (1 + 0.003 * seed) * (scale[i] if strategy == "adversarial" else 1.0)
                paths = write_model(tmp_path / f"{strategy}-{seed}@{rung}", mode, seed, value, steps=rung)
                (tmp_path / f"{strategy}-{seed}@{rung}" / "metrics.json").unlink()  # the look must not need it
                entries.append({"strategy": strategy, "seed": seed, "rung": rung, "kind": "ladder",
                                "curve": paths["curve"]})
    return entries


def test_a_look_reads_validation_only_with_the_same_per_doubling_rule(tmp_path):
    comp = Comparison.from_mapping({"baseline": "baseline", "adversarial": "adversarial", "random": "random"})
    flat_arms = validation_rungs(_ladder_files(tmp_path / "flat", (1.0, 1.0, 1.0)), comp, TRIVIAL, 1000, 800)
    assert flat_arms["adversarial"]["final"] and flat_arms["adversarial"]["usable_rungs"] == [250, 500, 1000]
    closing = validation_rungs(_ladder_files(tmp_path / "closing", (1.2, 1.1, 1.0)), comp, TRIVIAL, 1000, 800)
    assert not closing["adversarial"]["final"] and "rungs trend" in closing["adversarial"]["reason"]
    # where the validation contrast lies (near 0 or far from it) is never read: the same flat trend
    # 17% above the baseline stops alike
    far = validation_rungs(_ladder_files(tmp_path / "far", (1.3, 1.3, 1.3)), comp, TRIVIAL, 1000, 800)
    assert far["adversarial"]["final"]


def test_walking_the_looks_follows_each_growth_and_stops_at_the_first_missing(tmp_path):
    path = lambda top: str(tmp_path / f"look-{top}.json")  # noqa: E731
    assert walk_looks(20, path) == [] and final_top(20, []) == 20
    write_look(Look(20, 40, True, ""), path(20))
    write_look(Look(40, 80, True, ""), path(40))
    looks = walk_looks(20, path)
    assert [l.top for l in looks] == [20, 40] and final_top(20, looks) == 80
    assert "look 3 pending" in describe_looks(looks, 20, 80)
    write_look(Look(80, None, False, MAX_BUDGET), path(80))
    looks = walk_looks(20, path)
    assert final_top(20, looks) == 80 and read_look(path(80)).stopped == MAX_BUDGET
    assert "3 looks at ladder tops 20, 40, 80 steps" in describe_looks(looks, 20, 80)


def test_grown_budgets_double_up_to_the_maximum():
    assert grown_steps(2900, None) == [] and grown_steps(2900, 2900) == []
    assert grown_steps(2900, 11_600) == [5800, 11_600] and grown_steps(2900, 11_599) == [5800]


def _cfg(**ladder):
    return {"seeds": [0], "strategies": {"baseline": {"mode": "none"}},
            "train": {"steps": 20, "log_every": 2, "eval_every": 2,
                      "lr_schedule": {"kind": "wsd", "decay_fraction": 0.2}},
            "comparison": {"ladder": {"rungs": [0.5, 1.0], **ladder}}}


def test_config_refuses_a_maximum_below_the_budget_or_without_a_trunk():
    with pytest.raises(ConfigError, match="until_stable.max_steps"):
        load_config(_cfg(until_stable={"max_steps": 10}))
    cosine = _cfg(until_stable={"max_steps": 40})
    cosine["train"]["lr_schedule"] = {"kind": "cosine"}
    cosine["comparison"]["ladder"]["rungs"] = [1.0]
    with pytest.raises(ConfigError, match="until_stable"):
        load_config(cosine)
    with pytest.raises(ConfigError, match="max_steps"):
        load_config(_cfg(until_stable={}))


def test_the_budgets_know_the_rungs_they_may_add_and_the_layout_scores_them_in_full(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_cfg(until_stable={"max_steps": 80}))
    layout, budgets = Layout(cfg), Budgets(cfg)
    spec = layout.runs[0]
    assert budgets.grown_budgets == [40, 80] and budgets.budgets_up_to(40) == [10, 20, 40]
    assert [r.steps for r in budgets.rungs(spec)] == [10, 20, 40, 80]
    assert budgets.branch_points(spec) == [8, 16, 32, 64]
    assert layout.rung_eval_dir(spec.run, 40).endswith(f"rung-40/eval-{layout.eval_key}")  # may become the full budget
    assert layout.rung_eval_dir(spec.run, 10).endswith(f"rung-10/eval-{layout.rung_eval_key}")
    assert budgets.grown_so_far() == []
    write_look(Look(20, 40, True, ""), layout.files.look(20))
    assert budgets.grown_so_far() == [40]
    off_cfg = load_config(_cfg())
    off = Budgets(off_cfg)
    assert off.grown_budgets == [] and [r.steps for r in off.rungs(Layout(off_cfg).runs[0])] == [10, 20]
