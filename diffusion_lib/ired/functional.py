"""The training loss as a pure function of the weights (``torch.func``), for compiling the whole step.

:class:`~diffusion_lib.ired.model.DiffusionWrapper` differentiates the energy with
``torch.autograd.grad(create_graph=True)`` on a tensor it marks ``requires_grad_`` inside its
forward, which ``torch.func`` transforms and ``torch.compile`` cannot trace through twice. Here the
same mathematics is written functionally: :func:`energy_grad` is ``torch.func.grad`` of the
summed energy with respect to y, and :mod:`diffusion_lib.ired.gradients` takes ``torch.func.grad`` of
:func:`loss` (which contains that gradient) with respect to the parameters. Both equal the module path
(tests/ired/test_functional.py: float64, 1e-12) and the whole function compiles with ``fullgraph``.

The random draws (time steps and the two noises) are arguments, drawn by :func:`draw_noise` in the
module path's order, so a functional step consumes the generator exactly as the module step does.
"""
from __future__ import annotations

import torch
from torch.func import functional_call, grad, grad_and_value

from .diffusion import GaussianDiffusion1D
from .losses import loss_network

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


def draw_noise(diffusion: GaussianDiffusion1D, x_start: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, ...]:
    """(t, ξ, ξ') of one training step, drawn in the module path's order from ``generator`` (None:
    the global one); ξ' only when the mode uses negatives."""
    shape, like = x_start.shape, {"dtype": x_start.dtype, "device": x_start.device}
    t = torch.randint(0, diffusion.timesteps, (shape[0],), device=x_start.device, generator=generator)
    noise = torch.randn(shape, generator=generator, **like)
    if not diffusion.mining.uses_negatives:
        return t, noise
    return t, noise, torch.randn(shape, generator=generator, **like)


def loss(diffusion: GaussianDiffusion1D, params: Params, inp: torch.Tensor, x_start: torch.Tensor,
         t: torch.Tensor, noise: torch.Tensor, noise_neg: torch.Tensor | None = None, mined: bool = False
         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:meth:`GaussianDiffusion1D.training_loss` as a function of the energy network's weights
    ``params``: ε̂ and the energies computed functionally, the opt step with the weights detached."""
    ebm, m = diffusion.model.ebm, diffusion.mining
    frozen = {k: v.detach() for k, v in params.items()}
    descend = (lambda i, y, t_, stats: opt_step(diffusion, frozen, i, y, t_, m.opt_steps, m.scale_factor, stats)
               ) if mined else None
    network = loss_network(lambda i, y, t_: energy_grad(ebm, params, i, y, t_),
                        lambda i, y, t_: energy(ebm, params, i, y, t_))
    return diffusion.training_loss(inp, x_start, t, noise, noise_neg, network=network, descend=descend)
