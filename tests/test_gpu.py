"""GPU-only checks of the step implementations (skipped without CUDA, with the reason).

CPU proofs of the same code paths: tests/test_functional.py (functional step = module step in
float64, compiled = eager, host reads per step)."""
from __future__ import annotations

import pytest
import torch

from diffusion_lib.data import ProblemStream
from diffusion_lib.step import GRAPH_WARMUP, TrainStep
from diffusion_lib.syncs import adam_step_counters, count_host_reads
from diffusion_lib.training import build_diffusion

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU: CUDA graphs and TF32 exist only there")
RANK = 20


def _train(mode, steps, *, cuda_graphs=False, compile=False):
    torch.manual_seed(0)
    d = build_diffusion(RANK, 10, {"mode": mode, "mine_every": 2}).cuda()
    lr = torch.tensor(1e-3, device="cuda") if cuda_graphs else 1e-3
    opt = torch.optim.Adam(d.parameters(), lr=lr, capturable=cuda_graphs)
    step = TrainStep(d, opt, 1.0, cuda_graphs=cuda_graphs, compile=compile)
    stream = ProblemStream(256, RANK, 0.5, 0, "cuda")
    losses = []
    with count_host_reads(exclude=adam_step_counters(opt)) as reads:
        for k in range(steps):
            loss, _ = step(*next(stream), k)
            losses.append(loss)
    return torch.stack(losses).cpu(), torch.cat([p.detach().flatten() for p in d.parameters()]).cpu(), reads


@pytest.mark.parametrize("mode", ["none", "adversarial"])
def test_cuda_graph_steps_follow_the_eager_steps(mode):
    steps = GRAPH_WARMUP + 6  # warm-up, then both graphs (mining on even steps) replayed
    eager_loss, eager_params, _ = _train(mode, steps)
    graph_loss, graph_params, reads = _train(mode, steps, cuda_graphs=True)
    torch.testing.assert_close(graph_loss, eager_loss, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(graph_params, eager_params, rtol=1e-3, atol=1e-5)
    assert sum(reads.values()) == 0, dict(reads)


def test_compiled_steps_follow_the_eager_steps_on_the_gpu():
    eager_loss, eager_params, _ = _train("adversarial", 6)
    comp_loss, comp_params, _ = _train("adversarial", 6, compile=True)
    torch.testing.assert_close(comp_loss, eager_loss, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(comp_params, eager_params, rtol=1e-3, atol=1e-5)


def test_a_pack_on_the_gpu_follows_its_solo_runs_and_never_waits():
    """The pack's CUDA paths (device noise generators, the stacked step, checkpoint RNG layout):
    CPU proofs are tests/test_pack.py (float64 pack = solo, bitwise freezing and resume)."""
    import dataclasses

    from diffusion_lib.pack import PackTrainer, init_member
    from diffusion_lib.training import TrainConfig, Trainer1D

    cfg = TrainConfig(steps=12, batch_size=256, lr=1e-3, rank=RANK, log_every=6, eval_every=1000,
                      checkpoint_every=1000, ema_update_every=1, ema_update_after_step=2, measure_flops=False)
    mining = {"mode": "adversarial", "mine_every": 2}
    members = [init_member(s, RANK, 10, mining, "cuda") for s in (0, 1)]
    pack = PackTrainer([d for d, _ in members], [g for _, g in members],
                       [dataclasses.replace(cfg, seed=s) for s in (0, 1)], device="cuda", progress=False)
    with count_host_reads() as reads:
        results = pack.train()
    assert sum(reads.values()) <= 2 * 2, dict(reads)  # one read per log interval
    for i, seed in enumerate((0, 1)):
        solo = Trainer1D(init_member(seed, RANK, 10, mining, "cuda")[0], dataclasses.replace(cfg, seed=seed),
                         device="cuda", progress=False)
        solo_result = solo.train()
        raw, _ = pack.member_models(i)
        ours = torch.cat([p.detach().flatten() for p in raw.parameters()])
        theirs = torch.cat([p.detach().flatten() for p in solo.diffusion.parameters()])
        torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-5)
        assert [r["loss"] for r in results[i].curve] == pytest.approx([r["loss"] for r in solo_result.curve],
                                                                       rel=1e-3)
        state = pack.member_state(i)
        assert torch.equal(state["rng"]["cuda"][0], members[i][1].get_state())
