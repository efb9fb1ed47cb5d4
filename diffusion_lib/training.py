"""What a training run is, apart from the engine that trains it (:mod:`diffusion_lib.train.engine`):
its seeding (:func:`seeded_member`: the workflow's seed k is every script's seed k), its result
(:class:`TrainResult`), its resume checkpoint's identity and loading, its validation score and its
step's FLOPs, the precision and step mode its config asks for.
"""
from __future__ import annotations

import logging
import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .train import aot, checkpoint as ckpt
from .train.flops import step_flops
from .ired.diffusion import GaussianDiffusion1D, build_diffusion
from .spec.mining import MiningConfig
from .ired.data import Heldout
from .ired.evaluation import predict
from .ired.seeding import derive_seed
from .spec.run_config import TrainConfig

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ired-train-checkpoint-v2"  # v2: the EMA in its own layout (``ema``: step, initted, weights)


@dataclass
class TrainResult:
    """What a finished (or diverged) run reports."""

    status: str  # "completed" | "diverged"
    steps_done: int
    diverged_at: int | None
    train_seconds: float
    resumed_from: int | None
    curve: list[dict[str, Any]] = field(repr=False, default_factory=list)
    train_cpu_seconds: float = 0.0
    train_flops: float = 0.0

    @property
    def seconds_per_step(self) -> float:
        """Wall seconds per training step (validation and checkpointing excluded)."""
        return self.train_seconds / max(self.steps_done, 1)

    @property
    def cpu_seconds_per_step(self) -> float:
        """CPU seconds per step (the process's, a compiler it ran included): insensitive to other jobs
        sharing the CPU."""
        return self.train_cpu_seconds / max(self.steps_done, 1)

    @property
    def flops_per_step(self) -> float:
        """Profiler-counted matmul FLOPs per training step (NaN when not measured)."""
        return self.train_flops / self.steps_done if self.steps_done and self.train_flops else math.nan


def accumulate(sums: dict[str, torch.Tensor], parts: dict[str, torch.Tensor]) -> None:
    """Add one step's loss parts to the interval sums (device tensors: no host read)."""
    for key, value in parts.items():
        sums[key] = sums[key] + value if key in sums else value.clone()


def cpu_clock() -> float:
    """CPU seconds used so far by this process and by the child processes it has waited for (the C++
    compiler that builds the step compiled ahead of time, :mod:`diffusion_lib.train.aot`), so that a run's
    CPU time includes its compiling."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def elapsed(device: torch.device, wall_start: float, cpu_start: float) -> tuple[float, float]:
    """Wall and CPU seconds (:func:`cpu_clock`) since a log interval began, after the device finished
    its queued work (the interval's one wait)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall_start, cpu_clock() - cpu_start


def apply_precision(precision: str, device: torch.device) -> None:
    """``train.precision`` on ``device``: TF32 matmuls allowed or not on CUDA; no effect on a CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    elif precision == "tf32":
        log.info("train.precision tf32 has no effect on %s (float32 matmuls)", device)


def seeded_model(seed: int, rank: int, timesteps: int, mining: MiningConfig | dict | None,
                 model: Mapping[str, Any] | None = None) -> GaussianDiffusion1D:
    """A run's initial model (architecture ``model``, SPEC §3's by default): the global RNG seeded
    with ``derive_seed(seed, "init")``, the model built on the CPU (see :func:`seeded_member` for the
    noise generator that goes on from there)."""
    torch.manual_seed(derive_seed(seed, "init"))
    return build_diffusion(rank, timesteps, mining, model)


def seeded_member(seed: int, rank: int, timesteps: int, mining: MiningConfig | dict | None,
                  device: str | torch.device = "cpu", model: Mapping[str, Any] | None = None
                  ) -> tuple[GaussianDiffusion1D, torch.Generator]:
    """Run ``seed``'s initial model and its training-noise generator, as the workflow seeds them:
    the generator continues the init RNG (on a CPU, its state after the build; on a GPU, a device
    generator seeded alike). An engine given these trains the workflow's run ``seed``."""
    device = torch.device(device)
    diffusion = seeded_model(seed, rank, timesteps, mining, model)
    generator = torch.Generator(device=device)
    if device.type == "cpu":
        generator.set_state(torch.get_rng_state())
    else:
        generator.manual_seed(derive_seed(seed, "init"))
    return diffusion, generator


def step_mode(config: TrainConfig, device: torch.device) -> str:
    """The update's mode (:mod:`diffusion_lib.train.step`) that ``train.compile`` / ``train.cuda_graphs`` /
    ``train.aot`` ask for on ``device``: graphs only on CUDA (``auto``: there, unless ``train.compile``
    asks for torch.compile), the ahead-of-time step only on CPUs; ``true`` where it cannot be had
    warns and trains eagerly; ``$IRED_AOT=off`` turns the ahead-of-time step off."""
    cuda = device.type == "cuda"
    if config.cuda_graphs is True and not cuda:
        log.warning("train.cuda_graphs needs a CUDA device; training on %s without graphs", device)
    elif config.cuda_graphs is True or (config.cuda_graphs == "auto" and cuda and not config.compile):
        return "cuda_graphs"
    if config.compile:
        return "compile"
    if config.aot is True and device.type != "cpu":
        log.warning("train.aot is for CPUs only (on a CUDA GPU, torch 2.11, loading the compiled package crashed "
                    "the process: docs/performance.md); training on %s with the eager step", device)
    elif config.aot in (True, "auto") and device.type == "cpu" and not aot.switched_off():
        return "aot"
    return "eager"


def load_resume(path: str | Path, fingerprint: str, steps: int) -> dict[str, Any] | None:
    """The usable resume checkpoint at ``path`` (see :func:`checkpoint.load_latest`), or None;
    one beyond ``steps`` is not usable (the run starts over)."""
    state = ckpt.load_latest(path, fingerprint, log=log.warning, format=CHECKPOINT_FORMAT)
    if state is not None and int(state["step"]) > steps:
        log.warning("checkpoint %s is at step %d, beyond the requested %d steps; starting over",
                    path, state["step"], steps)
        return None
    return state


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


def heldout_mse(diffusion: GaussianDiffusion1D, heldout: Heldout, n_inner: int, seed: int = 0,
                batch_size: int = 1024) -> float:
    """MSE of ``diffusion.sample`` on ``heldout`` (fixed sampling noise from ``seed``)."""
    pred, _ = predict(diffusion, heldout, n_inner, batch_size=batch_size, seed=seed)
    return (pred - heldout.Y.cpu()).pow(2).mean().item()
