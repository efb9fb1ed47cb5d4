"""The clipped parameter gradient of the training loss, two ways, one contract.

A *gradient function* is ``fn(params, A, Y, t, ξ, ξ', mined) -> (grads, parts)``: the loss of
:meth:`~diffusion_lib.diffusion.GaussianDiffusion1D.training_loss` for the draws given, the
gradient with respect to the energy network's weights ``params`` (a dict of tensors), clipped to
total norm ``grad_clip`` (SPEC §4), and the loss parts with ``grad_norm`` (the norm before
clipping) and ``clip_frac`` (1 when clipping scaled the gradient down). Nothing is read on the host.

* :func:`func_gradients`: ``torch.func.grad`` of :func:`diffusion_lib.functional.loss`. Pure, so
  ``torch.func.vmap`` maps it over stacked runs, ``torch.compile`` compiles it and a CUDA graph
  captures it;
* :func:`module_gradients`: autograd on the diffusion module itself, whose parameters must hold
  ``params`` (the engine makes them views of its stacked weights); one run only, the fastest eager
  path on a CPU (docs/performance.md; the two agree to 1e-9 in float64, tests/test_functional.py).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.func import grad

from .diffusion import GaussianDiffusion1D
from .functional import Params, loss

GradientFn = Callable[..., tuple[list[torch.Tensor], dict[str, torch.Tensor]]]


def clip_by_total_norm(grads: list[torch.Tensor] | tuple[torch.Tensor, ...], max_norm: float
                       ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``torch.nn.utils.clip_grad_norm_``'s arithmetic on a CPU: (clipped gradients, norm before)."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    return [g * scale for g in grads], norm


def _with_norm(parts: dict[str, torch.Tensor], norm: torch.Tensor, grad_clip: float) -> dict[str, torch.Tensor]:
    norm = norm.detach()
    return {**parts, "grad_norm": norm, "clip_frac": (norm > grad_clip).to(norm.dtype)}


def func_gradients(diffusion: GaussianDiffusion1D, grad_clip: float) -> GradientFn:
    """The gradient function by ``torch.func`` (see the module docstring)."""
    def fn(params: Params, inp: torch.Tensor, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
           noise_neg: torch.Tensor | None, mined: bool) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        grads, parts = grad(lambda p: loss(diffusion, p, inp, x_start, t, noise, noise_neg, mined), has_aux=True)(params)
        clipped, norm = clip_by_total_norm(list(grads.values()), grad_clip)
        return clipped, _with_norm(parts, norm, grad_clip)

    return fn


def module_gradients(diffusion: GaussianDiffusion1D, grad_clip: float) -> GradientFn:
    """The gradient function by autograd on ``diffusion`` (its parameters are the weights; the
    ``params`` argument is ignored)."""
    weights = list(diffusion.parameters())

    def fn(params: Any, inp: torch.Tensor, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
           noise_neg: torch.Tensor | None, mined: bool) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        total, parts = diffusion.module_loss(inp, x_start, t, noise, noise_neg, mined)
        clipped, norm = clip_by_total_norm(torch.autograd.grad(total, weights), grad_clip)
        return clipped, _with_norm(parts, norm, grad_clip)

    return fn
