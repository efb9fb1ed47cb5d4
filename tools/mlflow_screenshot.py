"""Screenshot the MLflow UI comparing a study's training runs (docs/images, README).

    python tools/mlflow_screenshot.py docs/images/mlflow.png --backend-store-uri sqlite:///mlflow.db \
        [--experiment pilot] [--metric val/mse_ema]

Starts ``mlflow server`` over the backend store on 127.0.0.1 at a free port (or uses ``--uri`` of a
running server), finds the experiment (by default the study's name) and its training runs, opens
MLflow's metric page plotting ``--metric`` of every training run against the step (log y), takes
the picture with headless Chromium
(:func:`tools.report_browser.screenshot_url`) and stops the server. Needs the tracking
extra and Chromium.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import urllib.parse
import urllib.request
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.local_server import mlflow_server, wait_until_serving  # noqa: E402
from tools.report_browser import screenshot_url  # noqa: E402


def _experiment_id(base: str, name: str) -> str:
    query = urllib.parse.urlencode({"experiment_name": name})
    with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=10) as r:
        return json.load(r)["experiment"]["experiment_id"]


def _training_runs(base: str, experiment: str) -> list[str]:
    """The ids of the experiment's training runs (not the study's parent run)."""
    body = json.dumps({"experiment_ids": [experiment], "max_results": 1000}).encode()
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        runs = json.load(r).get("runs", [])
    tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs]
    return [run["info"]["run_id"] for run, t in zip(runs, tags) if t.get("ired.role") != "study"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("png")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--backend-store-uri", help="start a server over this store (sqlite:///mlflow.db)")
    where.add_argument("--uri", help="a running tracking server (http://127.0.0.1:5000)")
    parser.add_argument("--experiment", default="pilot", help="the MLflow experiment: the study's name by default")
    parser.add_argument("--metric", default="val/mse_ema", help="the metric the chart view searches for")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--wait-ms", type=int, default=25000, help="page time for the UI to draw")
    args = parser.parse_args()
    with ExitStack() as stack:
        base = args.uri or stack.enter_context(mlflow_server(args.backend_store_uri, tempfile.mkdtemp()))[0]
        wait_until_serving(f"{base}/health")
        experiment = _experiment_id(base, args.experiment)
        runs = _training_runs(base, experiment)
        query = urllib.parse.urlencode({"runs": json.dumps(runs), "metric": json.dumps(args.metric),
                                        "experiments": json.dumps([experiment]),
                                        "plot_metric_keys": json.dumps([args.metric]), "x_axis": "step",
                                        "y_axis_scale": "log", "line_smoothness": 1, "show_point": "false"})
        url = f"{base}/#/metric/{urllib.parse.quote(args.metric, safe='')}?{query}"
        print(screenshot_url(url, args.png, args.width, args.height, wait_ms=args.wait_ms))


if __name__ == "__main__":
    main()
