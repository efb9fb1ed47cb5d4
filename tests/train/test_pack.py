"""Seed packs: N runs in one engine equal N engines of one run (float64: the closed-form step mapped
over the pack by torch.func.vmap against each run's own), a diverged member leaves the others bitwise unchanged,
and members resume from their own checkpoints."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.golden.scenarios import NaNStream  # a stream whose k-th batch is NaN

from diffusion_lib.train.engine import Engine
from diffusion_lib.settings.run_config import TrainConfig
from diffusion_lib.train.run_state import seeded_member
from tests.workflow_helpers import ROOT

RANK = 3
SEEDS = (0, 1, 2)
MINING = {"none": {"mode": "none"}, "random": {"mode": "random"},
          "adversarial": {"mode": "adversarial", "opt_steps": 2, "mine_every": 2}}
# small enough to run in seconds; clipping, the EMA's copy and lerp phases and two log intervals all happen
CFG = TrainConfig(steps=8, batch_size=16, lr=1e-3, grad_clip=0.05, rank=RANK, timesteps=10, log_every=4,
                  eval_every=4, ema_update_every=1, ema_update_after_step=2, measure_flops=False, checkpoint_every=4)


def _solo(mode, seed, cfg=CFG, resume=None):
    trainer = Engine.seeded([dataclasses.replace(cfg, seed=seed)], MINING[mode], resume_paths=[resume], progress=False)
    (result,) = trainer.train()
    return trainer, result


def _pack(mode, seeds=SEEDS, cfg=CFG, resume=None, nan=None):
    """A pack of ``seeds``; ``nan`` = (member, k): member's k-th batch (0-based) holds NaN problems."""
    trainer = Engine.seeded([dataclasses.replace(cfg, seed=s) for s in seeds], MINING[mode], resume_paths=resume,
                            progress=False)
    if nan is not None:
        stream = trainer.runs[nan[0]].stream
        stream.__class__ = NaNStream
        stream.nan_at = nan[1]
    return trainer, trainer.train()


def _curve_values(curve):
    keys = ("loss", "loss_mse", "loss_energy", "energy_gap", "grad_norm", "clip_frac", "mine_accept")
    return torch.tensor([[row[k] for k in keys] for row in curve], dtype=torch.float64)


@pytest.mark.parametrize("mode", ["none", "random", "adversarial"])
def test_a_pack_equals_its_solo_runs_in_float64(mode, float64):
    pack, results = _pack(mode)
    for i, seed in enumerate(SEEDS):
        solo, solo_result = _solo(mode, seed)
        raw, ema = pack.models(i)
        solo_raw, solo_ema = solo.models(0)
        for ours, theirs in ((raw, solo_raw), (ema, solo_ema)):
            for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
                torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12, msg=f"{mode} seed {seed} {name}")
        assert [r["step"] for r in results[i].curve] == [r["step"] for r in solo_result.curve] == [4, 8]
        torch.testing.assert_close(_curve_values(results[i].curve), _curve_values(solo_result.curve),
                                   rtol=1e-9, atol=1e-12, equal_nan=True)
    # the runs differ from each other: the pack did not train one seed three times
    assert not torch.equal(pack.stack.params[0][0], pack.stack.params[0][1])


def test_a_nan_in_one_member_leaves_the_others_bitwise_unchanged():
    cfg = dataclasses.replace(CFG, steps=12)
    clean, clean_results = _pack("adversarial", cfg=cfg)
    broken, results = _pack("adversarial", cfg=cfg, nan=(1, 5))
    assert [r.status for r in results] == ["completed", "diverged", "completed"]
    assert results[1].diverged_at == 5 and results[1].steps_done == 8  # stopped at the next log boundary
    assert len(results[1].curve) == 2
    for i in (0, 2):
        for group in ("params", "ema", "exp_avg", "exp_avg_sq"):
            for a, b in zip(getattr(broken.stack, group), getattr(clean.stack, group)):
                assert torch.equal(a[i], b[i]), (group, i)
        assert _curve_values(results[i].curve).nan_to_num(7).equal(_curve_values(clean_results[i].curve).nan_to_num(7))
    # (that a frozen member's weights, moments and EMA stay untouched is shown by the next test, where
    # members wait frozen while another catches up and still end bitwise equal to an uninterrupted pack)


