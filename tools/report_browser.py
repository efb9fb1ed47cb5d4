"""The HTML report as a browser shows it: headless Chromium loads ``report.html`` and says whether
its figures loaded and what it reads first, or takes a screenshot of it (``tools/screenshot.py``).

Nothing here is needed to build a report; it checks one (tests/report/test_report_browser.py) and makes
the pictures in docs/. :func:`find_chromium` returns None where no Chromium is installed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--no-first-run", "--disable-extensions", "--virtual-time-budget=10000")
# runs when the page has loaded: what a reader sees first, and whether every image decoded
_PROBE = """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  const heading = document.querySelector('h1, h2, h3');
  const next = heading ? heading.nextElementSibling : null;
  const out = {images: images.length,
               loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
               heading: heading ? heading.textContent : null,
               first_paragraph: next && next.tagName === 'P' ? next.textContent : null};
  const pre = document.createElement('pre');
  pre.id = 'ired-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) binary on PATH (``CHROMIUM`` overrides), or None."""
    named = os.environ.get("CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).exists() else None)
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _run(browser: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout, check=False)


def page_check(html_path: str | Path, browser: str | None = None) -> dict[str, Any]:
    """Load the page in headless Chromium and return ``images`` (count), ``loaded`` (images that
    decoded), ``heading`` (the first heading's text) and ``first_paragraph`` (the paragraph right
    after it, or None)."""
    browser = browser or find_chromium()
    if browser is None:
        raise FileNotFoundError("no Chromium found (install chromium, or set CHROMIUM to its binary)")
    page = Path(html_path).read_text()
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "page.html"
        probe.write_text(page.replace("</body>", _PROBE + "</body>") if "</body>" in page else page + _PROBE)
        proc = _run(browser, "--dump-dom", probe.resolve().as_uri())
    found = re.search(r'<pre id="ired-check">(.*?)</pre>', proc.stdout, re.S)
    if not found:
        raise RuntimeError(f"Chromium did not run the page check (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


def screenshot(html_path: str | Path, png_path: str | Path, width: int = 1280, height: int = 2000,
               browser: str | None = None) -> Path:
    """A PNG screenshot of the page's top ``height`` pixels at ``width``."""
    return screenshot_url(Path(html_path).resolve().as_uri(), png_path, width, height, browser)


def screenshot_url(url: str, png_path: str | Path, width: int = 1280, height: int = 2000,
                   browser: str | None = None, wait_ms: int = 0) -> Path:
    """:func:`screenshot` of any address (a local server's page); ``wait_ms`` of the page's own
    time (scripts, requests) pass before the picture is taken."""
    browser = browser or find_chromium()
    if browser is None:
        raise FileNotFoundError("no Chromium found (install chromium, or set CHROMIUM to its binary)")
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    wait = [f"--virtual-time-budget={wait_ms}"] if wait_ms else []
    proc = _run(browser, f"--screenshot={png_path}", f"--window-size={width},{height}", *wait, url)
    if not png_path.exists():
        raise RuntimeError(f"Chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return png_path
