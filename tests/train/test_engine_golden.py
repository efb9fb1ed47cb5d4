"""The one engine reproduces the engines it replaced (Trainer1D for one run, PackTrainer for a pack)
to rtol 1e-9 in float64: every mode solo and as a pack of 3, clipping in every log interval, the EMA's copy
and lerp phases, a warm-up and a decay of the learning rate, a resume from a checkpoint written
mid-run, and a solo run and a pack member diverging. The golden file was written by
tests/golden/record_engine.py at commit bf81f49, before the engine changed; the recorder now runs
today's engine (tests/golden/scenarios.py), and a test below proves it reproduces the file."""
from __future__ import annotations


import pytest
import torch

from tests.golden import scenarios as rec  # the scenarios' settings and digests, as the recorder used them
from tests.workflow_helpers import ROOT

GOLDEN = ROOT / "tests" / "golden"


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN / "engine_float64.pt", weights_only=False)


SCENARIOS = rec.SCENARIOS


def assert_reproduces(name, want, tmp_path):
    """Scenario ``name`` run now equals its golden record ``want`` (rtol 1e-9 in float64)."""
    got = rec.scenario(name, tmp_path)
    assert got["results"] == want["results"]
    for key in ("raw", "ema", "curves"):
        for ours, theirs in zip(got[key], want[key], strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12, equal_nan=True, msg=f"{name} {key}")


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_engine_reproduces_the_engines_it_replaced(name, golden, float64, tmp_path):
    want = golden[name]
    assert_reproduces(name, want, tmp_path)
    clip = rec.CURVE_KEYS.index("clip_frac")
    assert all((c[:, clip] > 0).all() for c in want["curves"]), "clipping was active in every interval"


def test_the_recorder_re_records_the_golden_file_from_todays_tree(golden, tmp_path):
    """tests/golden/record_engine.py runs today's engine: its record of a scenario is the golden one."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("record_engine", GOLDEN / "record_engine.py")
    recorder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recorder)
    (got,) = recorder.record(["solo-adversarial"], tmp_path).values()
    want = golden["solo-adversarial"]
    assert got["results"] == want["results"]
    for key in ("raw", "ema", "curves"):
        for ours, theirs in zip(got[key], want[key], strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12, equal_nan=True)