def test_a_diverged_member_stays_diverged_when_its_pack_or_its_run_resumes(tmp_path):
    paths = [tmp_path / f"m{s}.ckpt" for s in SEEDS]
    _, before = _pack("adversarial", cfg=dataclasses.replace(CFG, steps=12), resume=paths, nan=(1, 5))
    assert before[1].diverged_at == 5  # frozen at step 8; the step-8 checkpoint holds it frozen
    _, after = _pack("adversarial", cfg=dataclasses.replace(CFG, steps=16), resume=paths)
    assert [r.status for r in after] == ["completed", "diverged", "completed"]
    assert (after[1].diverged_at, after[1].steps_done, len(after[1].curve)) == (5, 8, 2)
    _, alone = _solo("adversarial", 1, cfg=dataclasses.replace(CFG, steps=16), resume=paths[1])
    assert (alone.status, alone.diverged_at, alone.steps_done) == ("diverged", 5, 8)


def test_members_resume_from_their_own_checkpoints_even_from_different_steps(tmp_path):
    paths = [tmp_path / f"m{s}.ckpt" for s in SEEDS]
    full, full_results = _pack("random", cfg=dataclasses.replace(CFG, steps=12))
    # an interrupted pack: 8 of 12 steps, checkpoints at step 4 (the cadence) and at the end of this attempt
    short, _ = _pack("random", cfg=CFG, resume=paths)
    short.save_checkpoints()
    # member 1's newest checkpoint is lost: it falls back to its previous one (step 4), then to none
    # (say, it joined the pack later); the others wait, frozen, until it catches up
    saved = {p: p.read_bytes() for p in tmp_path.iterdir()}
    for lost, expected in (([paths[1]], 4), ([paths[1], paths[1].with_name("m1.ckpt.prev")], None)):
        for path, blob in saved.items():
            path.write_bytes(blob)
        for path in lost:
            path.unlink()
        resumed, results = _pack("random", cfg=dataclasses.replace(CFG, steps=12), resume=paths)
        assert [r.resumed_from for r in results] == [8, expected, 8]
        for group in ("params", "ema", "exp_avg", "exp_avg_sq"):
            for a, b in zip(getattr(resumed.stack, group), getattr(full.stack, group)):
                assert torch.equal(a, b), group
        for i in range(3):
            ours, theirs = _curve_values(results[i].curve), _curve_values(full_results[i].curve)
            assert ours.nan_to_num(7).equal(theirs.nan_to_num(7))


def test_a_solo_run_resumes_from_a_pack_members_checkpoint(tmp_path, float64):
    short, _ = _pack("adversarial", seeds=(0, 1), cfg=dataclasses.replace(CFG, steps=4))
    path = tmp_path / "resume.ckpt"
    from diffusion_lib.train import checkpoint as ckpt

    ckpt.atomic_save(short.state(1), path)
    solo, result = _solo("adversarial", 1, resume=path)
    assert result.resumed_from == 4
    reference, _ = _solo("adversarial", 1)
    for p, q in zip(solo.stack.params, reference.stack.params):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)


def test_a_pack_reads_the_device_less_than_once_per_ten_steps():
    from diffusion_lib.ired.data import make_heldout
    from diffusion_lib.train.host_reads import count_host_reads

    cfg = dataclasses.replace(CFG, steps=100, log_every=50, eval_every=1000, checkpoint_every=1000, val_size=8)
    trainer = Engine.seeded([dataclasses.replace(cfg, seed=s) for s in SEEDS], MINING["adversarial"],
                            make_heldout(8, RANK, 0.5, seed=1), progress=False)
    # the closed form's guard against autograd reads twice at the first step: once a job, not the steady state
    trainer.step_once(0, [True] * len(SEEDS))
    with count_host_reads() as reads:
        results = trainer.train()
    assert [r.status for r in results] == ["completed"] * 3
    # one read per log interval for the whole pack, and the final validation of each member
    assert sum(reads.values()) / cfg.steps < 0.1, dict(reads)


