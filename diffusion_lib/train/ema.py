"""Exponential moving average of the weights (method §4), on stacked runs, never reading the device.

The schedule is ema-pytorch's ``EMA`` (the reference implementation): the first update copies the
weights; every ``update_every``-th update copies them again up to ``update_after_step`` and
afterwards lerps them towards the model with weight 1 - decay, where

    decay = clamp(1 - (1 + epoch) ** -power, 0, beta),  epoch = counter - update_after_step - 1

(0 while epoch <= 0; ema-pytorch's ``inv_gamma`` and ``min_value`` at their defaults, 1 and 0, which
method §4 uses). ema-pytorch keeps its counter on the device and reads it (``.item()``) twice per
update, which stalls a GPU's launch queue every step. Here the counter is the training step (a
Python int) and the decay is computed with ema-pytorch's own float32 arithmetic on a CPU tensor
(host memory, nothing to wait for), so on a CPU the weights match ema-pytorch's bit for bit
(tests/train/test_ema.py) while an update is one device-side ``_foreach_lerp_`` over every run at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .host_reads import host_reads


def ema_decay(step: int, *, beta: float, update_after_step: int, power: float) -> float:
    """ema-pytorch's ``get_current_decay`` at counter value ``step``: its float32 arithmetic, on a
    host (CPU) tensor, so reading the result never waits for a GPU."""
    counter = torch.tensor(step)  # host memory, as ema-pytorch's counter before .to(device)
    epoch = (counter - update_after_step - 1).clamp(min=0.0)
    value = 1 - (1 + epoch / 1.0) ** -power  # ema-pytorch divides by inv_gamma = 1: the same float32 ops
    with host_reads():
        if epoch.item() <= 0:
            return 0.0
        return value.clamp(min=0.0, max=beta).item()


@dataclass(frozen=True)
class EMASchedule:
    """When and how much the EMA moves: ema-pytorch's ``beta``, ``update_every``,
    ``update_after_step`` and ``power``."""

    beta: float = 0.995
    update_every: int = 10
    update_after_step: int = 100
    power: float = 2 / 3

    def weight(self, step: int) -> float | None:
        """What the update after training step ``step`` (0-based) does, as ema-pytorch's update
        number ``step + 1``: None (nothing), 1.0 (copy the weights) or the lerp weight 1 - decay."""
        if step and step % self.update_every:
            return None
        if step == 0 or step <= self.update_after_step:
            return 1.0
        # ema-pytorch advances its counter before it computes the decay
        return 1.0 - ema_decay(step + 1, beta=self.beta, update_after_step=self.update_after_step, power=self.power)


@torch.no_grad()
def ema_update_(ema: list[torch.Tensor], weights: list[torch.Tensor], schedule: EMASchedule, step: int) -> None:
    """The EMA update after training step ``step``, in place on ``ema`` (stacked or not)."""
    weight = schedule.weight(step)
    if weight == 1.0:
        torch._foreach_copy_(ema, weights)
    elif weight is not None:
        torch._foreach_lerp_(ema, weights, weight)
