"""The closed form's guard: before a job trusts the hand-written derivatives of
:mod:`diffusion_lib.ired.closed_form` for a network, it compares them with autograd on that network in
float64, once. :func:`check_fields` covers E and ∇_y E (mining, sampling, evaluation);
:func:`diffusion_lib.ired.gradients.check_training_gradient` the training step's weight gradient. Reads
no random number stream; one host read per check.
"""
from __future__ import annotations

import torch

from .closed_form import Frozen, Weights
from .model import EBM


#: the largest relative difference from autograd (float64) the closed form may show on its first use
AGREEMENT = 1e-8


def float64_copy(ebm: EBM) -> EBM:
    """A float64 copy of ``ebm`` on its device, built without touching any random number stream."""
    with torch.random.fork_rng(devices=[]):
        ref = EBM(ebm.inp_dim, ebm.out_dim, time_dim=ebm.time_dim, **ebm.spec)
    ref.load_state_dict({k: v.detach() for k, v in ebm.state_dict().items()})
    return ref.to(next(ebm.parameters()).device, torch.float64)


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a − b‖ / ‖b‖ (‖a − b‖ where b is zero), as a 0-d tensor on their device (no host read)."""
    scale = torch.linalg.vector_norm(b)
    diff = torch.linalg.vector_norm(a - b)
    return torch.where(scale > 0, diff / torch.where(scale > 0, scale, torch.ones_like(scale)), diff)


def check_fields(ebm: EBM, inp: torch.Tensor, timesteps: int, rows: int = 8) -> float:
    """The guard of every job that samples or mines through the closed form: E and ∇_y E of
    :class:`Frozen` against autograd on the module, in float64, on the first ``rows`` problems of
    ``inp`` at fixed (non-random) candidates and timesteps. Returns the largest relative difference;
    a RuntimeError when it exceeds :data:`AGREEMENT` (the closed form does not describe this network)."""
    ref = float64_copy(ebm)
    x = inp[:rows].detach().to(torch.float64)
    gen = torch.Generator(device=x.device).manual_seed(0)
    y = torch.randn(x.shape[0], ebm.out_dim, generator=gen, device=x.device, dtype=torch.float64)
    t = torch.arange(x.shape[0], device=x.device) % timesteps
    frozen = Frozen(Weights.of(ref), timesteps)
    e_closed, g_closed = frozen.at(t, frozen.inputs(x)).energy_and_grad(y)
    with torch.enable_grad():
        y_ = y.clone().requires_grad_(True)
        e_auto = ref(x, y_, t)
        (g_auto,) = torch.autograd.grad(e_auto.sum(), y_)
    worst = max(torch.stack([relative_difference(e_closed, e_auto.detach()),
                             relative_difference(g_closed, g_auto)]).tolist())  # one host read
    if not worst <= AGREEMENT:
        raise RuntimeError(f"the closed-form energy gradient disagrees with autograd on this network (relative "
                           f"difference {worst:.1e} > {AGREEMENT:g}): set train.gradients: autograd")
    return worst
