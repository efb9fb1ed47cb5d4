"""The stability study's report section and figure (issue 44; diffusion_lib.report.survival), from
synthetic runs: the finding leads the section, every declared test and control reading is there,
and the figure is laid out cleanly with every group drawn."""
from __future__ import annotations

import numpy as np
import pandas as pd

from diffusion_lib.analysis.instability import InstabilityRule
from diffusion_lib.analysis.stability_finding import StabilityDesign, analyse_stability
from diffusion_lib.report.render import to_markdown
from diffusion_lib.report.style import TAG, layout_problems
from diffusion_lib.report.survival import plot_stability, stability_blocks

STEPS = list(range(290, 9281, 290))


def _curves(groups):
    rows = []
    for strategy, blowups in groups.items():
        for seed, t in enumerate(blowups, start=100):
            rows += [{"strategy": strategy, "seed": seed, "step": s,
                      "val_mse_ema": 0.05 if t is not None and s >= t else 0.01} for s in STEPS]
    return pd.DataFrame(rows)


def _study():
    groups = {"baseline": [2900, 3190, 3480, 3480, 4060], "adversarial": [None] * 5, "random": [3190, 3480, None, 4060, 4350],
              "adversarial_w0": [2900, 3190, 3190, 3480, 3770], "baseline__train.lr-0.00025": [None] * 5,
              "adversarial__train.lr-0.001": [1160, None, None, 2030, None]}
    arms = {"baseline": ("baseline", 5e-4), "adversarial": ("adversarial", 5e-4), "random": ("random", 5e-4),
            "adversarial_w0": ("adversarial_w0", 5e-4), "baseline__train.lr-0.00025": ("baseline", 2.5e-4),
            "adversarial__train.lr-0.001": ("adversarial", 1e-3)}
    design = StabilityDesign(("baseline", "adversarial"), (("random", "adversarial"),),
                             {"adversarial_w0": {"like_first": "the loss is needed", "like_second": "mining alone"}})
    tables, found = analyse_stability(_curves(groups), InstabilityRule(2.0), arms, design,
                                      "At lr 0.0005, 9,280 training steps × batch 64")
    return tables, {"stability": found, "strategies": list(groups)}


def test_the_section_leads_with_the_finding_and_lists_tests_readings_and_ranges():
    tables, v = _study()
    text = to_markdown(stability_blocks(v, tables, {"stability": "x.png"}), str, {"stability": "x.png"})
    assert "## Training stability" in text
    assert "**Baseline unstable sooner.** At lr 0.0005, 9,280 training steps × batch 64: 5 of 5 baseline runs" in text
    assert "`adversarial_w0`: like baseline: the loss is needed" in text
    assert ("adversarial (rates tried: 0.0005, 0.001): stable at every rate tried up to 0.0005, unstable from 0.001 "
            "(0 of 5 runs unstable there: a run's risk up to 45%)") in text
    assert "baseline (rates tried: 0.00025, 0.0005): stable at every rate tried up to 0.00025, unstable from 0.0005" in text
    assert "random (rates" not in text  # one rate tried: no range claimed
    # an arm stable at every rate tried: its edge is above them, not "unstable from" anything
    calm = {"arm": "calm", "largest_stable_lr": 1e-3, "smallest_unstable_lr": None, "runs_at_largest": 5,
            "risk_upper_95": 0.45, "rates": [5e-4, 1e-3]}
    more = {"stability": {**v["stability"], "stable_range": [*v["stability"]["stable_range"], calm]}}
    text_calm = to_markdown(stability_blocks(more, tables, {}), str, {})
    assert ("calm (rates tried: 0.0005, 0.001): stable at every rate tried, up to 0.001; its edge lies above the rates "
            "tried (0 of 5 runs unstable there: a run's risk up to 45%)") in text_calm
    assert "| random | 0.0005 | 5 | 4 | 80.0% | [28.4%, 99.5%] |" in text  # shares unsigned, rates as written
    # how far the unstable runs rose (0.01 to 0.05: 5x) and none came back; nothing to describe without one
    assert "| 5.0× | 0 of 4 |" in text and "| n/a | n/a |" in text and "Descriptive, not tested" in text
    assert "Holm p" in text and "exact p" in text and "![Training stability](x.png)" in text
    assert "nan" not in text.lower() and "None" not in text
    # no design declared: no section
    assert stability_blocks({"stability": {}}, tables, {}) == []


