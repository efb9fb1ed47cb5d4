"""Helpers to run the workflow in a scratch directory from tests."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def make_workdir(path: Path, config: dict | None = None, base: str = ".test/config/config.yaml") -> Path:
    """A scratch directory holding config/config.yaml (the .test config, updated with ``config``)."""
    with open(ROOT / base) as fh:
        cfg = yaml.safe_load(fh)
    for key, value in (config or {}).items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    (path / "config").mkdir(parents=True, exist_ok=True)
    with open(path / "config" / "config.yaml", "w") as fh:
        yaml.safe_dump(cfg, fh)
    return path


def smk(workdir: Path, *args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run snakemake on this repo's Snakefile in ``workdir``."""
    # --resources takes several values: keep it before --cores so a positional target is not swallowed
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--resources", "gpu=1",
           "--cores", "2", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a snakemake run or dry run."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("Job stats"):
            for row in lines[i + 3:]:
                m = re.match(r"^\s*(\w+)\s+(\d+)\s*$", row)
                if not m:
                    break
                counts[m.group(1)] = int(m.group(2))
            break
    counts.pop("total", None)
    return counts


def copy_workdir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst
