"""A run's initial state from its seed: the workflow's seed k is every script's seed k (the energy network's initial weights and the noise generator that continues the init RNG)."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..ired.diffusion import GaussianDiffusion1D, build_diffusion
from ..settings.mining import MiningConfig
from ..ired.seeding import derive_seed


def seeded_model(seed: int, rank: int, timesteps: int, mining: MiningConfig | dict | None,
                 model: Mapping[str, Any] | None = None) -> GaussianDiffusion1D:
    """A run's initial model (architecture ``model``, method §3's by default): the global RNG seeded
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
