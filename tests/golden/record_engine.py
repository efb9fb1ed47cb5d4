"""Record the golden outputs of the training engine: every scenario of tests/golden/scenarios.py
(each mode solo and as a pack of 3, with clipping active, the EMA's copy and lerp phases, a warm-up
and a decay of the learning rate, a resume from a checkpoint written mid-run, and a member or a solo
run diverging), in float64, with today's engine. From the repository root:

    python -m tests.golden.record_engine tests/golden/engine_float64.pt

The file keeps a digest of each model (per tensor: sum, sum of squares and 16 entries) and the
curves. The file in the repository was first recorded at bf81f49 by the engines the one engine
replaced (Trainer1D, PackTrainer); tests/train/test_engine_golden.py holds today's engine to it at rtol 1e-9,
so re-recording it is only for a deliberate change of the numbers. ``trainer1d-step8-layout.pt`` (the
old engine's checkpoint layout) cannot be re-recorded: that engine no longer exists.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from tests.golden.scenarios import SCENARIOS, scenario


def record(names=SCENARIOS, tmp: Path | None = None) -> dict:
    """The golden record of the scenarios ``names``, run now in float64 on one thread."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            return {name: scenario(name, Path(tmp or scratch) / name) for name in names}
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.golden.record_engine OUT.pt")
    out = record()
    for name, rec in out.items():
        print(name, rec["results"])
    torch.save(out, sys.argv[1])
