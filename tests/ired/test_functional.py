"""The gradient computed by torch.func (compiled steps, another network) and the closed form (one run,
or mapped over a pack) equal autograd on the module, the engine compiles (a solo run and a pack), a
failing compiler falls back once, and training reads the device less than once per ten steps."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from diffusion_lib.ired import functional as fn
from diffusion_lib.ired.data import make_heldout, inverse_problems
from diffusion_lib.ired.diffusion import build_diffusion
from diffusion_lib.train.engine import Engine
from diffusion_lib.ired.gradients import clip_by_total_norm, closed_form_gradients, func_gradients
from diffusion_lib.settings.run_config import TrainConfig
from diffusion_lib.train.host_reads import count_host_reads

RANK = 3
#: each kind of training step
MODES_MINED = [("none", False), ("random", False), ("adversarial", False), ("adversarial", True)]


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


def _gradients(kind, mining, grad_clip, A, Y, mined=True):
    """One gradient function's (grads, parts) at a fresh model (seed 0) with the draws it would make."""
    torch.manual_seed(0)
    d = build_diffusion(RANK, 10, mining)
    t, xi, *neg = fn.draw_noise(d, Y)
    draws = (A, Y, t, xi, neg[0] if neg else None, mined)
    if kind == "module":  # autograd on the module itself: the reference
        total, parts = d.module_loss(*draws)
        grads, norm = clip_by_total_norm(torch.autograd.grad(total, list(d.model.ebm.parameters())), grad_clip)
        return grads, {**parts, "grad_norm": norm, "clip_frac": (norm > grad_clip).to(norm.dtype)}
    make = closed_form_gradients if kind == "closed" else func_gradients
    return make(d, grad_clip)(dict(d.model.ebm.named_parameters()), *draws)


@pytest.mark.parametrize("max_norm", [1e-3, 1e6])
def test_clipping_in_place_gives_the_same_numbers_as_clip_grad_norm(max_norm):
    """float32 on a CPU, bit for bit: the in-place ``_foreach`` clipping, the list one and PyTorch's."""
    torch.manual_seed(0)
    grads = [torch.randn(shape) for shape in ((64, 80), (64,), (33, 7), (5,))]
    reference = [g.clone().requires_grad_() for g in grads]
    for r, g in zip(reference, grads):
        r.grad = g.clone()
    torch_norm = torch.nn.utils.clip_grad_norm_(reference, max_norm, foreach=False)
    copies, norm = clip_by_total_norm(grads, max_norm)
    same, norm_in_place = clip_by_total_norm(grads, max_norm, in_place=True)
    assert all(a is b for a, b in zip(same, grads))
    assert torch.equal(norm, torch_norm) and torch.equal(norm_in_place, torch_norm)
    for r, c, g in zip(reference, copies, grads):
        assert torch.equal(c, r.grad) and torch.equal(g, r.grad)


