"""Exponential moving average of a model's weights that never reads from the device.

:class:`DeviceEMA` follows ema-pytorch's ``EMA`` (the reference implementation) step for step:
the first call copies the weights; every ``update_every``-th call copies them again up to
``update_after_step`` and afterwards lerps them towards the model with weight 1 - decay, where

    decay = clamp(1 - (1 + epoch) ** -power, 0, beta),  epoch = step - update_after_step - 1

(0 while epoch <= 0; ema-pytorch's ``inv_gamma`` and ``min_value`` at their defaults, 1 and 0, which
SPEC §4 uses). ema-pytorch keeps its step counter on the device and reads it (``.item()``)
twice per update, which stalls a GPU's launch queue every step. Here the counter is a Python int
and the decay is computed with ema-pytorch's own tensor arithmetic on a CPU tensor (host memory,
nothing to wait for), so on a CPU the weights match ema-pytorch's bit for bit (tests/test_ema.py;
on a GPU ema-pytorch would evaluate the same float32 expression with the GPU's kernels) while the
update is one device-side ``_foreach_lerp_``.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .syncs import host_reads


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


class DeviceEMA(nn.Module):
    """EMA copy of ``model`` (``ema_model``), updated without host synchronisation.

    ``update()`` after each optimizer step. The state (``state_dict``) holds the EMA weights, the
    update counter and whether the copy was initialised.
    """

    def __init__(self, model: nn.Module, *, beta: float = 0.995, update_every: int = 10,
                 update_after_step: int = 100, power: float = 2 / 3):
        super().__init__()
        self.online = [model]  # a list, so the online model is not registered as a submodule
        self.ema_model = copy.deepcopy(model)
        self.ema_model.requires_grad_(False)
        self.beta, self.update_every, self.update_after_step = beta, update_every, update_after_step
        self.power = power
        self.step = 0
        self.initted = False
        self._cached: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    def _pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(EMA tensors, model tensors) to copy or lerp: the floating-point parameters (looked up
        once; moving a module keeps its Parameter objects) and buffers (looked up each time)."""
        if self._cached is None:
            ema_p, src_p = [p for p in self.ema_model.parameters()], [p for p in self.online[0].parameters()]
            keep = [i for i, p in enumerate(src_p) if p.is_floating_point() or p.is_complex()]
            self._cached = ([ema_p[i] for i in keep], [src_p[i] for i in keep])
        ema_b, src_b = list(self.ema_model.buffers()), list(self.online[0].buffers())
        keep = [i for i, b in enumerate(src_b) if b.is_floating_point() or b.is_complex()]
        return self._cached[0] + [ema_b[i] for i in keep], self._cached[1] + [src_b[i] for i in keep]

    def decay(self, step: int | None = None) -> float:
        """Decay used by an update when the counter reads ``step`` (default: now)."""
        return ema_decay(self.step if step is None else step, beta=self.beta, update_after_step=self.update_after_step,
                         power=self.power)

    @torch.no_grad()
    def update(self) -> None:
        step = self.step
        self.step += 1
        if not self.initted:
            torch._foreach_copy_(*self._pairs())
            self.initted = True
            return
        if step % self.update_every:
            return
        if step <= self.update_after_step:
            torch._foreach_copy_(*self._pairs())
            return
        torch._foreach_lerp_(*self._pairs(), 1.0 - self.decay())

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return {"format": "device-ema-v1", "step": self.step, "initted": self.initted,
                "ema_model": self.ema_model.state_dict()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> Any:  # type: ignore[override]
        if state.get("format") != "device-ema-v1":
            raise ValueError("not a DeviceEMA state (a checkpoint from before the device EMA)")
        self.step, self.initted = int(state["step"]), bool(state["initted"])
        self._cached = None
        return self.ema_model.load_state_dict(state["ema_model"], strict=strict)
