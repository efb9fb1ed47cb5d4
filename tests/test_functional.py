"""The functional training step (torch.func) equals the module path, compiles, and the training
loop reads the device less than once per ten steps."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from diffusion_lib import functional as fn
from diffusion_lib.data import make_heldout, inverse_problems
from diffusion_lib.step import TrainStep
from diffusion_lib.syncs import adam_step_counters, count_host_reads
from diffusion_lib.step import optimization_step
from diffusion_lib.training import TrainConfig, Trainer1D, build_diffusion

RANK = 3


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def _problems(n=16, dtype=torch.float64):
    A, Y = inverse_problems(n, RANK, 0.5, torch.Generator().manual_seed(1))
    return A.to(dtype), Y.to(dtype)


def test_functional_energy_gradient_equals_the_wrapper_and_passes_gradgradcheck(float64):
    torch.manual_seed(0)
    d = build_diffusion(RANK, 10, {"mode": "none"})
    A, Y = _problems()
    t = torch.randint(0, 10, (A.shape[0],))
    params = dict(d.model.ebm.named_parameters())
    ours = fn.energy_grad(d.model.ebm, params, A, Y, t)
    theirs = d.model(A, Y, t)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    e, g = fn.energy_and_grad(d.model.ebm, params, A, Y, t)
    torch.testing.assert_close(e, d.model(A, Y, t, return_energy=True), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, theirs, rtol=1e-12, atol=1e-12)
    y = Y[:2].clone().requires_grad_(True)
    b = params["out.bias"].detach().clone().requires_grad_(True)
    small = lambda y_, b_: fn.energy_grad(d.model.ebm, {**params, "out.bias": b_}, A[:2], y_, t[:2])
    assert torch.autograd.gradcheck(small, (y, b), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(small, (y, b), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("mode", ["none", "random", "adversarial"])
def test_functional_step_equals_the_module_step_over_several_steps(mode, float64):
    mining = {"mode": mode, "opt_steps": 2, "mine_every": 2}
    runs = []
    for functional in (False, True):
        torch.manual_seed(0)
        d = build_diffusion(RANK, 10, mining)
        opt = torch.optim.Adam(d.parameters(), lr=1e-3)
        step = TrainStep(d, opt, grad_clip=0.05, functional=functional)
        assert step.mode == ("functional" if functional else "eager")
        A, Y = _problems()
        parts_seen = []
        for k in range(4):
            _, parts = step(A, Y, k)
            parts_seen.append({key: v.item() for key, v in parts.items()})
        runs.append((torch.cat([p.detach().flatten() for p in d.parameters()]), parts_seen))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=1e-9, atol=1e-12)
    for a, b in zip(runs[0][1], runs[1][1]):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key


def test_compiled_step_equals_eager_in_float64(float64):
    torch.manual_seed(0)
    d = build_diffusion(RANK, 10, {"mode": "adversarial", "opt_steps": 2})
    step_fn = fn.make_step_fn(d, 1.0)
    compiled = torch.compile(step_fn, fullgraph=True, dynamic=False)
    A, Y = _problems()
    params = dict(d.model.ebm.named_parameters())
    noise = fn.draw_noise(d, Y)
    for mined in (True, False):
        g_eager, p_eager = step_fn(params, A, Y, *noise, mined)
        g_comp, p_comp = compiled(params, A, Y, *noise, mined)
        for a, b in zip(g_eager, g_comp):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
        for key in p_eager:
            torch.testing.assert_close(p_eager[key], p_comp[key], rtol=1e-10, atol=1e-13)


def test_a_failing_compile_falls_back_to_eager_with_one_log_line(caplog, monkeypatch):
    def broken(*args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no compiler here")
        return fail
    monkeypatch.setattr(torch, "compile", broken)
    torch.manual_seed(0)
    d = build_diffusion(RANK, 10, {"mode": "random"})
    step = TrainStep(d, torch.optim.Adam(d.parameters(), lr=1e-3), 1.0, compile=True)
    A, Y = inverse_problems(8, RANK, 0.5, torch.Generator().manual_seed(0))
    with caplog.at_level("WARNING"):
        for k in range(3):
            loss, _ = step(A, Y, k)
    assert torch.isfinite(loss)
    assert sum("torch.compile of the training step failed" in r.message for r in caplog.records) == 1


def test_cuda_graphs_need_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: tests/test_gpu.py replays the graphs there")
    d = build_diffusion(RANK, 10, {"mode": "none"})
    with pytest.raises(ValueError, match="CUDA"):
        TrainStep(d, torch.optim.Adam(d.parameters()), 1.0, cuda_graphs=True)


@pytest.mark.parametrize("compile", [False, True])
def test_training_reads_the_device_less_than_once_per_ten_steps(compile):
    cfg = TrainConfig(steps=100, batch_size=8, lr=1e-3, rank=RANK, eval_every=1000, val_size=8, log_every=50,
                      checkpoint_every=1000, ema_update_every=1, ema_update_after_step=5, measure_flops=False,
                      compile=compile)
    torch.manual_seed(0)
    trainer = Trainer1D(build_diffusion(RANK, 10, {"mode": "adversarial"}), cfg, make_heldout(8, RANK, 0.5, seed=1),
                        progress=False)
    if compile:  # compiling reads constants once (inductor's constant folding): not the steady state
        trainer.train_step(*next(trainer.stream), 0)
    with count_host_reads(exclude=adam_step_counters(trainer.optimizer)) as reads:
        result = trainer.train()
    assert result.status == "completed"
    assert sum(reads.values()) / cfg.steps < 0.1, dict(reads)


def test_compiled_training_matches_eager_training():
    results = []
    for compile in (False, True):
        cfg = TrainConfig(steps=30, batch_size=8, lr=1e-3, rank=RANK, eval_every=15, val_size=8, log_every=15,
                          checkpoint_every=1000, ema_update_every=1, ema_update_after_step=5, measure_flops=False,
                          compile=compile)
        torch.manual_seed(0)
        trainer = Trainer1D(build_diffusion(RANK, 10, {"mode": "adversarial"}), cfg,
                            make_heldout(8, RANK, 0.5, seed=1), progress=False)
        results.append(trainer.train().curve)
    for a, b in zip(*results):
        for key in ("loss", "loss_mse", "val_mse_ema"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key


@pytest.mark.parametrize("functional", [False, True])
def test_an_infinite_grad_clip_never_clips(functional, float64):
    """``grad_clip: .inf`` (issue 19): the update uses the raw gradient and ``clip_frac`` is 0; the same
    step with a small threshold does clip (so the comparison can fail)."""
    mining = {"mode": "adversarial", "opt_steps": 2}
    A, Y = _problems()

    def raw_gradient():
        torch.manual_seed(0)
        d = build_diffusion(RANK, 10, mining)
        loss, _ = d(A, Y, step=0)
        loss.backward()
        return [p.grad.clone() for p in d.parameters()]

    def step_gradient(grad_clip):
        torch.manual_seed(0)
        d = build_diffusion(RANK, 10, mining)
        before = [p.detach().clone() for p in d.parameters()]
        step = TrainStep(d, torch.optim.SGD(d.parameters(), lr=1.0), grad_clip, functional=functional)
        _, parts = step(A, Y, 0)
        return [b - p.detach() for b, p in zip(before, d.parameters())], parts  # SGD, lr 1: the update is the gradient

    raw = raw_gradient()
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in raw])).item()
    unclipped, parts = step_gradient(math.inf)
    assert parts["clip_frac"].item() == 0.0 and parts["grad_norm"].item() == pytest.approx(norm, rel=1e-12)
    for a, b in zip(unclipped, raw):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    clipped, parts = step_gradient(norm / 4)
    assert parts["clip_frac"].item() == 1.0
    for a, b in zip(clipped, raw):  # clip_grad_norm_'s scale: max_norm / (norm + 1e-6)
        torch.testing.assert_close(a, b * (norm / 4) / (norm + 1e-6), rtol=1e-12, atol=1e-15)
