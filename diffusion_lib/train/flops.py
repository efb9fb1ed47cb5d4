"""Training compute: FLOPs per step counted by the profiler, and per problem for the compute-matched budget.

The step-matched comparison (every strategy trained for the same number of steps) favours the more
expensive strategy if its extra work per step buys accuracy. The compute-matched view asks instead
what each strategy reaches for the same training compute:

* :func:`step_flops` counts the matmul FLOPs of one training step (forward, the energy gradient and
  the double backward) with ``torch.profiler`` on a throw-away copy of the model, so the run's own
  weights and random streams are untouched. It counts the reference formulation (autograd on the
  module), not the closed form that trains faster (:mod:`diffusion_lib.ired.closed_form`), so budgets and
  compute-matched rungs are a property of the method, unchanged by speed work;
* :func:`training_flops_per_sample` is what the budget ladder's compute-matched rungs are computed
  from (:mod:`diffusion_lib.settings.ladder`): a strategy's rung trains until its cumulative FLOPs equal the
  baseline's full budget, with its own decay (a run read part-way through a schedule is not a run
  trained for that budget).
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch.profiler import ProfilerActivity, profile
from ..ired.diffusion import GaussianDiffusion1D
from ..settings.run_config import TrainConfig
import logging

log = logging.getLogger(__name__)


def counted_flops(fn: Callable[[], Any]) -> float:
    """Matmul FLOPs executed by ``fn`` (forward, backward and double backward), from torch.profiler."""
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        fn()
    return float(sum(e.flops for e in prof.key_averages()))


def step_flops(diffusion: torch.nn.Module, batch_size: int, rank: int, eps: float, mining_step: bool,
               device: torch.device) -> float:
    """FLOPs of one training step (loss and parameter gradient) of ``diffusion`` at ``batch_size``.

    ``mining_step`` selects an adversarial-mining step (``step`` 0) or an ordinary one (``step`` 1, only
    different when ``mine_every`` > 1). Runs on a deep copy inside a forked RNG, so calling it neither
    changes the model nor consumes the training run's random numbers.
    """
    from ..ired.data import inverse_problems  # local: data imports nothing from here, keeps import order simple

    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        model = copy.deepcopy(diffusion).train()
        model.closed_form = False  # count the reference (autograd) formulation's FLOPs, whatever path trains
        gen = torch.Generator(device=device).manual_seed(0)
        A, Y = inverse_problems(batch_size, rank, eps, gen, device)
        step = 0 if mining_step else 1

        def one_step() -> None:
            loss, _ = model(A, Y, step=step)
            loss.backward()

        return counted_flops(one_step)


@functools.lru_cache(maxsize=None)
def _flops_per_sample(mining_json: str, rank: int, timesteps: int, model_json: str = "{}") -> float:
    from ..ired.diffusion import build_diffusion  # local: building a model is only needed here

    mining = json.loads(mining_json)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        diffusion = build_diffusion(rank, timesteps, mining, json.loads(model_json))
    batch, cpu = 4, torch.device("cpu")
    plain = step_flops(diffusion, batch, rank, 0.5, False, cpu)
    if mining.get("mode") != "adversarial":
        return plain / batch
    every = int(mining.get("mine_every", 1))
    mined = step_flops(diffusion, batch, rank, 0.5, True, cpu)
    return (mined + (every - 1) * plain) / every / batch


def training_flops_per_sample(mining: Mapping[str, Any], rank: int, timesteps: int,
                              cache_dir: str | None = None, model: Mapping[str, Any] | None = None) -> float:
    """Matmul FLOPs of training per problem and step, averaged over the mining cadence
    (``mine_every``): what the compute-matched budget is computed from. Counted by the profiler on
    a small batch (matmul FLOPs grow linearly with the batch), once per mining config and process,
    and once per machine when ``cache_dir`` is given (a JSON file per config there)."""
    text = json.dumps({"mining": dict(mining), "rank": rank, "timesteps": timesteps, "model": dict(model or {})},
                      sort_keys=True)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"flops-{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
        if path.exists():
            return float(json.loads(path.read_text())["flops_per_sample"])
    value = _flops_per_sample(json.dumps(dict(mining), sort_keys=True), rank, timesteps,
                              json.dumps(dict(model or {}), sort_keys=True))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**json.loads(text), "flops_per_sample": value}))
        os.replace(tmp, path)
    return value


def training_step_flops(diffusion: GaussianDiffusion1D, config: TrainConfig, device: torch.device
                        ) -> dict[bool, float]:
    """FLOPs of a mining and of an ordinary training step (see :func:`compute.step_flops`); {}
    when ``config.measure_flops`` is off."""
    if not config.measure_flops:
        return {}
    kinds = {True, False} if diffusion.mining.mines else {False}
    flops = {k: step_flops(diffusion, config.batch_size, config.rank, config.train_eps, k, device) for k in kinds}
    log.info("training FLOPs per step: %s", {("mining" if k else "plain"): f"{v:.4g}" for k, v in flops.items()})
    return flops
