import dataclasses
import math

import pytest
import torch

from diffusion_lib.train import checkpoint as ckpt
from diffusion_lib.ired.data import make_heldout
from diffusion_lib.settings.mining import MiningConfig
from diffusion_lib.train.engine import Engine
from diffusion_lib.settings.run_config import TrainConfig
from diffusion_lib.train.engine import heldout_mse

RANK = 3
CFG = TrainConfig(steps=40, batch_size=32, lr=1e-3, rank=RANK, eval_every=20, val_size=32, log_every=10,
                  checkpoint_every=10, ema_update_every=1, ema_update_after_step=0, seed=3)


def _trainer(cfg=CFG, mining=None, resume_path=None):
    return Engine.seeded([cfg], mining or {"mode": "adversarial"}, make_heldout(32, RANK, 0.5, seed=100),
                         resume_paths=[resume_path], progress=False)


def _params(trainer):
    return torch.cat([p.flatten() for p in trainer.stack.params])


def test_short_training_lowers_validation_mse():
    cfg = dataclasses.replace(CFG, steps=600, eval_every=600, checkpoint_every=600, log_every=100, lr=2e-3)
    trainer = _trainer(cfg, {"mode": "none"})
    before = heldout_mse(trainer.models(0)[0], trainer.val_set, 5)
    result = trainer.train()[0]
    after = result.curve[-1]["val_mse_raw"]
    assert result.status == "completed" and after < 0.5 * before


def test_curve_has_rows_and_validation(tmp_path):
    result = _trainer().train()[0]
    steps = [r["step"] for r in result.curve]
    assert steps == [10, 20, 30, 40]
    assert math.isnan(result.curve[0]["val_mse_ema"]) and math.isfinite(result.curve[1]["val_mse_ema"])
    assert all(math.isfinite(r["loss_energy"]) and r["loss_energy"] > 0 for r in result.curve)


def test_validation_scores_the_raw_and_the_ema_weights_each():
    # the raw and EMA weights differ after training; each logged MSE is its own model's
    trainer = _trainer(dataclasses.replace(CFG, steps=20, eval_every=20, checkpoint_every=20))
    row = trainer.train()[0].curve[-1]
    raw, ema = trainer.models(0)
    assert row["val_mse_raw"] == heldout_mse(raw, trainer.val_set, CFG.val_inner_steps)
    assert row["val_mse_ema"] == heldout_mse(ema, trainer.val_set, CFG.val_inner_steps)
    assert row["val_mse_raw"] != row["val_mse_ema"]


def test_checkpoint_resume_is_bitwise_identical(tmp_path):
    full = _trainer()
    full.train()
    path = tmp_path / "resume.ckpt"
    first = _trainer(dataclasses.replace(CFG, steps=20), resume_path=path)
    first.train()
    first.save_checkpoints()  # a run stopped at step 20 (as a kill after its step-20 checkpoint)
    second = _trainer(resume_path=path)
    result = second.train()[0]
    assert result.resumed_from == 20
    assert torch.equal(_params(second), _params(full))
    assert second.runs[0].curve[-1]["val_mse_ema"] == full.runs[0].curve[-1]["val_mse_ema"]
    assert [r["loss"] for r in second.runs[0].curve] == [r["loss"] for r in full.runs[0].curve]


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
    path = tmp_path / "resume.ckpt"
    t = _trainer(dataclasses.replace(CFG, steps=20), resume_path=path)
    t.train()
    t.save_checkpoints()       # step 20 -> becomes .prev below
    t.runs[0].step = 30
    t.save_checkpoints()       # step "30"
    path.write_bytes(path.read_bytes()[:100])  # truncate the newest
    said = []
    blob = ckpt.load_latest(path, t.runs[0].fingerprint, log=said.append)
    assert blob is not None and blob["step"] == 20
    assert len(said) == 1 and "unreadable" in said[0] and str(path) in said[0]  # says which file it skipped
    path.with_name(path.name + ".prev").write_bytes(b"garbage")
    messages = []
    assert ckpt.load_latest(path, t.runs[0].fingerprint, log=messages.append) is None
    assert any("unreadable" in m for m in messages)
    fresh = _trainer(dataclasses.replace(CFG, steps=10), resume_path=path)
    assert fresh.train()[0].resumed_from is None  # starts over instead of crashing


