"""The clipped parameter gradient of the training loss, two ways, one contract.

A *gradient function* is ``fn(params, A, Y, t, ξ, ξ', mined) -> (grads, parts)``: the loss of
:meth:`~diffusion_lib.diffusion.GaussianDiffusion1D.training_loss` for the draws given, the
gradient with respect to the energy network's weights ``params`` (a dict of tensors), clipped to
total norm ``grad_clip`` (SPEC §4), and the loss parts with ``grad_norm`` (the norm before
clipping) and ``clip_frac`` (1 when clipping scaled the gradient down). Nothing is read on the host.

* :func:`func_gradients`: ``torch.func.grad`` of :func:`diffusion_lib.functional.loss`. Pure, so
  ``torch.func.vmap`` maps it over stacked runs, ``torch.compile`` compiles it and a CUDA graph
  captures it;
* :func:`closed_form_gradients`: the derivatives written out by hand (:mod:`diffusion_lib.closed_form`)
  on the diffusion module's own parameters (the engine makes them views of its stacked weights); one
  run only, eager, the fastest path on a CPU (docs/performance.md; it equals the functional gradient
  in float64, tests/test_closed_form.py).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.func import grad

from . import closed_form
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


def closed_form_gradients(diffusion: GaussianDiffusion1D, grad_clip: float) -> GradientFn:
    """The gradient function by the closed-form derivatives of :mod:`diffusion_lib.closed_form`
    (:func:`~diffusion_lib.closed_form.training_gradients`), at ``diffusion``'s own parameters (the
    engine makes them views of its stacked weights; the ``params`` argument is ignored)."""
    weights = closed_form.Weights.of(diffusion.model.ebm)

    def fn(params: Any, inp: torch.Tensor, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
           noise_neg: torch.Tensor | None, mined: bool) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        grads, parts = closed_form.training_gradients(diffusion, weights, inp, x_start, t, noise, noise_neg, mined)
        clipped, norm = clip_by_total_norm(grads, grad_clip)
        return clipped, _with_norm(parts, norm, grad_clip)

    return fn
