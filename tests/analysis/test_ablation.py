"""The ablation table, figure and report section on synthetic runs: two bases swept on one recipe
parameter (one value infinite), a mining sweep of one base with a diverged grid point, and a
recipe parameter swept from one base only."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from diffusion_lib.report import ablation as ablation_figure
from diffusion_lib.analysis.ablation import GAP, ablation_table, ordered_values, override_text, parse_value, points_from_table, value_label
from diffusion_lib.report.ablation import ablation_blocks
from diffusion_lib.report.render import to_markdown
from diffusion_lib.analysis.statistics import LABELS, relative_change_ci
from diffusion_lib.analysis.tables import Endpoint
from tests.synthetic_study import values

INF = math.inf
OUTCOMES = LABELS
CLIP = "train.grad_clip"
#: strategy -> (mode, mean ID test MSE, sweep point)
ARMS = {
    "baseline": ("none", 0.010, {"base": "baseline", CLIP: 1.0}),
    "baseline__train.grad_clip-4": ("none", 0.010, {"base": "baseline", CLIP: 4.0}),
    "baseline__train.grad_clip-inf": ("none", 0.012, {"base": "baseline", CLIP: INF}),
    "adversarial": ("adversarial", 0.0105, {"base": "adversarial", CLIP: 1.0, "opt_steps": 2}),
    "adversarial__train.grad_clip-4": ("adversarial", 0.010, {"base": "adversarial", CLIP: 4.0}),
    "adversarial__train.grad_clip-inf": ("adversarial", 0.0108, {"base": "adversarial", CLIP: INF}),
    "adversarial__opt_steps-5": ("adversarial", 0.009, {"base": "adversarial", "opt_steps": 5}),
    "adversarial__opt_steps-1": ("adversarial", math.nan, {"base": "adversarial", "opt_steps": 1}),  # diverged
    "adversarial__train.lr-0.001": ("adversarial", 0.011, {"base": "adversarial", "train.lr": 0.001}),
}
SWEEP_POINTS = {name: point for name, (_, _, point) in ARMS.items()}
SEEDS = 3
EXPECTED_GAP = {1.0: 0.0105 / 0.010 - 1, 4.0: 0.0, INF: 0.0108 / 0.012 - 1}


def _seed_values(mean: float) -> list[float]:
    return values(mean, 0.05, SEEDS)


def _runs() -> pd.DataFrame:
    rows = []
    for name, (mode, mean, _) in ARMS.items():
        for seed in range(SEEDS):
            base = {"strategy": name, "seed": seed, "mode": mode}
            if math.isnan(mean):
                rows.append({**base, "status": "diverged", "set": None, "inner_steps": None, "mse": math.nan})
                continue
            for set_name, factor in (("test_id", 1.0), ("test_ood", 10.0)):
                for inner in (0, 5):
                    mse = _seed_values(mean)[seed] * factor * (1 if inner else 2)
                    rows.append({**base, "status": "completed", "set": set_name, "inner_steps": inner, "mse": mse,
                                 "mse_raw_model": mse * 1.1 if inner == 5 else math.nan})
    return pd.DataFrame(rows)


@pytest.fixture
def table() -> pd.DataFrame:
    return ablation_table(_runs(), SWEEP_POINTS, 5, baseline="baseline", primary=Endpoint("test_id", 5), delta=0.05)


@pytest.fixture
def cached(table, tmp_path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ablation and runs tables after a CSV round trip, as the figure and report rules read them."""
    table.to_csv(tmp_path / "ablation.csv", index=False)
    _runs().to_csv(tmp_path / "runs.csv", index=False)
    return pd.read_csv(tmp_path / "ablation.csv"), pd.read_csv(tmp_path / "runs.csv")


