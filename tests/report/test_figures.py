"""Figures and tables a user pastes into a paper (issue 23): every figure laid out cleanly at the
configured size and dpi, one colour and one marker per strategy in every figure with legends in the
tables' order, vector copies for report.format, report tables formatted for reading, LaTeX tables.

The study is synthetic (:mod:`synthetic_study`, plus a landscape table), so these run in seconds."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.lines import Line2D
from tests.synthetic_study import study

from diffusion_lib.report.style import MARKERS, TAG, layout_problems
from diffusion_lib.jobs.study import _cached, draw_ablation, draw_figures, write_report
from diffusion_lib.plan.files import TABLES
from diffusion_lib.report.latex import PAPER_TABLES, escape, paper_tables
from diffusion_lib.report.render import cell, interval, select

ARMS = {"baseline": ("none", 0.0100, {}), "random": ("random", 0.0098, {}), "adversarial": ("adversarial", 0.0090, {}),
        "adversarial__opt_steps-1": ("adversarial", 0.0095, {})}
FIGURES = ("forest", "ladder", "mse", "curves", "compute", "diagnostics", "landscape", "test_time")
OPTIONS = {"dpi": 60, "format": ["png"]}


def _landscape(strategies: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"strategy": s, "seed": seed, "mode": "x", "t": t, "negative": probe, "rank_acc": rng.uniform(0.4, 1.0),
             "gap_mean": 1.0} for s in strategies for seed in range(5) for t in range(10)
            for probe in ("random σ=3", "near-miss ρ=0.1", "near-miss ρ=0.3", "adversarial σ=1.5, 5 steps")]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("figures")
    v = study(folder, ARMS, compute_matched={"adversarial": (500, 1.05), "random": (750, 1.0)},
              sweep_points={"adversarial__opt_steps-1": {"base": "adversarial", "opt_steps": 1},
                            "adversarial": {"base": "adversarial", "opt_steps": 2}})
    _landscape(list(ARMS)).to_csv(folder / "landscape.csv", index=False)
    tables = {t: str(folder / f"{t}.csv") for t in TABLES}
    figures = {f: str(folder / "figures" / f"{f}.png") for f in FIGURES}
    drawn = draw_figures(tables=tables, verdict_path=str(folder / "verdict.json"), figures=figures, options=OPTIONS,
                         latex={t: str(folder / f"{t}.tex") for t in PAPER_TABLES})
    return folder, v, tables, figures, drawn


def _strategy_artists(fig: plt.Figure):
    """(strategy, colour, marker or None) of every artist drawn for a strategy."""
    for artist in fig.findobj(lambda a: (a.get_gid() or "").startswith(TAG)):
        name = artist.get_gid()[len(TAG):]
        if isinstance(artist, Line2D):
            marker = artist.get_marker()
            yield name, to_hex(artist.get_color()), marker if marker in MARKERS else None
        else:  # scatter points and CI bands
            colors = artist.get_facecolor()
            if len(colors):
                yield name, to_hex(colors[0][:3]), None


def test_every_figure_is_laid_out_cleanly(synthetic):
    _, _, tables, _, drawn = synthetic
    assert set(drawn) == set(FIGURES) and all(drawn.values())
    for name, fig in drawn.items():
        assert layout_problems(fig) == [], name
    folder = synthetic[0]
    ablation = draw_ablation(tables=tables, verdict_path=str(folder / "verdict.json"), parameter="opt_steps",
                             figure=str(folder / "figures" / "ablation_opt_steps.png"), options=OPTIONS)
    assert ablation is not None and layout_problems(ablation) == []


def test_the_layout_check_finds_overlaps_blank_bands_and_legends_over_data():
    fig = plt.figure(figsize=(8, 3), dpi=60)
    a, b = fig.add_axes([0.1, 0.1, 0.5, 0.8]), fig.add_axes([0.4, 0.1, 0.5, 0.8])
    for ax in (a, b):
        ax.plot([0, 1], [0, 1])
    assert any("overlap" in p for p in layout_problems(fig))
    fig = plt.figure(figsize=(8, 3), dpi=60)
    for left in (0.05, 0.75):
        fig.add_axes([left, 0.15, 0.2, 0.75]).plot([0, 1], [0, 1])
    assert any("blank band" in p for p in layout_problems(fig))
    fig, ax = plt.subplots(figsize=(4, 3), dpi=60)
    ax.plot(np.linspace(0, 1, 50), np.full(50, 0.95), label="a line along the top")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper center")
    assert any("legend" in p for p in layout_problems(fig))
    plt.close("all")


def test_the_layout_check_finds_overlapping_texts_points_off_the_axes_and_unmarked_cis():
    def figure():
        fig, ax = plt.subplots(figsize=(4, 3), dpi=60)
        ax.set_xlim(0, 10)
        ax.set_ylim(-5, 5)
        return fig, ax

    fig, ax = figure()  # what the figures do: a CI beyond the axis cut at the edge and marked, labels apart
    ax.errorbar([2], [1], yerr=[[1], [4]], fmt="o")
    ax.plot(2, 5, "^")
    ax.annotate("zeros predictor", (9.9, 3), ha="right")
    ax.annotate("mean predictor", (9.9, -3), ha="right")
    assert layout_problems(fig) == []
    fig, ax = figure()  # two reference labels on top of each other
    ax.plot([0, 10], [0, 1])
    ax.annotate("zeros predictor 0.0500", (9.9, 1), ha="right")
    ax.annotate("mean predictor 0.0498", (9.9, 1.1), ha="right")
    assert any("texts" in p and "overlap" in p for p in layout_problems(fig))
    fig, ax = figure()  # an estimate beyond the axis, silently cut
    ax.plot([2, 4], [1, 40], "o")
    assert any("1 data point(s) outside the axes" in p for p in layout_problems(fig))
    fig, ax = figure()  # a CI that runs off the axis with no mark
    ax.errorbar([2], [1], yerr=[[1], [30]], fmt="o", capsize=0)
    assert any("error-bar end(s) run off the axes" in p for p in layout_problems(fig))
    plt.close("all")


def test_one_colour_and_one_marker_per_strategy_in_every_figure(synthetic):
    _, v, _, _, drawn = synthetic
    colours: dict[str, set[str]] = {}
    markers: dict[str, set[str]] = {}
    figures_of: dict[str, set[str]] = {}
    for name, fig in drawn.items():
        for strategy, colour, marker in _strategy_artists(fig):
            colours.setdefault(strategy, set()).add(colour)
            figures_of.setdefault(strategy, set()).add(name)
            if marker:
                markers.setdefault(strategy, set()).add(marker)
    assert set(colours) == set(ARMS)
    assert all(len(c) == 1 for c in colours.values()), colours
    assert all(len(m) == 1 for m in markers.values()), markers
    assert len({next(iter(c)) for c in colours.values()}) == len(ARMS)  # and no two strategies share one
    assert figures_of["baseline"] >= {"mse", "curves", "compute", "diagnostics", "landscape", "test_time"}
    assert figures_of["adversarial"] >= {"forest", "ladder", "mse", "curves", "landscape", "test_time"}
    # legends list strategies in the study's (the tables') order
    for name in ("mse", "curves", "landscape", "test_time", "forest"):
        fig = drawn[name]
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
        labels = [t.get_text() for legend in legends for t in legend.get_texts() if t.get_text() in ARMS]
        assert labels and labels == [s for s in v["strategies"] if s in labels], (name, labels)


def test_report_format_writes_vector_copies_next_to_the_png(synthetic, tmp_path):
    folder, _, tables, _, _ = synthetic
    figures = {f: str(tmp_path / f"{f}.png") for f in FIGURES}
    draw_figures(tables=tables, verdict_path=str(folder / "verdict.json"), figures=figures,
                 options={"dpi": 60, "format": ["png", "pdf", "svg"]})
    for name in FIGURES:
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
        assert "<svg" in (tmp_path / f"{name}.svg").read_text()[:2000]


def test_cells_are_formatted_for_reading():
    assert [cell(x, "p") for x in (0.0009429, 1.849e-07, 0.04559, 0.5)] == ["< 0.001", "< 0.001", "0.046", "0.500"]
    assert [cell(x) for x in (True, False, np.bool_(True))] == ["yes", "no", "yes"]
    assert cell("False", "yesno") == "no" and cell(float("nan"), "yesno") == "n/a"
    assert cell(0.0123456) == "0.01235" and cell(7) == "7" and cell(12345, "int") == "12,345"
    assert cell(-0.2734, "pct") == "-27.3%" and cell(0.5, "share") == "50.0%" and cell(float("inf")) == "n/a"
    assert interval(-0.741, 1.0412, "ci_pct") == "[-74.1%, +104.1%]" and interval(0.1, 0.23456) == "[0.1000, 0.2346]"
    # never e-notation, and a column's entries keep their significant digits (issue 42)
    assert [cell(x) for x in (1.117e-05, 0.01, 0.01009, 2.825e9, 16.2)] == [
        "0.00001117", "0.01000", "0.01009", "2,825,000,000", "16.20"]
    df = pd.DataFrame({"lo": [0.1], "hi": [0.2], "ok": [True], "p": [2e-5]})
    assert select(df, {("lo", "hi"): "95% CI", "ok": "ok", "p": ("p", "p")}).iloc[0].tolist() == [
        "[0.1000, 0.2000]", "yes", "< 0.001"]


def test_report_tables_print_no_python_values(synthetic, tmp_path):
    folder, _, tables, figures, _ = synthetic
    write_report(tables=tables, verdict_path=str(folder / "verdict.json"), figures=figures,
                 report_path=str(tmp_path / "report.md"), html_path=str(tmp_path / "report.html"))
    rows = [line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("|")]
    assert len(rows) > 30
    cells = [c.strip() for row in rows for c in row.strip("|").split("|")]
    assert not {"True", "False", "nan", "None"} & set(cells)
    numbers = [c for c in cells if re.fullmatch(r"[-+]?\d*\.?\d+(e[-+]?\d+)?", c)]
    assert numbers and max(len(re.sub(r"^[-+]?[0.]*|e.*$|\.", "", c)) for c in numbers if "." in c) <= 4
    headers = [row for row, nxt in zip(rows, rows[1:]) if nxt.startswith("|---")]
    ci_headers = [h for h in headers if "CI" in h]
    assert ci_headers and all(re.search(r"\d+(\.\d)?% CI", h) for h in ci_headers), ci_headers
    assert any(re.fullmatch(r"\[[-+]?\d+\.\d%, [-+]?\d+\.\d%\]", c) for c in cells)
    p_cells = _column((tmp_path / "report.md").read_text(), "Welch p")
    odd = [c for c in p_cells if c != "< 0.001" and not re.fullmatch(r"[01]\.\d{3}", c)]
    assert p_cells and not odd, odd
    for text in ((tmp_path / "report.md").read_text(), _without_images((tmp_path / "report.html").read_text())):
        assert not E_NOTATION.findall(text), E_NOTATION.findall(text)[:5]


E_NOTATION = re.compile(r"\d\.?\d*[eE][-+]\d+")


def _without_images(html: str) -> str:
    return re.sub(r'src="data:[^"]*"', "", html)


def test_the_primary_contrast_is_legible_in_the_ladder_and_forest_figures(tmp_path):
    """Issue 42: a compute-matched rung at +2,000% (burn-in) and a secondary endpoint at ±60% no longer
    size the axes. The primary CI must take at least 5% of the axis range, the ±delta band at least
    20%, and every point or CI end beyond the axis is marked with an arrow."""
    from diffusion_lib.report import figures as fig
    from diffusion_lib.report.ladder import plot_ladder

    v = study(tmp_path, {"baseline": ("none", 0.0100, {}), "adversarial": ("adversarial", 0.01046, {})},
              compute_matched={"adversarial": (500, 21.0)}, spread=0.01, seeds=8)
    t, v = _cached({k: str(tmp_path / f"{k}.csv") for k in TABLES}, str(tmp_path / "verdict.json"))
    primary = t["contrasts"][(t["contrasts"]["endpoint_role"] == "primary")].iloc[0]
    width = 100 * (primary["ci_high"] - primary["ci_low"])
    ladder = plot_ladder(t["ladder_contrasts"], t["compute_matched"], v, tmp_path / "ladder.png", {"dpi": 50})
    low, high = ladder.axes[0].get_ylim()
    assert width / (high - low) >= 0.05 and 10 / (high - low) >= 0.2, (width, low, high)
    texts = [x.get_text() for x in ladder.axes[0].texts]
    assert any("off scale" in x for x in texts) and any("paper's budget" in x for x in texts)
    assert ladder.axes[0].get_xlim()[1] < 1e7  # the data's range, not the paper's 2e8
    forest = fig.plot_forest(t["contrasts"], v, tmp_path / "forest.png", {"dpi": 50})
    low, high = forest.axes[0].get_xlim()
    assert width / (high - low) >= 0.05 and 10 / (high - low) >= 0.2, (width, low, high)


def _tables(markdown: str) -> list[list[list[str]]]:
    """Every table of a Markdown text: its rows (header first), each a list of cells."""
    tables: list[list[list[str]]] = []
    previous = ""
    for line in markdown.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            row = [c.strip() for c in line.strip().strip("|").split("|")]
            if previous.startswith("|"):
                tables[-1].append(row)
            else:
                tables.append([row])
        previous = line
    return tables


def _column(markdown: str, header: str) -> list[str]:
    """The cells under ``header`` in every table that has it."""
    return [row[t[0].index(header)] for t in _tables(markdown) if header in t[0] for row in t[1:]]


def test_latex_tables_are_booktabs_with_the_budget(synthetic):
    folder, v, tables, _, _ = synthetic
    written = {t: (folder / f"{t}.tex").read_text() for t in PAPER_TABLES}
    t, _ = _cached(tables, str(folder / "verdict.json"))
    assert written == paper_tables(t, v)
    budget = escape(v["budget"]["short"])
    for name, text in written.items():
        assert text.startswith("\\begin{table}") and text.rstrip().endswith("\\end{table}"), name
        assert all(rule in text for rule in ("\\toprule", "\\midrule", "\\bottomrule")) and budget in text, name
        assert "%" not in text.replace("\\%", ""), name  # every percent sign escaped
    body = written["contrasts_primary"].split("\\midrule")[1].split("\\bottomrule")[0]
    assert body.count("\\\\") == 2  # one row per mining strategy in the verdict (random, adversarial)
    endpoints = written["endpoints"].split("\\midrule")[1].split("\\bottomrule")[0]
    assert endpoints.count("\\\\") == 5 * len(ARMS)  # five endpoints, every strategy
    assert escape("ε = 0.5, 50% < 1_2") == "$\\varepsilon$ = 0.5, 50\\% $<$ 1\\_2"


def test_the_report_states_the_stability_finding_in_its_own_sentence():
    """stability_margin.seen_unstable becomes a sentence that calls it a recipe (stability) finding,
    naming each mode's first unstable step and the modes that held; no measurement, no sentence."""
    from diffusion_lib.report.document import _margin_lines
    training = {"lr": 2.5e-4, "longest_trunk": 4640,
                "stability_margin": {"seen_stable": {"none": 9280, "random": 9280, "adversarial": 9280},
                                     "seen_unstable": {"lr": 5e-4, "trunk": 9280, "first_unstable":
                                                       {"none": 2900, "random": 3480, "adversarial": None}}}}
    margin, finding = _margin_lines(training)
    assert margin.startswith("Stability margin: the longest constant-lr trunk is 4,640 steps") and "2.0×" in margin
    assert finding.startswith("Recipe finding (stability, not accuracy): at lr 0.0005 the none (first at step 2,900)"
                              " and random (first at step 3,480) runs became unstable, while the adversarial runs "
                              "stayed stable over the whole 9,280-step trunk; this study trains at lr 0.00025")
    del training["stability_margin"]["seen_unstable"]
    assert len(_margin_lines(training)) == 1
    training["stability_margin"]["seen_unstable"] = {"lr": 5e-4, "trunk": 9280, "first_unstable": {"none": None}}
    assert "every mode was also seen stable" in _margin_lines(training)[1]


def test_the_report_says_where_the_plateau_check_reads():
    """Under wsd the gate reads each arm's mean trunk curve up to the last branch point (never a decay
    segment); without a trunk bound it reads the last evaluations. Per-run checks are only beside it."""
    from diffusion_lib.report.ladder import plateau_scope
    trunk = plateau_scope({"plateau_until": 4640})
    assert "mean curve over seeds on the constant-lr trunk up to step 4,640 (no decay segment is read)" in trunk
    assert "per-run checks are reported beside it" in trunk
    last = plateau_scope({"plateau_until": None})
    assert "over each run's last evaluations" in last and "trunk" not in last
