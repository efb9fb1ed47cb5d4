"""The energy network's values and ∇_y E written out by hand (method §3), for fast training and sampling.

IRED trains θ through ε̂ = ∇_y E_θ, so a training step differentiates a gradient: autograd builds the
backward graph of E with ``create_graph=True`` and then differentiates that graph, operation by
operation. For the MLP of :class:`~diffusion_lib.ired.model.EBM` each piece has a short closed form. This
module evaluates the network: the forward pass keeping its activations (:func:`forward`) and ∇_y E by
the chain rule through the three SiLU layers (:func:`backward`), with no graph, plus the derivatives
the weight gradient needs (:func:`silu2`, :func:`gelu_grad`). :func:`diffusion_lib.ired.gradients.weight_grads`
runs the chain rule backwards through these to the weights.

What it saves against autograd on the module (docs/performance.md, issue 22): no graph is built or
walked; only the y-columns of ``fc1`` enter ∇_y E; ``x W₁ₓᵀ + b₁`` is computed once per batch (once per
sampling call) and shared by every y at which the energy is evaluated (:class:`Rows`); the time path
(sinusoidal features, time MLP, FiLM) runs on the K timesteps instead of on every row
(:class:`TimeTable`). The mathematics is the module's, summed in another order: tests/ired/test_closed_form.py
checks E, ∇_y E and every weight gradient against autograd on the module in float64.

What it applies to (issue 32.4): method §3's network with the 16 tensors of :data:`NAMES`;
:func:`supports` says why any other network must be differentiated by autograd instead. Its guard:
before a job trusts these derivatives for a network, it compares them with autograd on that network
in float64, once (:func:`check_fields`: E and ∇_y E for mining, sampling and evaluation;
:func:`diffusion_lib.ired.gradients.check_training_gradient` the training step's weight gradient);
the guard reads no random number stream and makes one host read per check.

Notation (rows are problems; weights as ``nn.Linear`` stores them, out × in):
z₁ = [x, y] W₁ᵀ + b₁, h₁ = silu(z₁); aₗ = hₗ₋₁ Wₗᵀ + bₗ, zₗ = aₗ ⊙ qₗ + sₗ, hₗ = silu(zₗ) for l = 2, 3,
with qₗ = 1 + gainₗ(t), sₗ = shiftₗ(t); o = h₃ Wₒᵀ + bₒ; E = Σⱼ oⱼ².
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, NamedTuple

import torch
import torch.nn.functional as F

from .model import EBM, LAYERS, TIME_DIM, sinusoidal_embedding

# --------------------------------------------------------------------------- what the closed form applies to
#: the order of ``EBM.named_parameters()``
NAMES = ("time_mlp.0.weight", "time_mlp.0.bias", "time_mlp.2.weight", "time_mlp.2.bias", "fc1.weight", "fc1.bias",
         "layer2.linear.weight", "layer2.linear.bias", "layer2.film.weight", "layer2.film.bias",
         "layer3.linear.weight", "layer3.linear.bias", "layer3.film.weight", "layer3.film.bias",
         "out.weight", "out.bias")


def supports(ebm: torch.nn.Module) -> str | None:
    """Why the derivatives written out here do not apply to ``ebm``, or None when they do: they are
    method §3's network exactly (an :class:`~diffusion_lib.ired.model.EBM` itself, not a subclass, SiLU,
    two modulated layers, a 128-wide time path, the 16 tensors of :data:`NAMES`). The width may
    vary. Anything else must be differentiated by autograd."""
    if type(ebm) is not EBM:
        return f"the energy network is a {type(ebm).__name__}, not SPEC §3's EBM"
    spec = getattr(ebm, "spec", {})
    if spec.get("activation") != "silu":
        return f"its activation is {spec.get('activation')!r}; the closed form is written for silu"
    if spec.get("layers") != LAYERS:
        return f"it has {spec.get('layers')} modulated layers; the closed form is written for {LAYERS}"
    if ebm.time_dim != TIME_DIM:
        return f"its time embedding is {ebm.time_dim} wide; the closed form is written for {TIME_DIM}"
    names = tuple(name for name, _ in ebm.named_parameters())
    if names != NAMES:
        return f"its parameters are {len(names)} tensors other than the closed form's {len(NAMES)}"
    return None


# --------------------------------------------------------------------------- the network, by hand
class Weights(NamedTuple):
    """The energy network's 16 tensors, in :data:`NAMES` order (or their gradients)."""

    t1: torch.Tensor
    t1b: torch.Tensor
    t2: torch.Tensor
    t2b: torch.Tensor
    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor
    f2: torch.Tensor
    f2b: torch.Tensor
    w3: torch.Tensor
    b3: torch.Tensor
    f3: torch.Tensor
    f3b: torch.Tensor
    wo: torch.Tensor
    bo: torch.Tensor

    @classmethod
    def of(cls, ebm: EBM) -> "Weights":
        """The module's parameters themselves (not copies); a ValueError for a network the closed
        form does not know (:func:`supports`)."""
        why = supports(ebm)
        if why is not None:
            raise ValueError(f"the closed-form derivatives do not apply: {why}")
        params = dict(ebm.named_parameters())
        return cls(*(params[n] for n in NAMES))

    @classmethod
    def named(cls, params: Mapping[str, torch.Tensor]) -> "Weights":
        """The tensors of ``params`` (a dict by :data:`NAMES`, e.g. a run's weights or a pack's stacked ones)."""
        return cls(*(params[name] for name in NAMES))

    def detached(self) -> "Weights":
        return Weights(*(w.detach() for w in self))

    def w1y(self, y_dim: int) -> torch.Tensor:
        """The columns of W₁ that multiply y (H × len(y))."""
        return self.w1[:, self.w1.shape[1] - y_dim:]


