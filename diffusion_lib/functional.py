"""The training loss as a pure function of the weights (``torch.func``), for compiling the whole step.

:class:`~diffusion_lib.model.DiffusionWrapper` differentiates the energy with
``torch.autograd.grad(create_graph=True)`` on a tensor it marks ``requires_grad_`` inside its
forward, which ``torch.func`` transforms and ``torch.compile`` cannot trace through twice. Here the
same mathematics is written functionally: :func:`energy_grad` is ``torch.func.grad`` of the
summed energy with respect to y, and :func:`make_step_fn` takes ``torch.func.grad`` of the loss
(which contains that gradient) with respect to the parameters. Both equal the module path
(tests/test_functional.py: float64, 1e-12) and the whole function compiles with ``fullgraph``.

The random draws (time steps and the two noises) are arguments, drawn by :func:`draw_noise` in the
module path's order, so a functional step consumes the generator exactly as the module step does.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.func import functional_call, grad, grad_and_value

from .diffusion import GaussianDiffusion1D, contrastive_loss, denoising_loss

Params = dict[str, torch.Tensor]


def energy(ebm: torch.nn.Module, params: Params, inp: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E(x, y, t) per problem with the weights ``params`` (names as in ``ebm.named_parameters()``)."""
    return functional_call(ebm, params, (inp, y, t))


def energy_grad(ebm: torch.nn.Module, params: Params, inp: torch.Tensor, y: torch.Tensor, t: torch.Tensor
                ) -> torch.Tensor:
    """ε̂(x, y, t) = ∇_y E(x, y, t), differentiable with respect to ``params``."""
    return grad(lambda y_: energy(ebm, params, inp, y_, t).sum())(y)


def energy_and_grad(ebm: torch.nn.Module, params: Params, inp: torch.Tensor, y: torch.Tensor, t: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(E, ∇_y E) per problem (for the opt step, with detached weights)."""
    def total(y_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = energy(ebm, params, inp, y_, t)
        return e.sum(), e

    g, (_, e) = grad_and_value(total, has_aux=True)(y)
    return e, g


def opt_step(diffusion: GaussianDiffusion1D, params: Params, inp: torch.Tensor, img: torch.Tensor, t: torch.Tensor,
             steps: int, sf: float, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """:meth:`GaussianDiffusion1D.opt_step` (no mask) with functional energies; ``params`` detached."""
    ebm = diffusion.model.ebm
    return diffusion.descend(lambda y: energy_and_grad(ebm, params, inp, y, t), lambda y: energy(ebm, params, inp, y, t),
                             img, t, steps, sf, stats)


def draw_noise(diffusion: GaussianDiffusion1D, x_start: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(t, ξ, ξ') drawn as the module path draws them (ξ' only when the mode uses negatives)."""
    t = torch.randint(0, diffusion.timesteps, (x_start.shape[0],), device=x_start.device)
    noise = torch.randn_like(x_start)
    if not diffusion.mining.uses_negatives:
        return t, noise
    return t, noise, torch.randn_like(x_start)


def loss(diffusion: GaussianDiffusion1D, params: Params, inp: torch.Tensor, x_start: torch.Tensor,
         t: torch.Tensor, noise: torch.Tensor, noise_neg: torch.Tensor | None = None, mined: bool = False
         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:meth:`GaussianDiffusion1D.p_losses` as a function of the energy network's weights: the same
    negatives (:meth:`~GaussianDiffusion1D.negative_pair`) and loss (:func:`contrastive_loss`), with
    ε̂ and the energies computed functionally."""
    ebm, m = diffusion.model.ebm, diffusion.mining
    y_t = diffusion.q_sample(x_start, t, noise)
    loss_mse = (energy_grad(ebm, params, inp, y_t, t) - noise).pow(2).mean(dim=-1)
    if not m.uses_negatives:
        return denoising_loss(loss_mse)
    stats: dict[str, torch.Tensor] = {}
    frozen = {k: v.detach() for k, v in params.items()}
    descend = (lambda y: opt_step(diffusion, frozen, inp, y, t, m.opt_steps, m.scale_factor, stats)) if mined else None
    positive, negative = diffusion.negative_pair(x_start, t, noise_neg, m.noise_scale, descend)
    energies = energy(ebm, params, torch.cat((inp, inp)), torch.cat((positive, negative)), torch.cat((t, t)))
    return contrastive_loss(loss_mse, *energies.chunk(2), m.energy_loss_weight, stats)


def clip_by_total_norm(grads: list[torch.Tensor], max_norm: float) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``torch.nn.utils.clip_grad_norm_`` on a list of gradients: (clipped gradients, norm before)."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    return [g * scale for g in grads], norm


def make_step_fn(diffusion: GaussianDiffusion1D, grad_clip: float) -> Callable[..., Any]:
    """``fn(params, A, Y, t, noise[, noise_neg], mined) -> (grads, parts)``: loss, the parameter
    gradients, clipping and the step's diagnostics (``grad_norm``, ``clip_frac``) in one function,
    the unit that ``torch.compile`` compiles and a CUDA graph captures."""
    def step_fn(params: Params, inp: torch.Tensor, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                noise_neg: torch.Tensor | None, mined: bool) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        grads, parts = grad(lambda p: loss(diffusion, p, inp, x_start, t, noise, noise_neg, mined), has_aux=True)(params)
        clipped, norm = clip_by_total_norm(list(grads.values()), grad_clip)
        parts = {**parts, "grad_norm": norm.detach(), "clip_frac": (norm.detach() > grad_clip).float()}
        return clipped, parts

    return step_fn
