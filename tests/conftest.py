"""Shared fixtures: a tiny problem size so library tests run in seconds on a CPU. The tests mirror the
library's packages (tests/ired/, tests/train/, ...; tests/workflow/ runs the workflow end to end);
helpers are the package ``tests`` (tests/workflow_helpers.py, synthetic_study.py, trajectories.py,
golden/), imported by name: the repository root is on the path as the root of that package."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.workflow_helpers import ROOT

torch.set_num_threads(1)
# the step compiled ahead of time (train.aot) costs 15-30 s per graph: the suite trains eagerly (its
# workflow runs too, which inherit this), and tests/train/test_aot.py turns it on where it tests it
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


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """The .test workflow run locally to completion, once per session (shared by workflow and SLURM tests)."""
    from tests.workflow_helpers import make_workdir, smk

    workdir = make_workdir(tmp_path_factory.mktemp("e2e"))
    proc = smk(workdir)
    return workdir, proc
