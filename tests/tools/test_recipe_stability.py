"""The stability sweep's reading (issue 34; tools/recipe_stability.py): stable lengths, and the
declared rules choosing the learning rate and the rungs, each with a case that passes and one that fails."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from diffusion_lib.analysis.instability import InstabilityRule
from tools.recipe_stability import choose_lr, choose_rungs, run_stability, study_trunk, sweep_table

STEPS = list(range(290, 9281, 290))
RULE = InstabilityRule()


def curve(strategy, seed, values):
    return pd.DataFrame({"strategy": strategy, "seed": seed, "step": STEPS[:len(values)], "val_mse_ema": values})


def settling(level=0.0105, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    start = [0.9, 0.5, 0.2, 0.05, 0.02, 0.012]
    return start + list(level * (1 + noise * rng.standard_normal(len(STEPS) - len(start))))


def blowing_up(at_step):
    values = settling()
    i = STEPS.index(at_step)
    return values[:i] + [0.0105 * 10] * (len(STEPS) - i)  # climbs 10x, never NaN


def test_a_run_that_climbs_tenfold_is_unstable_at_its_step_and_noise_is_not():
    hit = run_stability(curve("b", 0, blowing_up(3480)), RULE, checks=[2320])
    assert hit["unstable_at"] == 3480 and hit["stable_to"] == 3190 and hit["ratio"] > 5
    calm = run_stability(curve("b", 0, settling(noise=0.03)), RULE, checks=[2320])
    assert math.isnan(calm["unstable_at"]) and calm["stable_to"] == 9280
    assert calm["val_at_2320"] == settling(noise=0.03)[STEPS.index(2320)]


def _sweep(blow_large=False, blow_small=False):
    curves = []
    for lr, tag, blow in ((5e-4, "hi", blow_large), (2.5e-4, "lo", blow_small)):
        for arm in ("none", "random", "adversarial"):
            for seed in (0, 1):
                values = blowing_up(3480) if blow and arm != "adversarial" else settling(seed=seed)
                curves.append(curve(f"{arm}_{tag}", seed, values))
    arms = {f"{a}_{t}": (a, lr) for lr, t in ((5e-4, "hi"), (2.5e-4, "lo")) for a in ("none", "random", "adversarial")}
    return sweep_table(pd.concat(curves), arms, RULE, entry_mean=0.0142, checks=[2320, 3480])


def test_rule_1_takes_the_largest_lr_stable_for_every_arm():
    assert choose_lr(_sweep(), 9280) == (5e-4, 9280)
    # the no-negatives arms blow up at the large lr: the smaller one is chosen, whatever adversarial does
    assert choose_lr(_sweep(blow_large=True), 9280) == (2.5e-4, 9280)


def test_rule_1_without_a_stable_lr_halves_the_longest_shortest_stable_length():
    lr, stable_to = choose_lr(_sweep(blow_large=True, blow_small=True), 9280)
    assert stable_to == 3190 and study_trunk(stable_to, 29) == 1595 // 29 * 29


def test_rule_2_needs_every_run_past_burn_in_at_the_rung_branch_point():
    table = _sweep()
    assert choose_rungs(table, 5e-4, 5800, 0.2) == [0.5, 1.0]  # skill at 2,320: 1 - 0.0105/0.0142 = 26%
    late = table.copy()
    late.loc[late["arm"] == "adversarial", "skill_at_2320"] = -0.3  # still in burn-in there
    assert choose_rungs(late, 5e-4, 5800, 0.2) == [0.75, 1.0]
    late["skill_at_3480"] = 0.05
    assert choose_rungs(late, 5e-4, 5800, 0.2) is None
