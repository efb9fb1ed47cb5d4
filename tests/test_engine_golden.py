"""The one engine reproduces the engines it replaced (Trainer1D for one run, PackTrainer for a pack)
to rtol 1e-9 in float64: every mode solo and as a pack of 3, clipping in every log interval, the EMA's copy
and lerp phases, a warm-up and a decay of the learning rate, a resume from a checkpoint written
mid-run, and a solo run and a pack member diverging. The golden file was written by
tests/golden/record_engine.py at commit bf81f49, before the engine changed."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from diffusion_lib.engine import Engine
from golden import scenarios as rec  # the scenarios' settings and digests, as the recorder used them

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN / "engine_float64.pt", weights_only=False)


def _train(mode, seeds, resume=None, nan_at=None):
    configs = [dataclasses.replace(rec.CFG, seed=s) for s in seeds]
    engine = Engine.seeded(configs, rec.MINING[mode], None, resume_paths=resume, progress=False)
    for stream, at in zip(engine.streams, nan_at or [-1] * len(seeds)):
        stream.__class__ = rec.NaNStream
        stream.nan_at = at
    results = engine.train()
    models = [engine.models(i) for i in range(len(seeds))]
    return {"raw": [rec.digest(raw) for raw, _ in models], "ema": [rec.digest(ema) for _, ema in models],
            "curves": [rec.curve_table(r.curve) for r in results], "results": [rec.result_record(r) for r in results]}


def _scenario(name, tmp_path):
    kind, what = name.split("-", 1)
    seeds = (0,) if kind == "solo" else rec.SEEDS
    if what in rec.MINING:
        return _train(what, seeds)
    if what == "resume":
        mode, seeds = ("adversarial", (1,)) if kind == "solo" else ("random", rec.SEEDS)
        paths = [tmp_path / f"{s}.ckpt" for s in seeds]
        _train(mode, seeds, resume=paths)
        return _train(mode, seeds, resume=paths)
    if kind == "solo":
        return _train("adversarial", (2,), nan_at=[5])
    return _train("adversarial", rec.SEEDS, nan_at=[-1, 5, -1])


SCENARIOS = [f"{k}-{m}" for m in rec.MINING for k in ("solo", "pack")] + [
    "solo-resume", "pack-resume", "solo-diverges", "pack-diverges"]


def assert_reproduces(name, want, tmp_path):
    """Scenario ``name`` run now equals its golden record ``want`` (rtol 1e-9 in float64)."""
    got = _scenario(name, tmp_path)
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
