"""Screenshot a study's HTML report (or any page) with headless Chromium, as in docs/report.md.

    python tools/screenshot.py results/studies/pilot/report.html docs/images/report-page.png --height 2400

Needs Chromium on PATH (``apt-get install chromium``; or set CHROMIUM to its binary). The page is
drawn at ``--width`` pixels and cut at ``--height``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.report_browser import page_check, screenshot  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", help="the HTML file (e.g. results/studies/<study>/report.html)")
    parser.add_argument("png", help="where to write the screenshot")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args()
    check = page_check(args.page)
    print(f"{args.page}: {check['loaded']} of {check['images']} images loaded; first heading: {check['heading']!r}")
    print(screenshot(args.page, args.png, args.width, args.height))


if __name__ == "__main__":
    main()
