"""Screenshot TensorBoard showing a study's training runs by strategy and seed (docs/images, README).

    python tools/tensorboard_screenshot.py docs/images/tensorboard.png [--configfile ...] [--filter val/mse_ema]

Starts ``tensorboard --logdir_spec`` over the study's runs (the argument ``python -m
diffusion_lib.watch.status --tensorboard`` prints) on 127.0.0.1 at a free port, waits until it serves,
takes the picture with headless Chromium (:func:`tools.report_browser.screenshot_url`) and
stops the server. Needs the tracking extra and Chromium.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.local_server import free_port, wait_until_serving  # noqa: E402
from tools.report_browser import screenshot_url  # noqa: E402
from diffusion_lib.watch.status import study_config, tensorboard_spec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("png")
    parser.add_argument("--configfile", action="append", default=[])
    parser.add_argument("--filter", default="val/mse_ema", help="the tags shown (TensorBoard's tag filter)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--wait-ms", type=int, default=20000, help="page time for TensorBoard to draw")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir_spec",
                               tensorboard_spec(study_config(args.configfile)), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(f"{base}/data/runs", process=server)
        url = f"{base}/#scalars&tagFilter={urllib.parse.quote(args.filter, safe='')}&_smoothingWeight=0"
        print(screenshot_url(url, args.png, args.width, args.height, wait_ms=args.wait_ms))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
