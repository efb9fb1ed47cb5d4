"""The prepared GPU run of the workflow (issue 45, item 3), proven on a CPU first: the .test study runs
end to end through ``tools/gpu_workflow.sh`` in an environment like the GPU machines' image (torch
and the scientific stack, but no Snakemake, jsonschema or ema-pytorch), with the missing packages
installed only from the wheels ``tools/device_wheels.py`` downloads, never from an index."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.workflow_helpers import ROOT

pytestmark = pytest.mark.slow


def _run(command, **kwargs):
    proc = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{command} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_the_test_study_runs_through_the_gpu_script_from_wheels_alone(tmp_path):
    python = tmp_path / "image/bin/python"
    _run([sys.executable, "-m", "venv", str(tmp_path / "image")])
    torch = next(line.split("==")[1] for line in (ROOT / "envs/tested.txt").read_text().splitlines()
                 if line.startswith("torch=="))
    _run([str(python), "-m", "pip", "install", "-q", f"torch=={torch}", "--extra-index-url",
          "https://download.pytorch.org/whl/cpu"], timeout=1800)
    # the image's packages the workflow relies on (numpy, pandas, ..., wrapt, psutil), at this suite's versions
    image = _run([sys.executable, "-m", "tools.device_wheels", "--image"], cwd=ROOT).stdout.split()
    image = [p for p in image if not p.startswith("torch==")]
    _run([str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "envs/tested.txt"), *image], timeout=1800)
    missing = _run([str(python), "-c", "import importlib.util as u; print([m for m in ('snakemake', 'jsonschema', "
                                       "'ema_pytorch') if u.find_spec(m) is None])"]).stdout.strip()
    assert missing == "['snakemake', 'jsonschema', 'ema_pytorch']"  # as on the GPU image
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    _run([sys.executable, "-m", "tools.device_wheels", str(tmp_path / "whl"), "--python-version", version],
         cwd=ROOT, timeout=1200)
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "config").mkdir(parents=True)
    shutil.copy2(ROOT / ".test/config/config.yaml", work / "config/config.yaml")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PYTHON=str(python), WHEELS=str(tmp_path / "whl"), SITE=str(tmp_path / "site"), WORKDIR=str(work),
               OUT=str(out), CORES="2", PIP_NO_INDEX="1")
    proc = subprocess.run(["bash", str(ROOT / "tools/gpu_workflow.sh")], env=env, capture_output=True, text=True,
                          timeout=2400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.md", "snakemake.log", "status.txt",
                                                     "tables.tgz", "timing.json", "verdict.json", "versions.txt"]
    assert "snakemake 9." in (out / "versions.txt").read_text() and "available False" in (out / "versions.txt").read_text()
    timing = json.loads((out / "timing.json").read_text())
    assert timing["rc"] == 0 and timing["wall_seconds"] > 0 and timing["study"].endswith("studies/test")
    assert (out / "report.md").read_text().splitlines()[2].startswith("**Verdict:")
    assert " done" in (out / "status.txt").read_text()
    # the packages came from the wheels, installed where the script put them
    assert (tmp_path / "site/snakemake").is_dir() and (tmp_path / "site/jsonschema").is_dir()
