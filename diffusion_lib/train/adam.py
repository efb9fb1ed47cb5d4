"""Adam (method §4: no weight decay, eps 1e-8) on the weights of N stacked runs.

Adam is elementwise, so one update of stacked tensors is N independent updates. :func:`adam_` is
``torch.optim.Adam(fused=True)``'s update: PyTorch's fused kernel, one pass over each tensor's weights,
gradient and moments (on a CPU 7× faster than the seven ``_foreach`` passes of the default
implementation, docs/performance.md), with the step count and learning rate as host numbers; a run's
weights equal ``torch.optim.Adam(fused=True)``'s bit for bit and the default implementation's to
rounding (tests/train/test_engine.py). :func:`adam_captured_` is the same update with the learning rate and
the step counter as device tensors, as a CUDA graph needs (its replays read them from the device;
its float rounding may differ from :func:`adam_` in the last bit).
"""
from __future__ import annotations

import torch

EPS = 1e-8  # torch.optim.Adam's default


@torch.no_grad()
def adam_(params: list[torch.Tensor], exp_avg: list[torch.Tensor], exp_avg_sq: list[torch.Tensor],
          grads: list[torch.Tensor], *, lr: float, count: int, betas: tuple[float, float]) -> None:
    """Adam update number ``count`` (1-based) of ``params`` with ``grads``, in place."""
    # the step count: a host number on a CPU; CUDA's fused kernel takes it only on the device, where a
    # fill (a kernel with the number as argument) puts it there without a copy or a wait
    step = torch.tensor(float(count)) if params[0].device.type == "cpu" else \
        torch.full((), float(count), device=params[0].device)
    steps = [step] * len(params)  # the kernel reads, never writes them
    torch._fused_adam_(params, grads, exp_avg, exp_avg_sq, [], steps, lr=lr, beta1=betas[0], beta2=betas[1],
                       weight_decay=0.0, eps=EPS, amsgrad=False, maximize=False)


@torch.no_grad()
def adam_captured_(params: list[torch.Tensor], exp_avg: list[torch.Tensor], exp_avg_sq: list[torch.Tensor],
                   grads: list[torch.Tensor], *, lr: torch.Tensor, count: torch.Tensor,
                   betas: tuple[float, float]) -> None:
    """:func:`adam_` with ``lr`` and ``count`` as 0-d device tensors (nothing read on the host)."""
    beta1, beta2 = betas
    step_size = lr / (1 - torch.pow(beta1, count))
    bias2_sqrt = (1 - torch.pow(beta2, count)).sqrt()
    torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sq, beta2)
    torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
    denom = torch._foreach_sqrt(exp_avg_sq)
    torch._foreach_div_(denom, bias2_sqrt)
    torch._foreach_add_(denom, EPS)
    update = torch._foreach_div(exp_avg, denom)
    torch._foreach_mul_(update, step_size)
    torch._foreach_sub_(params, update)
