"""Shared fixtures: a tiny problem size so library tests run in seconds on a CPU."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from diffusion_lib.jobs.study import TABLES

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# what a reader checks by eye (screenshots of report pages) is kept here after the run
ARTIFACTS = Path(os.environ.get("IRED_TEST_ARTIFACTS", ROOT / "test-artifacts"))
torch.set_num_threads(1)
# the step compiled ahead of time (train.aot) costs 15-30 s per graph: the suite trains eagerly (its
# workflow runs too, which inherit this), and tests/test_aot.py turns it on where it tests it
os.environ["IRED_AOT"] = "off"


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def float64():
    """Tensors made during the test default to float64 (equality proofs to 1e-9 and below)."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


REPORT_FILES = ["report.md", "report.html", *(f"figures/{f}.png" for f in ("forest", "ladder", "mse", "curves",
                                                                            "compute", "diagnostics", "landscape",
                                                                            "test_time", "ablation_opt_steps")),
                *(f"tables/{t}.csv" for t in TABLES),
                "tables/verdict.json",
                *(f"tables/{t}.tex" for t in ("contrasts_primary", "contrasts_secondary", "endpoints"))]


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """The .test workflow run locally to completion, once per session (shared by workflow and SLURM tests)."""
    from workflow_helpers import make_workdir, smk

    workdir = make_workdir(tmp_path_factory.mktemp("e2e"))
    proc = smk(workdir)
    return workdir, proc
