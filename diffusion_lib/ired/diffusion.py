"""Gaussian diffusion over an energy model: schedule, opt step, mining losses, sampling (method §4–6).

Symbols: K = ``timesteps``; ᾱ_t = ``alphas_cumprod[t]``; η_t = ``opt_step_size[t]`` =
β_t · √(1 / (1 - ᾱ_t)); c = :data:`CLAMP` = 2 (the clean-solution bound of this continuous task).

Choices where the spec is silent (and defects of the public reference that are *not* repeated):

* the opt step applies the same scale λ on every one of its k steps, clamps each problem with
  its own t, and reuses the energy/gradient of an accepted proposal instead of recomputing them;
* mining and sampling run under ``torch.no_grad()``, so no double-backward graph is built there;
* positive and negative energies are computed in one batched forward pass;
* the mining frequency ``mine_every = m`` runs adversarial mining on training steps with
  ``step % m == 0`` and random negatives on the others (m = 1: every step).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..settings.mining import MiningConfig
from .closed_form import Frozen, Weights, check_fields, supports
from .model import EBM, DiffusionWrapper
from .losses import contrastive_loss, count_acceptance, denoising_loss, loss_network

CLAMP = 2.0


def cosine_schedule(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """β_t for t = 0..K-1 (float64), from f(u) = cos(((u/K) + s)/(1 + s)·π/2)², clipped to [0, 0.999]."""
    u = torch.arange(timesteps + 1, dtype=torch.float64)
    f = torch.cos(((u / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = f[1:] / f[0]
    prev = torch.cat((torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]))
    return torch.clip(1 - alphas_cumprod / prev, 0, 0.999)


def _gather(buffer: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """buffer[t] as a column (B, 1), ready to broadcast over the solution entries."""
    return buffer.gather(0, t)[:, None]


class GaussianDiffusion1D(nn.Module):
    """IRED's diffusion over a model following :class:`~diffusion_lib.ired.model.DiffusionWrapper`'s protocol.

    ``model`` is any module with ``inp_dim``/``out_dim`` called as ``model(inp, y, t,
    return_energy=False, return_both=False)``. Calling the diffusion (``forward``) draws
    t ~ Uniform{0..K-1} per problem and returns ``(loss, parts)`` from :meth:`p_losses`.
    """

    def __init__(self, model: nn.Module, timesteps: int = 10, mining_config: Mapping[str, Any] | MiningConfig | None = None,
                 *, n_inner: int = 5, inner_scale: float = 1.0, clamp: float = CLAMP):
        super().__init__()
        for attr in ("inp_dim", "out_dim"):
            if not hasattr(model, attr):
                raise TypeError(f"model must expose '{attr}' (see DiffusionWrapper's call protocol)")
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        self.model = model
        self.timesteps = timesteps
        self.mining = MiningConfig.from_mapping(mining_config)
        self.n_inner, self.inner_scale, self.clamp = n_inner, inner_scale, clamp
        # the closed form is allowed (train.gradients auto / closed_form) and used where it applies (uses_closed_form)
        self.closed_form = True
        self._fields_checked = False
        betas = cosine_schedule(timesteps)
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        prev = torch.cat((torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]))
        buffers = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_alphas_cumprod_prev": prev.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
            "opt_step_size": betas * torch.sqrt(1 / (1 - alphas_cumprod)),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.float(), persistent=False)

    # ------------------------------------------------------------------ forward process
    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """y_t = √ᾱ_t · y_0 + √(1 - ᾱ_t) · noise."""
        return _gather(self.sqrt_alphas_cumprod, t) * x_start + _gather(self.sqrt_one_minus_alphas_cumprod, t) * noise

    # ------------------------------------------------------------------ energy descent
    @torch.no_grad()
    def opt_step(self, inp: torch.Tensor, img: torch.Tensor, t: torch.Tensor, step: int = 5, sf: float = 1.0,
                 stats: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``step`` energy-descent steps with rejection (method §5); returns the new y (detached).

        Each step proposes y' = clamp(y - sf·η_t·∇_y E, ±c·√ᾱ_t) (t per problem) and keeps it only
        where E(y') ≤ E(y). The accepted energy and gradient are reused by the next step, so k steps
        cost k+1 forward and k backward passes (the last proposal needs only its energy).

        ``stats`` (optional) accumulates the acceptance count as device tensors, without a host sync:
        ``stats["accepted"]`` (accepted proposals) and ``stats["proposed"]`` (problems × steps).
        """
        return self.descend(*self.energy_fields(inp)(t), img, t, step, sf, stats)

    def uses_closed_form(self) -> bool:
        """Whether energies and gradients go through :mod:`diffusion_lib.ired.closed_form`: allowed
        (``closed_form``, off under ``train.gradients: autograd``) and method §3's network
        (:func:`~diffusion_lib.ired.closed_form.supports`)."""
        ebm = getattr(self.model, "ebm", None)
        return bool(self.closed_form) and ebm is not None and supports(ebm) is None

    def energy_fields(self, inp: torch.Tensor, c1: torch.Tensor | None = None
                      ) -> Callable[..., tuple[Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                                               Callable[[torch.Tensor], torch.Tensor]]]:
        """For the problems ``inp`` with the weights held fixed (no graph through them): a map from
        timesteps ``(t, step=None)`` to ``(energy_and_grad, energy)`` of y, as :meth:`descend` takes
        them; ``step`` (an int) says that every entry of t is that timestep (sampling), which lets the
        closed form fold the time modulation into the weights.

        Where the closed form applies (:meth:`uses_closed_form`) these are the closed forms of
        :mod:`diffusion_lib.ired.closed_form` (``x W₁ₓᵀ + b₁`` computed once here, or given as ``c1``, and the
        time path once per call), checked against autograd in float64 on their first use; any other
        model (or ``closed_form = False``) is differentiated by autograd through
        :class:`~diffusion_lib.ired.model.DiffusionWrapper`'s protocol."""
        if self.uses_closed_form():
            ebm = self.model.ebm
            if not self._fields_checked:  # once per model: the guard against autograd (closed_form.check_fields)
                check_fields(ebm, inp, self.timesteps)
                self._fields_checked = True
            frozen = Frozen(Weights.of(ebm), self.timesteps)
            first = frozen.inputs(inp) if c1 is None else c1

            def closed(t: torch.Tensor, step: int | None = None) -> tuple[Callable[..., Any], Callable[..., Any]]:
                rows = frozen.at(t, first, step)
                return rows.energy_and_grad, rows.energy
            return closed

        weight = next(self.model.parameters(), None)
        if inp is not None and weight is not None:
            inp = inp.to(weight.dtype)  # as the closed form's inputs() does

        def module(t: torch.Tensor, step: int | None = None) -> tuple[Callable[..., Any], Callable[..., Any]]:
            return (lambda y: self.model(inp, y, t, return_both=True)), (lambda y: self.model(inp, y, t, return_energy=True))
        return module

    def descend(self, energy_and_grad: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                energy: Callable[[torch.Tensor], torch.Tensor], img: torch.Tensor, t: torch.Tensor, step: int,
                sf: float, stats: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The loop of :meth:`opt_step` over any energy: ``energy_and_grad(y) -> (E, ∇_y E)`` and
        ``energy(y) -> E`` per problem (the module's, or :mod:`diffusion_lib.ired.functional`'s)."""
        img = img.detach()
        if step <= 0:
            return img
        lr = sf * _gather(self.opt_step_size, t)
        bound = self.clamp * _gather(self.sqrt_alphas_cumprod, t)
        e, g = energy_and_grad(img)
        for i in range(step):
            proposal = torch.maximum(torch.minimum(img - lr * g, bound), -bound)
            if i == step - 1:
                new_e, new_g = energy(proposal), g
            else:
                new_e, new_g = energy_and_grad(proposal)
            accept = (new_e <= e)[:, None]
            if stats is not None:
                count_acceptance(stats, accept)
            img = torch.where(accept, proposal, img)
            e = torch.where(accept[:, 0], new_e, e)
            g = torch.where(accept, new_g, g)
        return img.detach()

    # ------------------------------------------------------------------ training loss
    def make_negative(self, inp: torch.Tensor, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                      adversarial: bool, opt_steps: int | None = None, scale_factor: float | None = None,
                      noise_scale: float | None = None, stats: dict[str, torch.Tensor] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (y⁺, y⁻_t) for the contrastive term (method §5), both detached.

        y⁺ = q(y_0, t, ξ'), y⁻ = q(y_0, t, σ·ξ'), optionally pushed to lower energy by the opt step
        (adversarial), then mapped to ŷ⁻_0 = clamp(y⁻/√ᾱ_t, ±2) and re-noised with ξ'. Parameters
        left as None take this diffusion's mining config. ``stats`` collects the opt step's
        acceptance counts (see :meth:`opt_step`).
        """
        m = self.mining
        sigma = m.noise_scale if noise_scale is None else noise_scale
        steps, sf = m.opt_steps if opt_steps is None else opt_steps, m.scale_factor if scale_factor is None else scale_factor
        descend = (lambda y: self.opt_step(inp, y, t, step=steps, sf=sf, stats=stats)) if adversarial else None
        return self.negative_pair(x_start, t, noise, sigma, descend)

    def negative_pair(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, sigma: float,
                      descend: Callable[[torch.Tensor], torch.Tensor] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(y⁺, y⁻_t) of method §5, both detached: y⁺ = q(y_0, t, ξ'), y⁻ = q(y_0, t, σ·ξ') moved by
        ``descend`` (the opt step over some energy, for adversarial negatives), mapped to
        ŷ⁻_0 = clamp(y⁻/√ᾱ_t, ±c) and re-noised with ξ'. The one definition of the negatives: the
        module path (:meth:`make_negative`) and the functional one (:mod:`diffusion_lib.ired.functional`)
        differ only in the energy ``descend`` follows."""
        positive = self.q_sample(x_start, t, noise)
        negative = self.q_sample(x_start, t, sigma * noise)
        if descend is not None:
            negative = descend(negative)
        clean = (negative / _gather(self.sqrt_alphas_cumprod, t)).clamp(-self.clamp, self.clamp)
        return positive.detach(), self.q_sample(clean, t, noise).detach()

    def is_mining_step(self, step: int) -> bool:
        """Whether training step ``step`` uses adversarial negatives (mode 'adversarial', every m-th)."""
        return self.mining.mines_at(step)

    def training_loss(self, inp: torch.Tensor, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                      noise_neg: torch.Tensor | None, *, network: Callable[..., tuple[torch.Tensor, torch.Tensor]],
                      descend: Callable[..., torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss mean(L_mse + w·L_E) and its parts for one batch (method §4–5), given its draws:
        the one definition of the training loss.

        L_mse = mean over entries of (ε̂(x, y_t, t) - ξ)² per problem, y_t = q(y_0, t, ξ); for modes
        'random' and 'adversarial', L_E = softplus(E⁺ - E⁻) per problem with the pair of
        :meth:`negative_pair` (noise ξ'). Mode 'none' builds no negatives.

        The energy network enters only through ``network(inp, y, t) -> (ε̂, E)``, where ``y`` stacks
        blocks of one candidate per problem (y_t, then y⁺ and y⁻ when there are negatives): ε̂ =
        ∇_y E at the first block, differentiable in the weights, and E at the other blocks; and, on a
        mining step, ``descend(inp, y, t, stats)`` (the opt step, weights held fixed). Implementations:
        the module's (:meth:`module_loss`), the closed form (:mod:`diffusion_lib.ired.gradients`) and the
        functional one (:mod:`diffusion_lib.ired.functional`). The parts are detached 0-d tensors (no host
        sync per step): the loss terms, the mean energies, the mean gap E⁻ - E⁺, the share of saturated
        pairs (gap > :data:`SATURATION_GAP`) and, on mining steps, the opt step's accepted/proposed counts.
        """
        m = self.mining
        y_t = self.q_sample(x_start, t, noise)
        if not m.uses_negatives:
            eps, _ = network(inp, y_t, t)
            return denoising_loss((eps - noise).pow(2).mean(dim=-1))
        stats: dict[str, torch.Tensor] = {}
        move = (lambda y: descend(inp, y, t, stats)) if descend is not None else None
        positive, negative = self.negative_pair(x_start, t, noise_neg, m.noise_scale, move)
        eps, energies = network(inp, torch.cat((y_t, positive, negative)), t)
        loss_mse = (eps - noise).pow(2).mean(dim=-1)
        return contrastive_loss(loss_mse, *energies.chunk(2), m.energy_loss_weight, stats)

    def module_loss(self, inp: torch.Tensor, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                    noise_neg: torch.Tensor | None, mined: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`training_loss` with this module's energy network (autograd builds its gradient)."""
        m = self.mining
        descend = (lambda i, y, t_, stats: self.opt_step(i, y, t_, step=m.opt_steps, sf=m.scale_factor, stats=stats)
                   ) if mined else None
        network = loss_network(self.model, lambda i, y, t_: self.model(i, y, t_, return_energy=True))
        return self.training_loss(inp, x_start, t, noise, noise_neg, network=network, descend=descend)

    def p_losses(self, inp: torch.Tensor, x_start: torch.Tensor, t: torch.Tensor, step: int = 0
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`module_loss` at training step ``step`` with fresh noise ξ (and ξ' with negatives)."""
        noise = torch.randn_like(x_start)
        noise_neg = torch.randn_like(x_start) if self.mining.uses_negatives else None
        return self.module_loss(inp, x_start, t, noise, noise_neg, self.is_mining_step(step))

    def forward(self, inp: torch.Tensor, x_start: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        t = torch.randint(0, self.timesteps, (x_start.shape[0],), device=x_start.device)
        return self.p_losses(inp, x_start, t, step=step)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def sample(self, inp: torch.Tensor, n_inner: int | None = None, inner_scale: float | None = None,
               generator: torch.Generator | None = None, stats: dict[str, torch.Tensor] | None = None
               ) -> torch.Tensor:
        """Predict y_0 for each row of ``inp`` by reverse diffusion with energy descent (method §6).

        From y ~ N(0, I), for t = K-1..0: ŷ_0 = clamp((y - √(1-ᾱ_t)·ε̂)/√ᾱ_t, ±2); y = √ᾱ_t·ŷ_0;
        ``n_inner`` opt steps of scale ``inner_scale`` (defaults: the diffusion's, 5 and 1);
        y = clamp(y, ±2√ᾱ_t); ŷ_0 = y/√ᾱ_t; y = √ᾱ_{t-1}·ŷ_0 for t > 0. Returns the final ŷ_0.
        ``stats`` collects the inner steps' acceptance counts (see :meth:`opt_step`).
        """
        n_inner = self.n_inner if n_inner is None else n_inner
        inner_scale = self.inner_scale if inner_scale is None else inner_scale
        batch = inp.shape[0]
        fields = self.energy_fields(inp)
        y = torch.randn(batch, self.model.out_dim, device=inp.device, generator=generator)
        x0 = y
        for step in reversed(range(self.timesteps)):
            t = torch.full((batch,), step, device=inp.device, dtype=torch.long)
            sqrt_ac = _gather(self.sqrt_alphas_cumprod, t)
            energy_and_grad, energy = fields(t, step)
            eps = energy_and_grad(y)[1]
            x0 = ((y - _gather(self.sqrt_one_minus_alphas_cumprod, t) * eps) / sqrt_ac).clamp(-self.clamp, self.clamp)
            y = sqrt_ac * x0
            if n_inner > 0:
                y = self.descend(energy_and_grad, energy, y, t, n_inner, inner_scale, stats)
            bound = self.clamp * sqrt_ac
            y = torch.maximum(torch.minimum(y, bound), -bound)
            x0 = y / sqrt_ac
            if step > 0:
                y = _gather(self.sqrt_alphas_cumprod_prev, t) * x0
        return x0


def build_diffusion(rank: int, timesteps: int, mining: MiningConfig | dict | None = None,
                    model: Mapping[str, Any] | None = None) -> GaussianDiffusion1D:
    """The model for n x n inversion: EBM(n², n², **model) in a DiffusionWrapper in GaussianDiffusion1D;
    ``model`` (``hidden``, ``layers``, ``activation``; config ``train.model``) defaults to method §3's network."""
    dim = rank * rank
    return GaussianDiffusion1D(DiffusionWrapper(EBM(dim, dim, **dict(model or {}))), timesteps=timesteps,
                               mining_config=mining)
