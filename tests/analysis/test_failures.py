"""Inference failures (diffusion_lib/analysis/failures.py): the declared rule, per-run counts, the
primary contrast without them and on the per-run median, and the report's disagreement line."""
import pandas as pd
import pytest
from tests.synthetic_study import study

from diffusion_lib.analysis.failures import FAILURE_FACTOR, failure_table, sensitivity_table
from diffusion_lib.analysis.statistics import judged_change


def _problems(strategy, seed, values):
    return pd.DataFrame({"strategy": strategy, "seed": seed, "problem": range(len(values)), "mse": values})


def test_a_problem_far_beyond_its_runs_median_is_a_failure_and_a_heavy_but_ordinary_tail_is_not():
    """The case of issue 41: one problem at 0.288 among 511 near 0.0098 (p99 1.5x the median)."""
    ordinary = [0.0098] * 500 + [0.0143] * 11
    runs = failure_table(pd.concat([_problems("random", 0, [*ordinary, 0.288]), _problems("random", 1, ordinary)]))
    hit, clean = runs.iloc[0], runs.iloc[1]
    assert hit["failures"] == 1 and hit["worst_ratio"] == pytest.approx(0.288 / 0.0098)
    assert hit["mean"] > 1.05 * hit["mean_without_failures"]  # one problem moves the run's mean by > 5%
    assert clean["failures"] == 0 and clean["mean"] == clean["mean_without_failures"]
    assert FAILURE_FACTOR == 10.0 and failure_table(_problems("a", 0, [1.0] * 9 + [9.9]))["failures"].iloc[0] == 0


def test_sensitivity_says_when_a_companion_endpoint_points_another_way():
    base = pd.concat([_problems("baseline", k, [0.0100] * 16) for k in range(3)])
    # the arm's typical problem is 1% better, but one failure in each run lifts its mean 4% above the baseline
    arm = pd.concat([_problems("random", k, [0.0099 * (1 + 0.001 * k)] * 15 + [0.0099 * 8]) for k in range(3)])
    runs = failure_table(pd.concat([base, arm]), factor=5.0)
    means = runs.groupby("strategy")["mean"].apply(list)
    primary = {"random": judged_change(means["random"], means["baseline"], 0.05, 0.95)}
    sens = sensitivity_table(runs, [("random", "baseline")], primary, 0.05, 0.95).set_index("variant")
    assert primary["random"]["estimate"] > 0.4
    assert (sens["estimate"] < 0).all() and not sens["agrees"].any()


def test_the_study_counts_failures_and_keeps_the_primary_endpoint(tmp_path):
    arms = {"baseline": ("none", 0.0100, {}), "random": ("random", 0.0100, {"failure_seeds": [1]}),
            "adversarial": ("adversarial", 0.0090, {})}
    v = study(tmp_path, arms)
    per_arm = {a["strategy"]: a for a in v["failures"]["arms"]}
    assert per_arm["random"]["failures"] == 1 and per_arm["random"]["runs_with_failures"] == 1
    assert per_arm["baseline"]["failures"] == 0
    runs = pd.read_csv(tmp_path / "failures.csv").set_index(["strategy", "seed"])
    assert runs.loc[("random", 1), "mean"] == pytest.approx(0.0100, rel=0.02)  # the primary value itself
    assert runs.loc[("random", 1), "mean_without_failures"] < runs.loc[("random", 1), "mean"]
    sens = pd.read_csv(tmp_path / "failure_sensitivity.csv")
    assert set(sens["variant"]) == {"mean without inference failures (sensitivity)",
                                    "median problem MSE (robust companion endpoint)"}
    assert v["outcome"] == "mining helps"  # the verdict is the primary endpoint's, unchanged