def _silu(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(σ(z), silu(z), silu'(z)), silu'(z) = σ(z)(1 + z(1 − σ(z))) = σ + h(1 − σ) with h = silu(z)."""
    s = torch.sigmoid(z)
    h = z * s
    return s, h, torch.addcmul(s, h, 1 - s)


def silu2(z: torch.Tensor, s: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """silu''(z) = σ(1 − σ)(2 + z(1 − 2σ)) = (σ − σ²)(2 + z − 2h), given σ = σ(z) and h = silu(z) = zσ
    (four elementwise passes)."""
    return torch.addcmul(s, s, s, value=-1).mul_(torch.add(z, h, alpha=-2).add_(2.0))


def gelu_grad(u: torch.Tensor) -> torch.Tensor:
    """d/du of the exact (erf) GELU: Φ(u) + u φ(u)."""
    return 0.5 * (1 + torch.erf(u / math.sqrt(2.0))) + u * torch.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)


@dataclass
class TimeTable:
    """The time path on the timesteps 0..K-1: features p, the time MLP's pre-activation u and
    activation v, the embedding e and each FiLM layer's output [gain, shift] (K × 2H)."""

    p: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    emb: torch.Tensor
    film2: torch.Tensor
    film3: torch.Tensor

    @classmethod
    def of(cls, w: Weights, timesteps: int) -> "TimeTable":
        steps = torch.arange(timesteps, device=w.w1.device)
        p = sinusoidal_embedding(steps, w.t1.shape[1], w.w1.dtype)
        u = F.linear(p, w.t1, w.t1b)
        v = F.gelu(u)
        emb = F.linear(v, w.t2, w.t2b)
        return cls(p, u, v, emb, F.linear(emb, w.f2, w.f2b), F.linear(emb, w.f3, w.f3b))


def inputs(w: Weights, x: torch.Tensor) -> torch.Tensor:
    """c₁ = x W₁ₓᵀ + b₁: the part of the first layer that does not depend on y (x in the weights' dtype)."""
    return F.linear(x.to(w.w1.dtype), w.w1[:, : x.shape[1]], w.b1)


@dataclass
class Rows:
    """A batch of problems at fixed (x, t) and weights: c₁ and each layer's q = 1 + gain(t),
    s = shift(t). :meth:`energy` and :meth:`energy_and_grad` evaluate it at any y (no graph).

    When every row is at one timestep (sampling), q and s are folded into the weights instead
    (:meth:`at_step`: W'ₗ = diag(qₗ) Wₗ, b'ₗ = qₗ ⊙ bₗ + sₗ) and ``q2 … s3`` are None; such rows
    serve :meth:`energy` and :meth:`energy_and_grad` only, not the training pass (:func:`forward`)."""

    w: Weights
    c1: torch.Tensor
    q2: torch.Tensor | None
    s2: torch.Tensor | None
    q3: torch.Tensor | None
    s3: torch.Tensor | None

    @classmethod
    def of(cls, w: Weights, table: TimeTable, t: torch.Tensor, c1: torch.Tensor) -> "Rows":
        hidden = w.w2.shape[0]
        g2, s2 = table.film2.index_select(0, t).split(hidden, dim=1)
        g3, s3 = table.film3.index_select(0, t).split(hidden, dim=1)
        return cls(w, c1, 1 + g2, s2, 1 + g3, s3)

    @classmethod
    def at_step(cls, w: Weights, table: TimeTable, step: int, c1: torch.Tensor) -> "Rows":
        """The rows ``c1``, all at timestep ``step``, with FiLM folded into the weights."""
        hidden = w.w2.shape[0]
        (g2, s2), (g3, s3) = table.film2[step].split(hidden), table.film3[step].split(hidden)
        q2, q3 = 1 + g2, 1 + g3
        folded = w._replace(w2=q2[:, None] * w.w2, b2=torch.addcmul(s2, q2, w.b2),
                            w3=q3[:, None] * w.w3, b3=torch.addcmul(s3, q3, w.b3))
        return cls(folded, c1, None, None, None, None)

    def repeat(self, groups: int) -> "Rows":
        """The rows stacked ``groups`` times (several y per problem in one batch)."""
        if groups == 1:
            return self
        return Rows(self.w, *(torch.cat([v] * groups) for v in (self.c1, self.q2, self.s2, self.q3, self.s3)))

    def _pre(self, a: torch.Tensor, q: torch.Tensor | None, s: torch.Tensor | None) -> torch.Tensor:
        """z = a ⊙ q + s (a itself when FiLM is folded into the weights)."""
        return a if q is None else torch.addcmul(s, a, q)

    def _lean(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pre-activations z₁, z₂, z₃ and the read-out o at ``y`` (nothing else kept)."""
        w = self.w
        z1 = torch.addmm(self.c1, y, w.w1y(y.shape[1]).t())
        z2 = self._pre(F.linear(F.silu(z1), w.w2, w.b2), self.q2, self.s2)
        z3 = self._pre(F.linear(F.silu(z2), w.w3, w.b3), self.q3, self.s3)
        return z1, z2, z3, F.linear(F.silu(z3), w.wo, w.bo)

    def energy(self, y: torch.Tensor) -> torch.Tensor:
        """E per row at ``y``."""
        return self._lean(y)[3].pow(2).sum(dim=-1)

    def energy_and_grad(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, ∇_y E) per row at ``y``: the chain rule through each SiLU by ``silu_backward``
        (dh ⊙ silu'(z) in one pass), so nothing but z is kept."""
        w = self.w
        z1, z2, z3, o = self._lean(y)
        dz3 = _silu_backward((2 * o) @ w.wo, z3)
        dz2 = _silu_backward(_scaled(dz3, self.q3) @ w.w3, z2)
        dz1 = _silu_backward(_scaled(dz2, self.q2) @ w.w2, z1)
        return o.pow(2).sum(dim=-1), dz1 @ w.w1y(y.shape[1])


def _silu_backward(grad: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """grad ⊙ silu'(z), one fused elementwise pass."""
    return torch.ops.aten.silu_backward(grad, z)


def _scaled(d: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
    return d if q is None else d * q


@dataclass
class Acts:
    """The forward pass: each layer's pre-activation z, σ(z), silu(z), silu'(z), the linear outputs
    a₂, a₃ and the read-out o."""

    z1: torch.Tensor
    s1: torch.Tensor
    h1: torch.Tensor
    d1: torch.Tensor
    a2: torch.Tensor
    z2: torch.Tensor
    s2: torch.Tensor
    h2: torch.Tensor
    d2: torch.Tensor
    a3: torch.Tensor
    z3: torch.Tensor
    s3: torch.Tensor
    h3: torch.Tensor
    d3: torch.Tensor
    o: torch.Tensor

    @property
    def energy(self) -> torch.Tensor:
        return self.o.pow(2).sum(dim=-1)

    def head(self, n: int) -> "Acts":
        """The first ``n`` rows."""
        return Acts(*(getattr(self, f)[:n] for f in self.__dataclass_fields__))


def forward(rows: Rows, y: torch.Tensor) -> Acts:
    """The forward pass of every row at ``y``, keeping what the derivatives need."""
    w = rows.w
    z1 = torch.addmm(rows.c1, y, w.w1y(y.shape[1]).t())
    s1, h1, d1 = _silu(z1)
    a2 = F.linear(h1, w.w2, w.b2)
    z2 = torch.addcmul(rows.s2, a2, rows.q2)
    s2, h2, d2 = _silu(z2)
    a3 = F.linear(h2, w.w3, w.b3)
    z3 = torch.addcmul(rows.s3, a3, rows.q3)
    s3, h3, d3 = _silu(z3)
    return Acts(z1, s1, h1, d1, a2, z2, s2, h2, d2, a3, z3, s3, h3, d3, F.linear(h3, w.wo, w.bo))


@dataclass
class Deltas:
    """The backward pass ∇_y E: δ = ∂E/∂(·) at each layer's output h, pre-activation z and linear
    output a, and the gradient itself."""

    do: torch.Tensor
    dh3: torch.Tensor
    dz3: torch.Tensor
    da3: torch.Tensor
    dh2: torch.Tensor
    dz2: torch.Tensor
    da2: torch.Tensor
    dh1: torch.Tensor
    dz1: torch.Tensor
    grad: torch.Tensor


def backward(rows: Rows, a: Acts, y_dim: int) -> Deltas:
    """∇_y E of every row of ``a`` by the chain rule (``rows`` may have more rows than ``a``)."""
    w, n = rows.w, a.o.shape[0]
    do = 2 * a.o
    dh3 = do @ w.wo
    dz3 = dh3 * a.d3
    da3 = dz3 * rows.q3[:n]
    dh2 = da3 @ w.w3
    dz2 = dh2 * a.d2
    da2 = dz2 * rows.q2[:n]
    dh1 = da2 @ w.w2
    dz1 = dh1 * a.d1
    return Deltas(do, dh3, dz3, da3, dh2, dz2, da2, dh1, dz1, dz1 @ w.w1y(y_dim))


class Frozen:
    """The energy network at fixed weights ``w`` (detached here), for the opt step and sampling:
    :meth:`at` gives the :class:`Rows` of a batch at its timesteps, with the time path computed once."""

    def __init__(self, w: Weights, timesteps: int):
        self.w = w.detached()
        self.table = TimeTable.of(self.w, timesteps)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return inputs(self.w, x)

    def at(self, t: torch.Tensor, c1: torch.Tensor, step: int | None = None) -> Rows:
        """The rows of problems with first-layer inputs ``c1`` (:meth:`inputs`) at timesteps ``t``;
        ``step``: every row is at that timestep (t is ``step`` everywhere), so FiLM is folded into
        the weights (:meth:`Rows.at_step`)."""
        if step is not None:
            return Rows.at_step(self.w, self.table, step, c1)
        return Rows.of(self.w, self.table, t, c1)


# --------------------------------------------------------------------------- the guard against autograd
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