def test_checkpoint_of_another_configuration_is_ignored(tmp_path):
    path = tmp_path / "resume.ckpt"
    t = _trainer(dataclasses.replace(CFG, steps=10), resume_path=path)
    t.train()
    t.save_checkpoints()
    other = _trainer(dataclasses.replace(CFG, lr=5e-4), resume_path=path)
    other.try_resume()
    assert [(r.resumed_from, r.step) for r in other.runs] == [(None, 0)]


def test_divergence_is_detected_and_recorded():
    cfg = dataclasses.replace(CFG, lr=1e6, grad_clip=1e12, max_loss=50.0, steps=200)
    result = _trainer(cfg, {"mode": "random"}).train()[0]
    assert result.status == "diverged" and result.diverged_at is not None and result.diverged_at < 200
    assert result.steps_done < 200


def test_lr_schedules():
    cos = TrainConfig(steps=101, lr=1.0, lr_schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert cos.lr_at(0) == pytest.approx(0.1) and cos.lr_at(9) == pytest.approx(1.0)
    assert cos.lr_at(10) == pytest.approx(1.0) and cos.lr_at(100) == pytest.approx(0.1)
    assert cos.lr_at(55) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    wsd = TrainConfig(steps=100, lr=1.0, lr_schedule="wsd", decay_fraction=0.5, min_lr_ratio=0.0)
    assert wsd.lr_at(49) == 1.0 and wsd.lr_at(99) == pytest.approx(0.0) and wsd.lr_at(74) == pytest.approx(0.5)
    assert TrainConfig(lr=0.3).lr_at(999) == 0.3
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")


def test_fingerprint_covers_steps_only_for_decaying_schedules():
    from diffusion_lib.ired.diffusion import MiningConfig

    m = MiningConfig()
    assert TrainConfig(steps=10).fingerprint(m) == TrainConfig(steps=20).fingerprint(m)
    assert (TrainConfig(steps=10, lr_schedule="cosine").fingerprint(m)
            != TrainConfig(steps=20, lr_schedule="cosine").fingerprint(m))
    assert TrainConfig(validate_raw=False).fingerprint(m) == TrainConfig().fingerprint(m)


def test_trainer_applies_the_schedule_and_logs_diagnostics():
    cfg = dataclasses.replace(CFG, lr_schedule="cosine", warmup_steps=5, min_lr_ratio=0.0)
    trainer = _trainer(cfg)
    result = trainer.train()[0]
    last = result.curve[-1]
    assert last["lr"] == pytest.approx(cfg.lr_at(cfg.steps - 1))
    # interval means of per-step values: a share of the interval's steps, of its pairs, of its proposals
    steps, pairs = cfg.log_every, cfg.log_every * cfg.batch_size
    assert last["clip_frac"] * steps == pytest.approx(round(last["clip_frac"] * steps)) and last["grad_norm"] > 0
    assert last["saturated_frac"] * pairs == pytest.approx(round(last["saturated_frac"] * pairs), abs=1e-3)
    proposals = pairs * MiningConfig().opt_steps  # every step mines (mine_every 1), 2 opt steps per pair
    assert last["mine_accept"] * proposals == pytest.approx(round(last["mine_accept"] * proposals), abs=1e-3)
    assert 0 < last["mine_accept"] <= 1 and math.isfinite(last["energy_gap"])
    assert last["train_flops"] > 0 and result.flops_per_step > 0


@pytest.mark.parametrize("grad_clip, clipped", [(1e-6, 1.0), (math.inf, 0.0)])
def test_clip_fraction_counts_the_steps_whose_gradient_was_scaled(grad_clip, clipped):
    cfg = dataclasses.replace(CFG, steps=10, log_every=5, eval_every=10, grad_clip=grad_clip)
    curve = _trainer(cfg).train()[0].curve
    assert [row["clip_frac"] for row in curve] == [clipped, clipped]