@pytest.mark.parametrize("mode, mined", MODES_MINED)
@pytest.mark.parametrize("kind", ["func", "closed"])
def test_the_functional_and_closed_form_gradients_equal_autograd_on_the_module(kind, mode, mined, float64):
    mining = {"mode": mode, "opt_steps": 2}
    A, Y = _problems()
    (g_mod, p_mod), (g_fun, p_fun) = (_gradients(k, mining, 1e-4, A, Y, mined) for k in ("module", kind))
    for a, b in zip(g_mod, g_fun, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert p_mod.keys() == p_fun.keys() and p_mod["clip_frac"].item() == 1.0
    assert ("mine_accepted" in p_mod) == mined and ("energy_gap" in p_mod) == (mode != "none")
    for key in p_mod:
        torch.testing.assert_close(p_mod[key], p_fun[key], rtol=1e-9, atol=1e-12, msg=key)


@pytest.mark.parametrize("mode, mined", MODES_MINED)
def test_the_closed_form_written_for_packs_gives_one_run_the_same_numbers_bit_for_bit(mode, mined):
    """float32: the pack form (the loss's adjoints by torch.func, clipping out of place) and one run's
    form (autograd, clipping in place) of the closed-form step, on one run, are the same numbers."""
    A, Y = _problems(dtype=torch.float32)
    torch.manual_seed(0)
    d = build_diffusion(RANK, 10, {"mode": mode, "opt_steps": 2})
    draws = (A, Y, *fn.draw_noise(d, Y))
    draws = (*draws, None) if len(draws) == 4 else draws
    params = dict(d.model.ebm.named_parameters())
    (g_one, p_one), (g_pack, p_pack) = (closed_form_gradients(d, 1e-4, pack=pack)(params, *draws, mined)
                                        for pack in (False, True))
    assert p_one["clip_frac"].item() == 1.0  # the clipping ran
    assert all(torch.equal(a, b) for a, b in zip(g_one, g_pack, strict=True))
    assert p_one.keys() == p_pack.keys() and all(torch.equal(p_one[k], p_pack[k]) for k in p_one)


@pytest.mark.parametrize("mode, mined", MODES_MINED)
def test_the_closed_form_mapped_over_a_pack_equals_each_runs_own_step(mode, mined, float64):
    """float64: torch.func.vmap of the closed-form step over three runs' stacked weights and draws (the
    batched matrix products a pack trains with) equals each run's own closed-form step."""
    from diffusion_lib.ired.closed_form import NAMES
    from diffusion_lib.train.step import _packed  # how the engine maps a gradient function over a pack

    runs = []
    for seed in range(3):
        torch.manual_seed(seed)
        runs.append(build_diffusion(RANK, 10, {"mode": mode, "opt_steps": 2}))
    per_run = []
    for i, d in enumerate(runs):
        A, Y = inverse_problems(16, RANK, 0.5, torch.Generator().manual_seed(10 + i))
        per_run.append((A.double(), Y.double(), *fn.draw_noise(d, Y.double())))
    draws = [torch.stack(parts) for parts in zip(*per_run)]
    stacked = {name: torch.stack([dict(d.model.ebm.named_parameters())[name].detach() for d in runs]) for name in NAMES}
    packed = closed_form_gradients(runs[0], 0.3, pack=True)
    neg = (None,) if mode == "none" else ()
    grads, parts = _packed(packed, len(runs))(stacked, *draws, *neg, mined)
    for i, d in enumerate(runs):
        own, own_parts = closed_form_gradients(d, 0.3)(dict(d.model.ebm.named_parameters()), *per_run[i], *neg, mined)
        for name, a, b in zip(NAMES, grads, own, strict=True):
            torch.testing.assert_close(a[i], b, rtol=1e-10, atol=1e-13, msg=f"run {i} {name}")
        for key in own_parts:
            torch.testing.assert_close(parts[key][i], own_parts[key], rtol=1e-10, atol=1e-13, msg=f"run {i} {key}")
    assert not torch.equal(grads[0][0], grads[0][1])  # the runs differ: nothing was broadcast


def test_the_compiled_gradient_equals_eager_in_float64(float64):
    torch.manual_seed(0)
    d = build_diffusion(RANK, 10, {"mode": "adversarial", "opt_steps": 2})
    step_fn = func_gradients(d, 1.0)
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


def _cfg(**kw):
    return TrainConfig(**{"steps": 30, "batch_size": 8, "lr": 1e-3, "rank": RANK, "eval_every": 15, "val_size": 8,
                          "log_every": 15, "checkpoint_every": 1000, "ema_update_every": 1, "ema_update_after_step": 5,
                          "measure_flops": False, **kw})


def _engine(seeds=(0,), **kw):
    return Engine.seeded([_cfg(seed=s, **kw) for s in seeds], {"mode": "adversarial", "opt_steps": 2},
                         make_heldout(8, RANK, 0.5, seed=1), progress=False)


def test_a_failing_compile_falls_back_to_eager_with_one_log_line(caplog, monkeypatch):
    def broken(*args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no compiler here")
        return fail
    monkeypatch.setattr(torch, "compile", broken)
    engine = _engine(compile=True, steps=3)
    with caplog.at_level("WARNING"):
        (result,) = engine.train()
    assert result.status == "completed" and engine.update.compile_failed
    assert sum("torch.compile of the training step failed" in r.message for r in caplog.records) == 1


def test_cuda_graphs_need_a_gpu(caplog):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: tests/train/test_gpu.py replays the graphs there")
    with caplog.at_level("WARNING"):
        engine = _engine(cuda_graphs=True)
    assert engine.update.mode == "eager" and "needs a CUDA device" in caplog.text
    from diffusion_lib.train.step import ParameterUpdate

    with pytest.raises(ValueError, match="CUDA"):
        ParameterUpdate(engine.template, engine.stack, grad_clip=1.0, betas=(0.9, 0.99), ema=engine.update.ema,
               lr_at=engine.config.lr_at, mode="cuda_graphs")


def test_cuda_graphs_are_the_default_step_on_cuda_only(caplog, monkeypatch):
    """``train.cuda_graphs: auto`` (issue 33: the fastest GPU step measured): graphs on a CUDA device
    unless ``train.compile`` asks for torch.compile; silently without them elsewhere; ``true`` says so."""
    from diffusion_lib.train.step_mode import step_mode

    monkeypatch.setenv("IRED_AOT", "off")
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    with caplog.at_level("WARNING"):
        assert step_mode(TrainConfig(), gpu) == "cuda_graphs"
        assert step_mode(TrainConfig(compile=True), gpu) == "compile"
        assert step_mode(TrainConfig(compile=True, cuda_graphs=True), gpu) == "cuda_graphs"
        assert step_mode(TrainConfig(cuda_graphs=False), gpu) == "eager"
        assert step_mode(TrainConfig(), cpu) == "eager" and not caplog.text
        assert step_mode(TrainConfig(cuda_graphs=True), cpu) == "eager"
    assert caplog.text.count("needs a CUDA device") == 1


@pytest.mark.parametrize("seeds, compile", [((0,), False), ((0,), True), ((0, 1), False), ((0, 1), True)])
def test_training_reads_the_device_less_than_once_per_ten_steps(seeds, compile):
    engine = _engine(seeds, compile=compile, steps=100, eval_every=1000, log_every=50)
    # compiling reads constants once (inductor's constant folding), and the closed form's guard against
    # autograd reads at the first step (three times for a pack): once a job, not the steady state
    engine.step_once(0, [True] * len(seeds))
    with count_host_reads() as reads:
        results = engine.train()
    assert [r.status for r in results] == ["completed"] * len(seeds)
    assert sum(reads.values()) / 100 < 0.1, dict(reads)


@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_compiled_training_matches_eager_training(seeds):
    """Compile is a wrapper of the one step: a solo run and a pack (vmapped, then compiled) alike."""
    eager, compiled = _engine(seeds), _engine(seeds, compile=True)
    curves = [[r.curve for r in e.train()] for e in (eager, compiled)]
    assert compiled.update.mode == "compile" and not compiled.update.compile_failed
    for a_run, b_run in zip(*curves):
        for a, b in zip(a_run, b_run, strict=True):
            for key in ("loss", "loss_mse", "val_mse_ema"):
                assert a[key] == pytest.approx(b[key], rel=1e-4), key


@pytest.mark.parametrize("kind", ["module", "func"])
def test_an_infinite_grad_clip_never_clips(kind, float64):
    """``grad_clip: .inf`` (issue 19): the update uses the raw gradient and ``clip_frac`` is 0; the same
    step with a small threshold does clip (so the comparison can fail)."""
    mining = {"mode": "adversarial", "opt_steps": 2}
    A, Y = _problems()
    torch.manual_seed(0)
    d = build_diffusion(RANK, 10, mining)
    loss, _ = d(A, Y, step=0)  # the same draws as _gradients makes
    raw = torch.autograd.grad(loss, list(d.parameters()))
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in raw])).item()
    unclipped, parts = _gradients(kind, mining, math.inf, A, Y)
    assert parts["clip_frac"].item() == 0.0 and parts["grad_norm"].item() == pytest.approx(norm, rel=1e-12)
    for a, b in zip(unclipped, raw):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    clipped, parts = _gradients(kind, mining, norm / 4, A, Y)
    assert parts["clip_frac"].item() == 1.0
    for a, b in zip(clipped, raw):  # clip_grad_norm_'s scale: max_norm / (norm + 1e-6)
        torch.testing.assert_close(a, b * (norm / 4) / (norm + 1e-6), rtol=1e-12, atol=1e-15)