def test_a_pack_refuses_members_with_different_configs():
    members = [seeded_member(s, RANK, 10, MINING["none"]) for s in (0, 1)]
    with pytest.raises(ValueError, match="only in their seed"):
        Engine([d for d, _ in members], [g for _, g in members], [CFG, dataclasses.replace(CFG, seed=1, lr=1e-2)])


# ----------------------------------------------------------------------------- the job, killed
_JOB = """
import sys
from diffusion_lib.jobs.train import train_runs
out = sys.argv[1]
runs = [{"run": f"adversarial-seed{s}", "seed": s, "model_path": f"{out}/{s}/model.pt",
         "curve_path": f"{out}/{s}/curve.csv", "status_path": f"{out}/{s}/status.json",
         "resume_path": f"{out}/{s}/resume.ckpt"} for s in (0, 1)]
train_runs(val_path=sys.argv[2], runs=runs, mining={"mode": "adversarial", "opt_steps": 2},
           train={"steps": 160, "batch_size": 16, "log_every": 10, "checkpoint_every": 20, "eval_every": 100,
                  "val_size": 16, "measure_flops": False},
           rank=3, id_eps=0.5, device="cpu", threads=1)
"""


def _job(out, val):
    import os
    import subprocess
    import sys

    for s in (0, 1):
        (out / str(s)).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", _JOB, str(out), str(val)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_pack_killed_with_sigkill_resumes_where_its_checkpoints_left_off(tmp_path):
    import json
    import signal
    import time

    import pandas as pd

    from diffusion_lib.ired.data import make_heldout, save_heldout

    val = tmp_path / "val.pt"
    save_heldout(make_heldout(32, 3, 0.5, seed=7), val)
    whole = tmp_path / "whole"
    assert _job(whole, val).wait(timeout=600) == 0
    killed = tmp_path / "killed"
    proc = _job(killed, val)
    deadline = time.time() + 300
    while not all((killed / str(s) / "resume.ckpt.prev").exists() for s in (0, 1)):  # two checkpoints each
        assert proc.poll() is None and time.time() < deadline, "the pack ended before it was killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "0" / "model.pt").exists()
    assert _job(killed, val).wait(timeout=600) == 0
    timing = ["train_seconds", "train_cpu_seconds", "steps_per_s"]
    for s in (0, 1):
        status = json.loads((killed / str(s) / "status.json").read_text())
        assert status["resumed_from"] >= 40 and status["pack"] == ["adversarial-seed0", "adversarial-seed1"]
        a = torch.load(killed / str(s) / "model.pt", weights_only=False)
        b = torch.load(whole / str(s) / "model.pt", weights_only=False)
        for key in ("model", "ema"):
            assert all(torch.equal(a[key][k], b[key][k]) for k in b[key]), (s, key)
        curves = [pd.read_csv(d / str(s) / "curve.csv").drop(columns=timing) for d in (killed, whole)]
        pd.testing.assert_frame_equal(*curves)
        assert not (killed / str(s) / "resume.ckpt").exists()


def test_two_float32_ways_of_one_trajectory_are_one_update_and_a_changed_step_is_not():
    """The GPU tests' comparison (tests/trajectories.py), on this CPU in float32: a pack's run (vmapped
    functional gradient) and the solo run (closed form) pass it, though Adam may move weights whose
    gradient is rounding noise apart; a 10% larger learning rate or another seed fails it."""
    from tests.trajectories import assert_same_update, update_difference

    cfg = TrainConfig(steps=12, batch_size=64, lr=1e-3, rank=20, log_every=12, eval_every=1000,
                      checkpoint_every=1000, measure_flops=False, aot=False)
    mining = {"mode": "adversarial", "mine_every": 2}

    def trained(seeds, **kw):
        engine = Engine.seeded([dataclasses.replace(cfg, seed=s, **kw) for s in seeds], mining, progress=False)
        start = torch.cat([p[0].flatten() for p in engine.stack.params])
        engine.train()
        return torch.cat([p[0].flatten() for p in engine.stack.params]), start

    (solo, start), (packed, _) = trained((0,)), trained((0, 1))
    assert_same_update(packed, solo, start)
    assert update_difference(trained((0,), lr=1.1e-3)[0], solo, start) > 0.05
    assert update_difference(trained((1,))[0], solo, start) > 0.05