def test_the_figure_draws_every_group_and_is_laid_out_cleanly(tmp_path):
    tables, v = _study()
    fig = plot_stability(tables["stability_km"], tables["stability_shares"], tables["stability_runs"], v,
                         tmp_path / "stability.png", {"strategies": v["strategies"]})
    assert (tmp_path / "stability.png").exists() and layout_problems(fig) == []
    left, middle, right = fig.axes[:3]
    drawn = {a.get_gid()[len(TAG):] for a in left.get_children() if (a.get_gid() or "").startswith(TAG)}
    assert drawn == {"baseline", "adversarial", "random", "adversarial_w0"}  # every group at lr 5e-4
    on_right = {a.get_gid()[len(TAG):] for a in right.get_children() if (a.get_gid() or "").startswith(TAG)}
    assert on_right == {"baseline", "adversarial", "random", "adversarial_w0"}
    assert right.get_xscale() == "log" and "0.0005" in left.get_title()
    # the middle panel: every run once, filled where it became unstable, open (white) where it never did
    runs = tables["stability_runs"]
    points = [c for c in middle.collections if (c.get_gid() or "").startswith(TAG)]
    open_ = sum(len(c.get_offsets()) for c in points if tuple(c.get_facecolor()[0][:3]) == (1.0, 1.0, 1.0))
    filled = sum(len(c.get_offsets()) for c in points) - open_
    assert (filled, open_) == (int(runs["event"].sum()), int((~runs["event"]).sum())) and open_ > 0 and filled > 0
    assert sorted(y for c in points for _, y in c.get_offsets() if y < 9280) == sorted(runs.loc[runs["event"], "time"])
    assert middle.get_xscale() == "log"
    # the median line breaks at a rate where most runs stayed stable (baseline at 2.5e-4) instead of bridging it
    line = next(l for l in middle.lines if l.get_gid() == TAG + "baseline")
    assert np.isnan(line.get_ydata()).tolist() == [True, False]
    # only arms tried at a single rate: no middle panel
    one_rate = tables["stability_shares"].groupby("arm").head(1)
    fig = plot_stability(tables["stability_km"], one_rate, tables["stability_runs"], v, tmp_path / "one.png",
                         {"strategies": v["strategies"]})
    assert len([a for a in fig.axes if a.get_visible()]) == 2


def test_a_control_at_another_rate_is_drawn_and_an_untested_primary_does_not_break_the_report(tmp_path):
    tables, v = _study()
    # a control at its own learning rate (the matched-step baseline): in the left panel with the groups it is read against
    km = tables["stability_km"]
    matched = km[km["strategy"] == "baseline"].assign(strategy="baseline_matched", arm="baseline_matched", lr=5.5e-4)
    shares = tables["stability_shares"]
    shares = pd.concat([shares, shares[shares["strategy"] == "baseline"].assign(strategy="baseline_matched",
                                                                                  arm="baseline_matched", lr=5.5e-4)])
    v["stability"]["groups"] = [*v["stability"]["groups"], "baseline_matched"]
    fig = plot_stability(pd.concat([km, matched]), shares, tables["stability_runs"], v, tmp_path / "s.png",
                         {"strategies": [*v["strategies"], "baseline_matched"]})
    left = fig.axes[0]
    drawn = {a.get_gid()[len(TAG):] for a in left.get_children() if (a.get_gid() or "").startswith(TAG)}
    assert "baseline_matched" in drawn and "0.00055" in left.get_title() and layout_problems(fig) == []
    # the primary pair without runs of one group: the section says so and prints no p-value
    untested = {**v["stability"], "outcome": "not tested", "sentence": "Not tested: no runs.",
                "primary": {**v["stability"]["primary"], "p": float("nan"), "splits": float("nan")}}
    text = to_markdown(stability_blocks({"stability": untested}, tables, {}), str, {})
    assert "**Not tested.** Not tested: no runs." in text and "Primary test:" not in text
