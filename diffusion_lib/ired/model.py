"""The energy model E_θ(x, y, t) ≥ 0 and the wrapper that turns it into a denoiser (method §3).

``EBM`` maps (x = vec(A), y = candidate solution, t) to one non-negative scalar per problem:
a sinusoidal time embedding e(t), an input layer and ``layers`` layers modulated by e(t) as
``(W h + b) ⊙ (1 + g(e)) + s(e)``, each followed by the activation, a linear read-out o, and
E = Σ o². method §3's network is the default: width 512, 2 modulated layers, SiLU; the width, depth
and activation are constructor arguments (the config's ``train.model``), and
:func:`diffusion_lib.ired.closed_form.supports` says whether the hand-written derivatives apply.

``DiffusionWrapper`` exposes the call protocol :class:`~diffusion_lib.ired.diffusion.GaussianDiffusion1D`
relies on: ``wrapper(inp, y, t)`` returns ε̂ = ∇_y E, ``return_energy=True`` returns E, and
``return_both=True`` returns (E, ∇_y E). Whether the double-backward graph is built follows
autograd's grad mode: with grad enabled (training), ∇_y E is built with ``create_graph=True`` so the
loss can train θ through it; under ``torch.no_grad()`` (sampling, mining, evaluation) the gradient
is taken locally without a graph through θ and the results come back detached.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TIME_DIM = 128
HIDDEN = 512
LAYERS = 2
#: the activations a network may use (config ``train.model.activation``)
ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu, "tanh": torch.tanh}


def sinusoidal_embedding(t: torch.Tensor, dim: int = TIME_DIM, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Features [sin(t·f_i), cos(t·f_i)], f_i = exp(-ln(10000)·i/(dim/2 - 1)), i = 0..dim/2-1."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=dtype) * (-math.log(10000.0) / (half - 1)))
    args = t.to(dtype)[:, None] * freqs[None, :]
    return torch.cat((args.sin(), args.cos()), dim=-1)


def activation_fn(name: str):
    """The activation called ``name`` (:data:`ACTIVATIONS`), or a ValueError naming the choices."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class ModulatedLayer(nn.Module):
    """h ↦ act((W h + b) ⊙ (1 + g(e)) + s(e)), with (g, s) = split(Linear(time_dim, 2·out)(e))."""

    def __init__(self, dim_in: int, dim_out: int, time_dim: int = TIME_DIM, activation: str = "silu"):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)
        self.film = nn.Linear(time_dim, 2 * dim_out)
        self.act = activation_fn(activation)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        gain, shift = self.film(emb).chunk(2, dim=-1)
        return self.act(torch.addcmul(shift, self.linear(h), 1.0 + gain))


class EBM(nn.Module):
    """Energy network of method §3: ``forward(x, y, t) -> E`` of shape (B,), E ≥ 0.

    ``inp_dim`` = len(x) = n², ``out_dim`` = len(y) = n²; ``hidden`` (width), ``layers`` (modulated
    layers, named ``layer2``, ``layer3``, ...) and ``activation`` (:data:`ACTIVATIONS`) set the
    architecture, method §3's by default (for n = 20: 1,437,840 parameters). :attr:`spec` holds them.
    """

    def __init__(self, inp_dim: int, out_dim: int, hidden: int = HIDDEN, time_dim: int = TIME_DIM,
                 layers: int = LAYERS, activation: str = "silu"):
        super().__init__()
        if hidden < 1 or layers < 1:
            raise ValueError(f"the network needs hidden >= 1 and layers >= 1, got hidden={hidden}, layers={layers}")
        self.inp_dim, self.out_dim = inp_dim, out_dim
        self.act = activation_fn(activation)
        self.spec = {"hidden": hidden, "layers": layers, "activation": activation}
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim))
        self.fc1 = nn.Linear(inp_dim + out_dim, hidden)
        self.modulated = [f"layer{k + 2}" for k in range(layers)]
        for name in self.modulated:
            self.add_module(name, ModulatedLayer(hidden, hidden, time_dim, activation))
        self.out = nn.Linear(hidden, out_dim)
        self.time_dim = time_dim

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(sinusoidal_embedding(t, self.time_dim, x.dtype))
        h = self.act(self.fc1(torch.cat((x, y), dim=-1)))
        for name in self.modulated:
            h = getattr(self, name)(h, emb)
        return self.out(h).pow(2).sum(dim=-1)


class DiffusionWrapper(nn.Module):
    """Denoiser ε̂(x, y, t) = ∇_y E(x, y, t) over any energy module with ``inp_dim``/``out_dim``.

    ``forward(inp, y, t, return_energy=False, return_both=False)`` returns ∇_y E (default), E, or
    ``(E, ∇_y E)``. See the module docstring for when the double-backward graph is built.
    """

    def __init__(self, ebm: nn.Module):
        super().__init__()
        self.ebm = ebm
        self.inp_dim: int = ebm.inp_dim
        self.out_dim: int = ebm.out_dim

    def forward(self, inp: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
                return_energy: bool = False, return_both: bool = False):
        if return_energy and not return_both:
            return self.ebm(inp, y, t)
        if torch.is_grad_enabled():
            if not y.requires_grad:
                y = y.detach().requires_grad_(True)
            energy = self.ebm(inp, y, t)
            (grad,) = torch.autograd.grad(energy.sum(), y, create_graph=True)
        else:
            with torch.enable_grad():
                y = y.detach().requires_grad_(True)
                energy = self.ebm(inp, y, t)
                (grad,) = torch.autograd.grad(energy.sum(), y)
            energy = energy.detach()
        return (energy, grad) if return_both else grad
