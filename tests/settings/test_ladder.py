"""The budget ladder's training half: the warmup-stable-decay schedule, rung planning, and a branch
from a saved trunk state that equals the run trained with that schedule from scratch (float64)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from diffusion_lib.settings.ladder import compute_matched_steps, ladder_steps, on_grid, rungs_of, snap
from diffusion_lib.settings.lr_schedule import decay_start, lr_at
from diffusion_lib.train.engine import Engine
from diffusion_lib.settings.run_config import TrainConfig

RANK = 3
MINING = {"none": {"mode": "none"}, "random": {"mode": "random"},
          "adversarial": {"mode": "adversarial", "opt_steps": 2, "mine_every": 2}}
# 12 steps: warm-up 2, constant to step 8, linear decay over steps 8-11; clipping active (0.05); the
# EMA's copy phase (to step 2) and lerp phase; log every 2, validation-free (no val set)
CFG = TrainConfig(steps=12, batch_size=8, lr=1e-3, grad_clip=0.05, rank=RANK, timesteps=10, log_every=2,
                  eval_every=4, ema_update_every=1, ema_update_after_step=2, measure_flops=False, checkpoint_every=4,
                  lr_schedule="wsd", warmup_steps=2, min_lr_ratio=0.1, decay_fraction=1 / 3)


def test_wsd_is_warmup_then_constant_then_a_linear_decay_to_the_floor():
    lrs = [lr_at("wsd", s, steps=10, lr=1.0, warmup_steps=2, floor=0.1, decay_fraction=0.4) for s in range(10)]
    assert decay_start(10, 0.4) == 6
    assert lrs[:2] == [0.5, 1.0] and lrs[2:6] == [1.0] * 4
    assert lrs[6:] == pytest.approx([1 - 0.9 * k / 4 for k in (1, 2, 3, 4)])
    assert lrs[-1] == pytest.approx(0.1)
    # the trunk of every budget is the same constant schedule: a longer run agrees up to its decay
    longer = [lr_at("wsd", s, steps=20, lr=1.0, warmup_steps=2, floor=0.1, decay_fraction=0.4) for s in range(12)]
    assert longer[:6] == lrs[:6] and longer[6:12] == [1.0] * 6


def test_rungs_are_snapped_so_that_every_branch_point_is_a_log_boundary():
    # the pilot's grid: 2,900 steps, log every 29, f = 0.2
    assert ladder_steps(2900, [0.25, 0.5, 1.0], 0.2, 29) == [725, 1450, 2900]
    assert [r.branch_point for r in rungs_of([725, 1450, 2900], 0.2)] == [580, 1160, 2320]
    assert all(on_grid(b, 0.2, 29) for b in (725, 1450, 2900))
    assert not on_grid(2900, 0.2, 58 * 3)
    b = snap(1015.3, 0.2, 29)
    assert on_grid(b, 0.2, 29) and abs(b - 1015.3) <= 29
    # the constant schedule (f = 0) branches at the budget itself
    assert ladder_steps(100_000, [0.25, 0.5, 1], 0.0, 100) == [25_000, 50_000, 100_000]
    # compute-matched: a strategy 3x as expensive per step gets a third of the steps, never more than all
    assert compute_matched_steps(2900, 1.0, 3.0, 0.2, 29) == snap(2900 / 3, 0.2, 29)
    assert compute_matched_steps(2900, 3.0, 1.0, 0.2, 29) == 2900


def _trainer(mode, cfg, seed=0, resume=None):
    return Engine.seeded([dataclasses.replace(cfg, seed=seed)], MINING[mode], resume_paths=[resume], progress=False)


def _assert_same(a: Engine, b: Engine, what: str, i: int = 0):
    for group in ("params", "ema"):
        for name, p, q in zip(a.names, getattr(a.stack, group), getattr(b.stack, group)):
            torch.testing.assert_close(p[i], q[0], rtol=1e-9, atol=1e-12, msg=f"{what}: {group} {name}")
    keys = ("loss", "loss_mse", "loss_energy", "grad_norm", "clip_frac", "lr")
    assert [r["step"] for r in a.runs[i].curve] == [r["step"] for r in b.runs[0].curve]
    for ra, rb in zip(a.runs[i].curve, b.runs[0].curve):
        for k in keys:
            assert ra.get(k) == pytest.approx(rb.get(k), rel=1e-9, abs=1e-12, nan_ok=True), (what, ra["step"], k)


@pytest.mark.parametrize("mode", ["none", "random", "adversarial"])
def test_a_branch_from_a_chained_trunk_equals_the_run_from_scratch_in_float64(mode, float64):
    scratch = _trainer(mode, CFG)
    (result,) = scratch.train()
    assert result.status == "completed" and result.curve[-1]["clip_frac"] > 0  # clipping was active
    # the trunk in two pieces (to step 4, then on to the branch point 8), each from the saved state
    piece = _trainer(mode, CFG.trunk(4))
    piece.train()
    state = piece.state(0)
    trunk = _trainer(mode, CFG.trunk(8))
    trunk.load_state(0, state)
    trunk.train()
    assert trunk.runs[0].step == decay_start(12, 1 / 3) == 8
    state = trunk.state(0)
    branch = _trainer(mode, CFG)
    branch.load_state(0, state)
    branch.train()
    _assert_same(branch, scratch, f"{mode} branch vs scratch")


def test_a_killed_branch_resumes_from_its_own_checkpoint_not_the_trunk(tmp_path, float64):
    scratch = _trainer("random", CFG)
    scratch.train()
    trunk = _trainer("random", CFG.trunk(8))
    trunk.train()
    state = trunk.state(0)
    # a branch that checkpointed at step 10 (its last checkpoint before the end) and died: the rerun
    # loads the trunk state, then its own later checkpoint
    first = _trainer("random", dataclasses.replace(CFG, checkpoint_every=2), resume=tmp_path / "r.ckpt")
    first.load_state(0, state)
    first.train()
    again = _trainer("random", CFG, resume=tmp_path / "r.ckpt")
    again.load_state(0, state)
    again.train()
    assert [r.resumed_from for r in again.runs] == [10]
    _assert_same(again, scratch, "resumed branch vs scratch")


def test_a_stale_checkpoint_before_the_trunk_state_is_ignored(tmp_path, float64):
    early = _trainer("none", CFG.trunk(4), resume=tmp_path / "r.ckpt")
    early.train()
    early.save_checkpoints()  # step 4: older than the trunk state the branch starts from
    trunk = _trainer("none", CFG.trunk(8))
    trunk.train()
    state = trunk.state(0)
    branch = _trainer("none", CFG, resume=tmp_path / "r.ckpt")
    branch.load_state(0, state)
    branch.train()
    assert [r.resumed_from for r in branch.runs] == [None]
    scratch = _trainer("none", CFG)
    scratch.train()
    _assert_same(branch, scratch, "branch with a stale checkpoint vs scratch")


def test_a_pack_branches_from_its_members_trunk_states_like_solo_runs(float64):
    seeds = (0, 1)
    trunks = []
    for s in seeds:
        t = _trainer("adversarial", CFG.trunk(8), seed=s)
        t.train()
        trunks.append(t.state(0))
    pack = Engine.seeded([dataclasses.replace(CFG, seed=s) for s in seeds], MINING["adversarial"], progress=False)
    for i, state in enumerate(trunks):
        pack.load_state(i, state)
    pack.train()
    for i, s in enumerate(seeds):
        scratch = _trainer("adversarial", CFG, seed=s)
        scratch.train()
        _assert_same(pack, scratch, f"seed {s}", i)
