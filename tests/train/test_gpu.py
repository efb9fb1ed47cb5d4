"""GPU-only checks of the engine's step modes (skipped without CUDA, with the reason).

CPU proofs of the same code paths: tests/ired/test_functional.py (functional gradient = module
gradient in float64, compiled = eager for a run and a pack, host reads per step),
tests/train/test_engine.py (the device-scalar Adam a graph replays), tests/train/test_pack.py (pack = solo)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from diffusion_lib.train.engine import Engine
from diffusion_lib.settings.run_config import TrainConfig
from diffusion_lib.train.step import GRAPH_WARMUP
from diffusion_lib.train.host_reads import count_host_reads
from tests.trajectories import assert_same_update

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU: CUDA graphs and TF32 exist only there")
RANK = 20
CFG = TrainConfig(steps=GRAPH_WARMUP + 9, batch_size=256, lr=1e-3, rank=RANK, log_every=GRAPH_WARMUP + 9,
                  eval_every=1000, checkpoint_every=1000, ema_update_every=1, ema_update_after_step=2,
                  measure_flops=False, cuda_graphs=False)  # the eager step; the tests ask for graphs


def _flat(engine, i):
    """Run ``i``'s weights, flattened, on the CPU."""
    return torch.cat([p[i].flatten() for p in engine.stack.params]).cpu()


def _train(mode, seeds=(0,), **kw):
    """(per-step losses of each run, each run's weights, host reads, engine, initial weights) on the GPU."""
    engine = Engine.seeded([dataclasses.replace(CFG, seed=s, **kw) for s in seeds], {"mode": mode, "mine_every": 2},
                           device="cuda", progress=False)
    start = [_flat(engine, i) for i in range(len(seeds))]
    losses, active = [], [True] * len(seeds)
    with count_host_reads() as reads:
        for k in range(CFG.steps):  # mining on even steps: both graphs are captured and replayed
            losses.append(engine.step_once(k, active)["loss"])
    weights = [_flat(engine, i) for i in range(len(seeds))]
    return torch.stack(losses).cpu(), weights, reads, engine, start


@pytest.mark.parametrize("mode", ["none", "adversarial"])
@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_cuda_graph_steps_follow_the_eager_steps(mode, seeds):
    eager_loss, eager_weights, _, _, start = _train(mode, seeds)
    graph_loss, graph_weights, reads, engine, _ = _train(mode, seeds, cuda_graphs=True)
    # one graph per kind of step: mining and ordinary steps alternate in adversarial mode, none never mines
    assert engine.update.mode == "cuda_graphs" and len(engine.update._graphs) == (2 if mode == "adversarial" else 1)
    torch.testing.assert_close(graph_loss, eager_loss, rtol=1e-4, atol=1e-6)
    for ours, theirs, w0 in zip(graph_weights, eager_weights, start):
        assert_same_update(ours, theirs, w0)
    assert sum(reads.values()) == 0, dict(reads)


@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_compiled_steps_follow_the_eager_steps_on_the_gpu(seeds):
    eager_loss, eager_weights, _, _, start = _train("adversarial", seeds)
    comp_loss, comp_weights, _, engine, _ = _train("adversarial", seeds, compile=True)
    assert not engine.update.compile_failed
    torch.testing.assert_close(comp_loss, eager_loss, rtol=1e-4, atol=1e-6)
    for ours, theirs, w0 in zip(comp_weights, eager_weights, start):
        assert_same_update(ours, theirs, w0)


def test_a_pack_on_the_gpu_follows_its_solo_runs_and_never_waits():
    """The CUDA paths of N runs (device noise generators, the vmapped step, the checkpoint's RNG layout)."""
    cfg = dataclasses.replace(CFG, steps=12, log_every=6)
    mining = {"mode": "adversarial", "mine_every": 2}
    pack = Engine.seeded([dataclasses.replace(cfg, seed=s) for s in (0, 1)], mining, device="cuda", progress=False)
    start = [_flat(pack, i) for i in range(2)]
    with count_host_reads() as reads:
        results = pack.train()
    assert sum(reads.values()) <= 2 * 2, dict(reads)  # one read per log interval
    for i, seed in enumerate((0, 1)):
        solo = Engine.seeded([dataclasses.replace(cfg, seed=seed)], mining, device="cuda", progress=False)
        (solo_result,) = solo.train()
        assert_same_update(_flat(pack, i), _flat(solo, 0), start[i])
        assert [r["loss"] for r in results[i].curve] == pytest.approx([r["loss"] for r in solo_result.curve],
                                                                       rel=1e-3)
        state = pack.state(i)
        assert torch.equal(state["rng"]["cuda"][0], pack.runs[i].generator.get_state())
