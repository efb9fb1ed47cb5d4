"""The training losses of method §4: the denoising loss, the contrastive (energy) loss over positive and
negative samples with the mining counts it reports (:func:`count_acceptance`), and the network the
loss calls (:func:`loss_network`: ε̂ at the positives, E at the negatives)."""
from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
import torch.nn.functional as F


# A contrastive pair is "saturated" when E⁻ - E⁺ exceeds ln(99): its loss softplus(E⁺ - E⁻) is below
# 0.01 and its gradient weight sigmoid(E⁺ - E⁻) below 1%, so it no longer teaches the model anything.
SATURATION_GAP = math.log(99.0)


def denoising_loss(loss_mse: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mode ``none``: the loss mean(L_mse) and its parts, from L_mse per problem."""
    total = loss_mse.mean()
    parts = {"loss_mse": loss_mse.detach().mean(), "loss": total.detach()}
    parts["loss_energy"] = torch.zeros_like(parts["loss_mse"])
    return total, parts


def contrastive_loss(loss_mse: torch.Tensor, e_pos: torch.Tensor, e_neg: torch.Tensor, weight: float,
                     stats: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """method §4–5 with negatives: mean(L_mse + w·L_E), L_E = softplus(E⁺ − E⁻) per problem, and its
    parts (detached 0-d tensors): the loss terms, the mean energies and gap E⁻ − E⁺, the share of
    saturated pairs (gap > :data:`SATURATION_GAP`) and, when ``stats`` holds the opt step's counts
    (a mining step), ``mine_accepted``/``mine_proposed``. Its caller is
    :meth:`GaussianDiffusion1D.training_loss`, the one definition of the training loss."""
    loss_energy = F.softplus(e_pos - e_neg)
    total = (loss_mse + weight * loss_energy).mean()
    gap = (e_neg - e_pos).detach()
    parts = {"loss_mse": loss_mse.detach().mean(), "loss": total.detach(), "loss_energy": loss_energy.detach().mean(),
             "energy_pos": e_pos.detach().mean(), "energy_neg": e_neg.detach().mean(), "energy_gap": gap.mean(),
             "saturated_frac": (gap > SATURATION_GAP).float().mean()}
    if stats:
        parts.update(mine_accepted=stats["accepted"], mine_proposed=stats["proposed"])
    return total, parts


def count_acceptance(stats: dict[str, torch.Tensor], accept: torch.Tensor) -> None:
    """Add one opt step's accepted and proposed counts to ``stats`` (device tensors, no sync)."""
    accepted = accept.sum().to(torch.float64)
    proposed = torch.full((), accept.numel(), dtype=torch.float64, device=accept.device)
    stats["accepted"] = stats["accepted"] + accepted if "accepted" in stats else accepted
    stats["proposed"] = stats["proposed"] + proposed if "proposed" in stats else proposed


def loss_network(eps: Callable[..., torch.Tensor], energy: Callable[..., torch.Tensor]
                 ) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The ``network`` of :meth:`GaussianDiffusion1D.training_loss` from ε̂(x, y, t) and E(x, y, t)
    called separately: ε̂ at the first block of y, E at the other blocks (none: an empty tensor)."""
    def network(inp: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, groups = inp.shape[0], y.shape[0] // inp.shape[0]
        if groups == 1:
            return eps(inp, y, t), y.new_zeros(0)
        return eps(inp, y[:n], t), energy(torch.cat([inp] * (groups - 1)), y[n:], torch.cat([t] * (groups - 1)))
    return network
