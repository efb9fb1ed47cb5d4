"""Helpers to run the workflow in a scratch directory from tests."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from diffusion_lib.plan.files import FIGURES, TABLES
from diffusion_lib.report.latex import PAPER_TABLES

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# what a reader checks by eye (screenshots of report pages) is kept here after the run
ARTIFACTS = Path(os.environ.get("IRED_TEST_ARTIFACTS", ROOT / "test-artifacts"))
# every file a finished .test study writes under its report folder
REPORT_FILES = ["report.md", "report.html", *(f"figures/{f}.png" for f in (*FIGURES, "ablation_opt_steps", "stability")),
                *(f"tables/{t}.csv" for t in TABLES), "tables/verdict.json",
                *(f"tables/{t}.tex" for t in PAPER_TABLES)]


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


def set_strategies(workdir: Path, strategies: dict) -> None:
    """Replace the study's strategies in ``workdir``'s config (not merged with the .test ones) and keep only the
    stability tests that name the strategies left, as a researcher narrowing a study would."""
    path = workdir / "config" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["strategies"] = strategies
    stability = cfg.get("comparison", {}).get("stability")
    if stability:
        stability["controls"] = {k: v for k, v in stability.get("controls", {}).items() if k in strategies}
        stability["secondary"] = [p for p in stability.get("secondary", []) if set(p) <= set(strategies)]
    path.write_text(yaml.safe_dump(cfg))


def smk(workdir: Path, *args: str, timeout: int = 600, check: bool = True, snakefile: Path | None = None
        ) -> subprocess.CompletedProcess:
    """Run snakemake on this repo's Snakefile (or ``snakefile``) in ``workdir``."""
    # --resources takes several values: keep it before --cores so a positional target is not swallowed
    cmd = [*SNAKEMAKE, "-s", str(snakefile or ROOT / "Snakefile"), "--directory", str(workdir), "--resources", "gpu=1",
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


def planned(workdir: Path, *args: str, **kwargs) -> dict[str, int]:
    """Jobs a dry run would run ({} when nothing is to be done)."""
    proc = smk(workdir, "-n", *args, **kwargs)
    out = proc.stdout + proc.stderr
    counts = job_counts(out)
    assert counts or "Nothing to be done" in out, out[-3000:]
    return counts


def overlay(tmp_path: Path, text: str) -> str:
    """A config overlay file in ``tmp_path`` holding ``text`` (for --configfile)."""
    path = tmp_path / f"overlay{len(list(tmp_path.glob('overlay*')))}.yaml"
    path.write_text(text)
    return str(path)


def copy_workdir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def lose_runs(workdir: Path, seed: int = 1, strategies: tuple[str, ...] = ("baseline", "adversarial")) -> list:
    """Delete the run folders of ``seed`` of ``strategies`` in a copy of a finished study (their
    trunk states, rungs and evaluations with them) and the study's report: the jobs that remake
    them are a small study's worth of every kind of training and evaluation job. (Snakemake does
    not remake a missing file whose consumers are up to date, hence the report goes too.)
    Returns their run specs."""
    layout = layout_of(workdir)
    lost = [r for r in layout.runs if r.seed == seed and r.strategy in strategies]
    for folder in [spec.dir for spec in lost] + [layout.study_dir]:
        shutil.rmtree(workdir / folder)
    return lost


def config_of(workdir: Path, *overlays: Path) -> dict:
    """The validated config of the study in ``workdir`` (its config/config.yaml, overlays merged on top)."""
    from diffusion_lib.plan.config import load_study_config

    return load_study_config([workdir / "config" / "config.yaml", *overlays])


def layout_of(workdir: Path, *overlays: Path):
    """The results layout of the study in ``workdir`` (:func:`config_of`)."""
    from diffusion_lib.plan.layout import Layout

    return Layout(config_of(workdir, *overlays))


def budgets_of(workdir: Path, *overlays: Path):
    """The training budgets (rungs, branch points) of the study in ``workdir`` (:func:`config_of`)."""
    from diffusion_lib.plan.budgets import Budgets

    return Budgets(config_of(workdir, *overlays))


def run_dir(workdir: Path, strategy: str, seed: int, *overlays: Path) -> Path:
    """Folder of one (strategy, seed) run of the study in ``workdir``."""
    layout = layout_of(workdir, *overlays)
    return workdir / next(r.dir for r in layout.runs if (r.strategy, r.seed) == (strategy, seed))


def study_dir(workdir: Path, *overlays: Path) -> Path:
    return workdir / layout_of(workdir, *overlays).study_dir


def copy_repo(dst: Path) -> Path:
    """A copy of the workflow and library (to edit them in a test without touching this checkout)."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "Snakefile", dst)
    for folder in ("workflow", "diffusion_lib", "profiles", "envs"):
        shutil.copytree(ROOT / folder, dst / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return dst
