"""report.html in a real browser (issue 23): headless Chromium loads the page of a synthetic study;
every figure decodes and the first thing a reader sees is the verdict paragraph under the title; a
screenshot of the page is kept in test-artifacts/ (``IRED_TEST_ARTIFACTS``).

Chromium is installed by scripts/test.sh where it can be (root with apt-get); elsewhere these tests
are skipped with the reason, unless IRED_REQUIRE_CHROMIUM=1 (CI) makes a missing browser a failure."""
from __future__ import annotations

import base64
import os

import pytest
from tests.report.test_figures import synthetic  # noqa: F401 (the module-scoped synthetic study)

from tests.workflow_helpers import ARTIFACTS
from diffusion_lib.jobs.study import write_report
from tools.report_browser import find_chromium, page_check, screenshot

BROWSER = find_chromium()
if BROWSER is None and os.environ.get("IRED_REQUIRE_CHROMIUM") != "1":
    pytest.skip("no Chromium on PATH (scripts/test.sh installs it as root with apt-get; or set CHROMIUM)",
                allow_module_level=True)


def test_the_report_page_loads_every_figure_and_opens_with_the_verdict(synthetic, tmp_path):  # noqa: F811
    assert BROWSER is not None, "IRED_REQUIRE_CHROMIUM=1 but no Chromium is installed"
    folder, v, tables, figures, _ = synthetic
    html = tmp_path / "report.html"
    write_report(tables=tables, verdict_path=str(folder / "verdict.json"), figures=figures,
                 report_path=str(tmp_path / "report.md"), html_path=str(html))
    page = page_check(html, BROWSER)
    assert page["images"] == len(figures) and page["loaded"] == page["images"], page
    assert page["heading"].startswith("IRED negative-mining study")
    assert page["first_paragraph"].startswith(f"Verdict: {v['outcome']}.")
    assert v["budget"]["short"].split()[0] in page["first_paragraph"]  # the sentence names its budget
    # kept for a reader to look at after the run (test-artifacts/, or IRED_TEST_ARTIFACTS)
    shot = screenshot(html, ARTIFACTS / "synthetic-report-page.png", height=2400, browser=BROWSER)
    assert shot.stat().st_size > 10_000


def test_the_page_check_sees_a_broken_figure(tmp_path):
    assert BROWSER is not None, "IRED_REQUIRE_CHROMIUM=1 but no Chromium is installed"
    broken = base64.b64encode(b"not a png").decode()
    html = tmp_path / "broken.html"
    html.write_text(f'<!doctype html><html><body><h1>Title</h1><ul><li>not a paragraph</li></ul>'
                    f'<img src="data:image/png;base64,{broken}"></body></html>')
    page = page_check(html, BROWSER)
    assert page == {"images": 1, "loaded": 0, "heading": "Title", "first_paragraph": None}
