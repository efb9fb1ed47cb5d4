"""The engine's parts: its Adam equals torch.optim.Adam bit for bit, the device-scalar Adam a CUDA
graph replays equals it, frozen runs are put back, a solo run trains its module in place, and a
resume checkpoint in the layout the earlier trainer wrote still loads (and resumes exactly)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from diffusion_lib.train.adam import adam_, adam_captured_
from diffusion_lib.train.engine import Engine
from tests.golden import scenarios as rec  # the scenarios' settings and digests, as the recorder used them
from diffusion_lib.train.ema import ema_update_
from diffusion_lib.train.step import gradient_function, keep_frozen_
from tests.workflow_helpers import ROOT

GOLDEN = ROOT / "tests" / "golden"


def _adam_runs(dtype, steps=25):
    """(torch.optim.Adam(fused=True)'s weights, the default Adam's, adam_'s, adam_captured_'s) after
    ``steps`` updates of two stacked runs."""
    torch.manual_seed(0)
    shapes = [(2, 5, 3), (2, 4)]
    start = [torch.randn(s, dtype=dtype) for s in shapes]
    refs = [[torch.nn.Parameter(p[i].clone()) for p in start] for i in range(2)]
    defaults = [[torch.nn.Parameter(p[i].clone()) for p in start] for i in range(2)]
    opts = [torch.optim.Adam(r, lr=1e-3, betas=(0.9, 0.99), fused=True) for r in refs]
    opts += [torch.optim.Adam(r, lr=1e-3, betas=(0.9, 0.99)) for r in defaults]
    ours, cap = [p.clone() for p in start], [p.clone() for p in start]
    moments = [[torch.zeros_like(p) for p in start] for _ in range(4)]
    for k in range(1, steps + 1):
        grads = [torch.randn_like(p) for p in start]
        for i, (r, opt) in enumerate(zip(refs + defaults, opts)):
            for p, g in zip(r, grads):
                p.grad = g[i % 2].clone()
            opt.step()
        adam_(ours, moments[0], moments[1], grads, lr=1e-3, count=k, betas=(0.9, 0.99))
        adam_captured_(cap, moments[2], moments[3], grads, lr=torch.tensor(1e-3, dtype=dtype),
                       count=torch.tensor(float(k), dtype=dtype), betas=(0.9, 0.99))
    ref, default = ([torch.stack([r[j].detach() for r in runs]) for j in range(len(shapes))] for runs in (refs, defaults))
    return ref, default, ours, cap


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stacked_adam_equals_fused_torch_adam_bitwise_and_the_default_and_graph_adams_to_rounding(dtype):
    ref, default, ours, cap = _adam_runs(dtype)
    assert all(torch.equal(a, b) for a, b in zip(ref, ours))
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-14}
    for a, b, c in zip(ours, cap, default):
        torch.testing.assert_close(b, a, **tol)
        torch.testing.assert_close(c, a, **tol)
    assert not torch.equal(ours[0], _adam_runs(dtype, steps=24)[2][0])  # the comparison can fail


def test_adam_gives_the_fused_kernel_its_step_counts_on_the_weights_device(monkeypatch):
    """CUDA's fused Adam refuses step counts in host memory (first contact with a GPU, issue 33): off
    the CPU they must sit on the weights' device. Checked by the kernel's device rule on the meta device."""
    seen = []

    def kernel(params, grads, exp_avg, exp_avg_sq, max_sq, steps, **kw):
        seen.append({t.device.type for group in (params, grads, exp_avg, exp_avg_sq, steps) for t in group})

    monkeypatch.setattr(torch, "_fused_adam_", kernel)
    for device in ("cpu", "meta"):
        w = [torch.zeros(3, device=device)]
        adam_(w, [torch.zeros_like(w[0])], [torch.zeros_like(w[0])], [torch.ones_like(w[0])], lr=1e-3, count=4,
              betas=(0.9, 0.99))
    assert seen == [{"cpu"}, {"meta"}]


def test_frozen_runs_are_put_back_and_active_ones_kept():
    t, before = [torch.ones(3, 2)], [torch.zeros(3, 2)]
    keep_frozen_(t, before, torch.tensor([True, False, True]))
    assert t[0].tolist() == [[1, 1], [0, 0], [1, 1]]


def test_a_solo_run_trains_its_module_in_place():
    engine = Engine.seeded([dataclasses.replace(rec.CFG, steps=2)], rec.MINING["random"], progress=False)
    assert engine.update.single and engine.update.mode == "eager"
    for p, stacked in zip(engine.template.model.ebm.parameters(), engine.stack.params):
        assert p.data_ptr() == stacked.data_ptr()
    before = [p.detach().clone() for p in engine.template.parameters()]
    engine.train()
    assert all(not torch.equal(a, p) for a, p in zip(before, engine.template.parameters()))


@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_what_a_cuda_graph_captures_is_the_eager_update(seeds, float64):
    """A CUDA graph replays ``ParameterUpdate.captured`` (the mode's gradient, device-scalar Adam, frozen runs
    put back) and the EMA after it: run eagerly here on the update a graph would capture (the closed form,
    vmapped over a pack), it equals the eager update in float64."""
    cfg = dataclasses.replace(rec.CFG, steps=6, ema_update_every=1, ema_update_after_step=0)
    mining = {"mode": "adversarial", "mine_every": 2}  # both kinds of step
    eager, graphed = (Engine.seeded([dataclasses.replace(cfg, seed=s) for s in seeds], mining, progress=False)
                      for _ in range(2))
    update = graphed.update
    assert gradient_function(update.template, 1.0, "cuda_graphs", len(seeds)).__qualname__ == (
        gradient_function(update.template, 1.0, "eager", len(seeds)).__qualname__)
    for n in (1, 2):  # a graph holds the closed form (checked against autograd first), of one run or mapped over a pack
        assert gradient_function(update.template, 1.0, "cuda_graphs", n).__qualname__ == "checked.<locals>.first_checked"
    update.template.closed_form = False  # and where it does not apply, the functional gradient
    assert gradient_function(update.template, 1.0, "cuda_graphs", 2).__qualname__ == "_packed.<locals>.pack"
    update.template.closed_form = True
    active = [True] * len(seeds)
    for step in range(cfg.steps):
        eager.step_once(step, active)
        update.lr, update.count = torch.tensor(cfg.lr_at(step)), torch.tensor(float(step + 1))
        update.captured(graphed.draw(active), update.template.mining.mines_at(step), torch.ones(len(seeds), dtype=bool))
        ema_update_(update.stack.ema, update.stack.params, update.ema, step)
    for ours, theirs in zip(graphed.stack.trained, eager.stack.trained):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    assert not all(torch.equal(a, b) for a, b in zip(eager.stack.params, Engine.seeded(
        [dataclasses.replace(cfg, seed=s) for s in seeds], mining, progress=False).stack.params))  # it trained


def _fill(layout, new, path=()):
    """The earlier trainer's checkpoint ``layout`` with its tensors taken from ``new`` (the same key
    path, in the recorded dtype) or zeros where ``new`` has none; its other values kept as recorded."""
    if isinstance(layout, tuple) and layout and layout[0] == "tensor":
        source = new
        for key in path:
            source = source.get(key) if isinstance(source, dict) else None
        dtype = getattr(torch, layout[2].removeprefix("torch."))
        return source.to(dtype) if isinstance(source, torch.Tensor) else torch.zeros(layout[1], dtype=dtype)
    if isinstance(layout, dict):
        return {k: _fill(v, new, (*path, k)) for k, v in layout.items()}
    return layout


def test_a_checkpoint_in_the_earlier_trainers_layout_resumes_exactly(tmp_path, float64):
    """Trainer1D's step-8 checkpoint layout (recorded at bf81f49: its fingerprint, its Adam state,
    its EMA with the diffusion's buffers, its RNG), filled with the state the engine reaches at step
    8: the engine resumes from it and ends where the golden 'solo-resume' run ended."""
    cfg = dataclasses.replace(rec.CFG, seed=1)
    first = Engine.seeded([cfg], rec.MINING["adversarial"], resume_paths=[tmp_path / "new.ckpt"], progress=False)
    first.train()
    new = torch.load(tmp_path / "new.ckpt", weights_only=False)
    layout = torch.load(GOLDEN / "trainer1d-step8-layout.pt", weights_only=False)
    assert new["step"] == layout["step"] == 8
    torch.save(_fill(layout, new), tmp_path / "old.ckpt")
    engine = Engine.seeded([cfg], rec.MINING["adversarial"], resume_paths=[tmp_path / "old.ckpt"], progress=False)
    (result,) = engine.train()
    assert result.resumed_from == 8
    golden = torch.load(GOLDEN / "engine_float64.pt", weights_only=False)["solo-resume"]
    raw, ema = engine.models(0)
    torch.testing.assert_close(rec.digest(raw), golden["raw"][0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(rec.digest(ema), golden["ema"][0], rtol=1e-9, atol=1e-12)
