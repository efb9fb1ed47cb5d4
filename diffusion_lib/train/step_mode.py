"""How a training step is computed, not what it computes: the float32 matmul precision and the step mode (eager, AOT, compiled, CUDA graphs) a run's config asks for on its device."""
from __future__ import annotations

import logging

import torch

from ..settings.run_config import TrainConfig
from . import aot

log = logging.getLogger(__name__)


def apply_precision(precision: str, device: torch.device) -> None:
    """``train.precision`` on ``device``: TF32 matmuls allowed or not on CUDA; no effect on a CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    elif precision == "tf32":
        log.info("train.precision tf32 has no effect on %s (float32 matmuls)", device)


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
