"""comparison.ladder.until_stable (SPEC §8.1): the look's stopping rule, the walk over looks, the
config checks and the layout of grown rungs. End to end on .test: tests/test_workflow.py."""
from __future__ import annotations

import pytest

from diffusion_lib.plan.config import ConfigError, load_config
from diffusion_lib.analysis.growth import MAX_BUDGET, STABLE, UNASSESSABLE, UNSTABLE, Look, decide_look, describe_looks, final_top, read_look, walk_looks, write_look
from diffusion_lib.settings.ladder import grown_steps
from diffusion_lib.plan.layout import Layout
from synthetic_study import gap

SAMPLES = (92_800, 185_600)


def moving(name="adversarial"):  # +40% → +10%: the log ratio changes by -0.24
    return gap(name, [0.40, 0.10], SAMPLES)


def settled(name="adversarial"):  # +2.0% → +2.2%
    return gap(name, [0.020, 0.022], SAMPLES)


def test_a_gap_that_keeps_moving_adds_exactly_the_next_rung():
    look = decide_look(2900, 5800, {"adversarial": moving(), "random": settled("random")})
    assert look.grow and look.next == 5800 and look.stopped == ""
    assert "adversarial still moving" in look.sentence() and "added the rung of 5,800 steps" in look.sentence()


def test_a_gap_stable_at_its_first_two_informative_rungs_adds_none():
    look = decide_look(2900, 5800, {"adversarial": settled(), "random": settled("random")})
    assert not look.grow and look.stopped == STABLE


def test_too_few_informative_rungs_grows_and_the_maximum_stops_it():
    burn_in = gap("adversarial", [4.0, 0.40], SAMPLES, informative=[False, True])
    assert decide_look(2900, 5800, {"adversarial": burn_in}).grow
    last = decide_look(5800, None, {"adversarial": moving()})
    assert not last.grow and last.stopped == MAX_BUDGET and "maximum budget reached" in last.sentence()


def test_an_unstable_run_stops_the_ladder_whatever_the_gap_does():
    look = decide_look(2900, 5800, {"adversarial": moving()}, ["baseline seed 1 (unstable at step 3,480)"])
    assert not look.grow and look.stopped == UNSTABLE and "baseline seed 1" in look.sentence()


def test_the_rule_reads_stability_not_where_the_ci_lies():
    # stable gaps far from 0 and far inside ±delta stop alike: the CI's position is never read
    far = gap("adversarial", [0.30, 0.31], SAMPLES)
    near = gap("adversarial", [0.001, 0.002], SAMPLES)
    assert decide_look(2900, 5800, {"adversarial": far}).stopped == decide_look(2900, 5800, {"adversarial": near}).stopped == STABLE


def test_a_change_that_cannot_be_estimated_stops_rather_than_grows():
    unknown = gap("adversarial", [0.40, 0.10], SAMPLES, change=(float("nan"),) * 3)
    look = decide_look(2900, 5800, {"adversarial": unknown})
    assert not look.grow and look.stopped == UNASSESSABLE


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
            "train": {"steps": 20, "log_every": 2, "eval_every": 4,
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


def test_layout_knows_the_rungs_it_may_add_and_scores_them_in_full(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    layout = Layout(load_config(_cfg(until_stable={"max_steps": 80})))
    spec = layout.runs[0]
    assert layout.grown_budgets == [40, 80] and layout.budgets_up_to(40) == [10, 20, 40]
    assert [r.steps for r in layout.rungs(spec)] == [10, 20, 40, 80]
    assert layout.branch_points(spec) == [8, 16, 32, 64]
    assert layout.rung_eval_dir(spec.run, 40).endswith(f"rung-40/eval-{layout.eval_key}")  # may become the full budget
    assert layout.rung_eval_dir(spec.run, 10).endswith(f"rung-10/eval-{layout.rung_eval_key}")
    assert layout.grown_so_far() == []
    write_look(Look(20, 40, True, ""), layout.look_path(20))
    assert layout.grown_so_far() == [40]
    off = Layout(load_config(_cfg()))
    assert off.grown_budgets == [] and [r.steps for r in off.rungs(off.runs[0])] == [10, 20]