def test_gap_rows_pair_the_bases_at_the_same_value_with_the_seed_level_ci(table):
    gaps = table[(table["kind"] == GAP) & (table["parameter"] == CLIP)]
    assert len(gaps) == 3 and set(gaps["base"]) == {"adversarial"}
    for r in gaps.itertuples():
        versus = {1.0: "baseline", 4.0: "baseline__train.grad_clip-4", INF: "baseline__train.grad_clip-inf"}[r.value]
        assert r.versus == versus
        assert r.estimate == pytest.approx(EXPECTED_GAP[r.value], abs=1e-12)
        expected = relative_change_ci(_seed_values(ARMS[r.strategy][1]), _seed_values(ARMS[versus][1]), 0.95)
        assert (r.ci_low, r.ci_high, r.p) == pytest.approx((expected.ci_low, expected.ci_high, expected.p))
        assert r.ci_low < r.estimate < r.ci_high and r.n_a == r.n_b == SEEDS
        assert r.endpoint == "test_id/ema/5" and r.confidence == 0.95
    assert set(gaps["outcome"]) <= set(OUTCOMES)


def test_mining_sweeps_compare_with_the_baseline_and_one_base_recipe_sweeps_have_no_gap(table):
    gaps = table[(table["kind"] == GAP) & (table["parameter"] == "opt_steps")].set_index("value")
    assert set(gaps["versus"]) == {"baseline"} and sorted(gaps.index) == [1, 2, 5]
    assert gaps.loc[5, "estimate"] == pytest.approx(0.009 / 0.010 - 1)
    assert math.isnan(gaps.loc[1, "estimate"]) and gaps.loc[1, "n_a"] == 0  # every run diverged
    assert table[(table["kind"] == GAP) & (table["parameter"] == "train.lr")].empty


def test_arm_rows_keep_diverged_grid_points_and_count_runs(table):
    arms = table[table["kind"] == "arm"]
    assert len(arms[arms["parameter"] == CLIP]) == 6 * 2  # six grid points, two test sets
    dead = arms[arms["strategy"] == "adversarial__opt_steps-1"]
    assert len(dead) == 2 and (dead["seeds"] == 0).all() and (dead["diverged"] == SEEDS).all()
    twin = arms[(arms["strategy"] == "adversarial") & (arms["parameter"] == CLIP)]
    assert set(twin["others"]) == {"opt_steps=2"}


def test_values_survive_the_csv_round_trip_and_order_with_infinity_last(cached):
    ablation, _ = cached
    clip = ablation[ablation["parameter"] == CLIP]
    assert clip["value"].dtype == float and np.isinf(clip["value"]).sum() == 2 * 2 + 1  # arms × sets, and a gap
    assert ordered_values(clip["value"]) == [1.0, 4.0, INF]
    assert [value_label(CLIP, v) for v in ordered_values(clip["value"])] == ["1", "4", "∞ (no clipping)"]
    assert set(clip["value_label"]) == {"1", "4", "∞ (no clipping)"}
    assert points_from_table(ablation) == {k: {p: float(v) if p != "base" else v for p, v in point.items()}
                                           for k, point in SWEEP_POINTS.items()}


def test_values_read_back_as_text_still_parse_and_order():
    assert parse_value("inf") == INF and parse_value("1.0") == 1.0 and parse_value("cosine") == "cosine"
    assert ordered_values(["cosine", "inf", 2, 1.0, "1", math.nan]) == [1.0, 2.0, INF, "cosine"]
    assert value_label("lr", 0.00025) == "0.00025" and value_label("opt_steps", 5.0) == "5"
    assert value_label("scale", INF) == "∞"


def test_figure_has_a_categorical_axis_hue_by_base_and_a_gap_panel(cached, tmp_path):
    ablation, runs = cached
    path = tmp_path / "figures" / f"ablation_{CLIP}.png"
    fig = ablation_figure.plot_ablation(ablation, runs, "baseline", CLIP, 5, path, {"dpi": 40}, delta=0.05)
    assert path.stat().st_size > 0
    axes = fig.axes
    assert len(axes) == 3  # ID, OOD, gap
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["1", "4", "∞ (no clipping)"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]  # every panel's entries, beside the panels
    assert any(t.startswith("baseline") for t in legend) and any(t.startswith("adversarial") for t in legend)
    (gap,) = axes[2].containers  # one error-bar series: the adversarial base
    assert list(gap.lines[0].get_ydata()) == pytest.approx([100 * g for g in EXPECTED_GAP.values()])
    assert [round(x) for x in gap.lines[0].get_xdata()] == [0, 1, 2]  # categories, dodged per base


