"""Record the golden outputs of the training engines as they were before the one engine (issue 20).

Run at commit bf81f49 (Trainer1D and PackTrainer), from the repository root:

    git worktree add /tmp/old bf81f49 && cp tests/golden/*.py /tmp/old/tests/golden/
    cd /tmp/old && PYTHONPATH=. python tests/golden/record_engine.py <repo>/tests/golden/engine_float64.pt \
        <repo>/tests/golden/trainer1d-step8-layout.pt

Every scenario of tests/test_engine_golden.py, in float64: each mode solo and as a pack of 3, with
clipping active, the EMA's copy and lerp phases, a warm-up and a decay of the learning rate,
a resume from a checkpoint written mid-run, and a member (or a solo run) diverging.
The file keeps a digest of each model (per tensor: sum, sum of squares and 16 entries) and the curves.
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

import torch

from diffusion_lib.pack import PackTrainer, init_member
from diffusion_lib.training import Trainer1D

sys.path.insert(0, str(Path(__file__).parent))
from scenarios import CFG, MINING, RANK, SEEDS, NaNStream, curve_table, digest, result_record, skeleton  # noqa: E402

def solo(mode, seed=0, cfg=CFG, resume=None, nan_at=-1):
    diffusion, _ = init_member(seed, RANK, cfg.timesteps, MINING[mode])
    trainer = Trainer1D(diffusion, dataclasses.replace(cfg, seed=seed), None,
                        resume_path=resume, progress=False)
    trainer.stream.__class__ = NaNStream
    trainer.stream.nan_at = nan_at
    result = trainer.train()
    return {"raw": [digest(trainer.diffusion)], "ema": [digest(trainer.ema.ema_model)],
            "curves": [curve_table(result.curve)], "results": [result_record(result)]}


def pack(mode, cfg=CFG, resume=None, nan_at=(-1, -1, -1)):
    members = [init_member(s, RANK, cfg.timesteps, MINING[mode]) for s in SEEDS]
    trainer = PackTrainer([d for d, _ in members], [g for _, g in members],
                          [dataclasses.replace(cfg, seed=s) for s in SEEDS], None,
                          resume_paths=resume, progress=False)
    for stream, at in zip(trainer.streams, nan_at):
        stream.__class__ = NaNStream
        stream.nan_at = at
    results = trainer.train()
    models = [trainer.member_models(i) for i in range(len(SEEDS))]
    return {"raw": [digest(raw) for raw, _ in models], "ema": [digest(ema) for _, ema in models],
            "curves": [curve_table(r.curve) for r in results], "results": [result_record(r) for r in results]}


def scenarios(tmp: Path) -> dict:
    out = {}
    for mode in MINING:
        out[f"solo-{mode}"] = solo(mode)
        out[f"pack-{mode}"] = pack(mode)
    # resume mid-run: a run to 12 steps leaves its step-8 checkpoint; a second attempt continues from it
    solo("adversarial", 1, resume=tmp / "solo.ckpt")
    if len(sys.argv) > 2:  # the layout of Trainer1D's step-8 checkpoint: the new engine must resume from it
        torch.save(skeleton(torch.load(tmp / "solo.ckpt", weights_only=False)), sys.argv[2])
    out["solo-resume"] = solo("adversarial", 1, resume=tmp / "solo.ckpt")
    paths = [tmp / f"m{s}.ckpt" for s in SEEDS]
    pack("random", resume=paths)
    out["pack-resume"] = pack("random", resume=paths)
    out["solo-diverges"] = solo("adversarial", 2, nan_at=5)
    out["pack-diverges"] = pack("adversarial", nan_at=(-1, 5, -1))
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    with tempfile.TemporaryDirectory() as tmp:
        record = scenarios(Path(tmp))
    for name, rec in record.items():
        print(name, rec["results"])
    torch.save(record, sys.argv[1])
