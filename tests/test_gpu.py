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