def test_figure_of_a_one_base_sweep_and_of_nothing(cached, tmp_path):
    ablation, runs = cached
    for parameter in ("opt_steps", "absent"):
        path = tmp_path / f"ablation_{parameter}.png"
        ablation_figure.plot_ablation(ablation, runs, "baseline", parameter, 5, path, {"dpi": 40}, delta=0.05)
        assert path.stat().st_size > 0


def test_report_lists_each_strategys_overrides_and_the_gaps(cached):
    ablation, _ = cached
    assert override_text("a", {"base": "adversarial", CLIP: INF}) == "adversarial, grad_clip = ∞ (no clipping)"
    doc = ablation_blocks({"default_inner": 5}, {"ablation": ablation}, {f"ablation_{CLIP}": "x.png"})
    overrides = next(b[1] for b in doc if b[0] == "ul")
    assert "`adversarial__train.grad_clip-inf`: adversarial, grad_clip = ∞ (no clipping)" in overrides
    assert "`baseline__train.grad_clip-4`: baseline, grad_clip = 4" in overrides
    gaps = [b[1] for b in doc if b[0] == "table"][0]
    assert list(gaps["MSE change"][gaps["parameter"] == CLIP]) == [f"{g:+.1%}" for g in EXPECTED_GAP.values()]
    text = to_markdown(doc, str, {f"ablation_{CLIP}": "x.png"})
    assert "∞ (no clipping)" in text and "![Ablation of train.grad_clip](x.png)" in text
    assert ablation_blocks({"default_inner": 5}, {"ablation": ablation.iloc[:0]}, {}) == []


def test_the_study_writes_gap_rows_draws_the_figure_and_reports_the_overrides(tmp_path):
    from diffusion_lib.jobs.study import draw_ablation, write_report
    from diffusion_lib.plan.files import TABLES
    from tests.synthetic_study import study

    points = {"baseline": {"base": "baseline", CLIP: 1.0}, "adversarial": {"base": "adversarial", CLIP: 1.0},
              "baseline__train.grad_clip-inf": {"base": "baseline", CLIP: INF},
              "adversarial__train.grad_clip-inf": {"base": "adversarial", CLIP: INF}}
    arms = {"baseline": ("none", 0.010, {}), "adversarial": ("adversarial", 0.011, {}),
            "baseline__train.grad_clip-inf": ("none", 0.012, {}),
            "adversarial__train.grad_clip-inf": ("adversarial", 0.009, {})}
    study(tmp_path, arms, ladder=(1000,), seeds=3, sweep_points=points)
    tables = {t: str(tmp_path / f"{t}.csv") for t in TABLES}
    gaps = pd.read_csv(tables["ablation"]).query("kind == 'gap'").set_index("value")
    assert gaps.loc[INF, "estimate"] == pytest.approx(0.009 / 0.012 - 1)
    assert gaps.loc[1.0, "estimate"] == pytest.approx(0.011 / 0.010 - 1)
    figure = tmp_path / "figures" / f"ablation_{CLIP}.png"
    draw_ablation(tables=tables, verdict_path=str(tmp_path / "verdict.json"), parameter=CLIP, figure=str(figure),
                  options={"dpi": 40})
    assert figure.stat().st_size > 0
    report = tmp_path / "report.md"
    write_report(tables=tables, verdict_path=str(tmp_path / "verdict.json"), figures={f"ablation_{CLIP}": str(figure)},
                 report_path=str(report))
    text = report.read_text()
    assert "adversarial, grad_clip = ∞ (no clipping)" in text and "| -25.0% |" in text
