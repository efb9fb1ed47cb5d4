"""The clipped parameter gradient of the training loss, two ways, one contract.

A *gradient function* is ``fn(params, A, Y, t, ξ, ξ', mined) -> (grads, parts)``: the loss of
:meth:`~diffusion_lib.ired.diffusion.GaussianDiffusion1D.training_loss` for the draws given, the
gradient with respect to the energy network's weights ``params`` (a dict of tensors), clipped to
total norm ``grad_clip`` (method §4), and the loss parts with ``grad_norm`` (the norm before
clipping) and ``clip_frac`` (1 when clipping scaled the gradient down). Nothing is read on the host.

* :func:`func_gradients`: ``torch.func.grad`` of :func:`diffusion_lib.ired.functional.loss`. Pure, so
  ``torch.func.vmap`` maps it over stacked runs, ``torch.compile`` compiles it and a CUDA graph
  captures it;
* :func:`closed_form_gradients`: the derivatives written out by hand: the network's values and ∇_y E
  from :mod:`diffusion_lib.ired.closed_form`, the weight gradient by :func:`weight_grads` (the chain rule
  run backwards through ∇_y E, with SiLU's second derivative, then through the forward pass), with
  automatic differentiation only over the loss's few operations on ε̂ and E; the fastest path on a CPU
  (docs/performance.md, issue 22; it equals autograd on the module and the functional gradient in
  float64, tests/ired/test_functional.py, tests/ired/test_closed_form.py). Its pack form (``pack=True``:
  those few operations by ``torch.func``, clipping out of place) is pure, so ``torch.func.vmap`` maps it
  over a pack of runs (issue 45; tests/train/test_pack.py); a CUDA graph captures either. For method
  §3's network only (:func:`diffusion_lib.ired.closed_form.supports`); :func:`checked` runs it against
  ``torch.func`` in float64 at every job's first step.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch.func import grad

from .closed_form import (AGREEMENT, NAMES, Acts, Deltas, Frozen, Rows, TimeTable, Weights, backward, check_fields,
                          float64_copy, forward, gelu_grad, relative_difference, silu2)
from .diffusion import GaussianDiffusion1D
from .functional import Params, loss
from .model import DiffusionWrapper

log = logging.getLogger(__name__)
GradientFn = Callable[..., tuple[list[torch.Tensor], dict[str, torch.Tensor]]]


def clip_by_total_norm(grads: list[torch.Tensor] | tuple[torch.Tensor, ...], max_norm: float, in_place: bool = False
                       ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``torch.nn.utils.clip_grad_norm_``'s arithmetic on a CPU: (clipped gradients, norm before).

    ``in_place``: scale ``grads`` themselves with the ``_foreach`` kernels (the same numbers on a CPU,
    no new tensors; for gradients nobody else holds, outside ``torch.func`` transforms)."""
    grads = list(grads)
    norms = torch._foreach_norm(grads) if in_place else [torch.linalg.vector_norm(g) for g in grads]
    norm = torch.linalg.vector_norm(torch.stack(norms))
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    if not in_place:
        return [g * scale for g in grads], norm
    torch._foreach_mul_(grads, scale)
    return grads, norm


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


def closed_form_gradients(diffusion: GaussianDiffusion1D, grad_clip: float, pack: bool = False) -> GradientFn:
    """The gradient function by the closed-form derivatives of :mod:`diffusion_lib.ired.closed_form`
    (:func:`training_gradients`) at the weights ``params`` (a dict with the tensors of
    :data:`~diffusion_lib.ired.closed_form.NAMES`) for ``diffusion``'s network; a ValueError where the closed
    form does not describe it. ``pack``: written for ``torch.func.vmap`` to map it over a pack of runs'
    stacked weights and draws (each matrix product of one run becomes one batched product): the loss's
    adjoints by ``torch.func`` and the clipping out of place; the same numbers as one run's step
    (tests/ired/test_functional.py)."""
    Weights.of(diffusion.model.ebm)  # a ValueError for a network the closed form does not describe

    def fn(params: Any, inp: torch.Tensor, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
           noise_neg: torch.Tensor | None, mined: bool) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        return closed_form_step(diffusion, Weights.named(params), grad_clip, inp, x_start, t, noise, noise_neg, mined,
                                in_place=not pack, functional=pack)

    return fn


def closed_form_step(diffusion: GaussianDiffusion1D, w: Weights, grad_clip: float, inp: torch.Tensor,
                     x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, noise_neg: torch.Tensor | None,
                     mined: bool, in_place: bool = True, functional: bool = False
                     ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """(clipped gradient, loss parts) at weights ``w`` by :func:`training_gradients` (``functional``: the
    loss's adjoints by ``torch.func``): what the eager closed-form step computes, mapped over a pack of
    runs or not, and what :mod:`diffusion_lib.train.aot` compiles (``in_place=False`` there)."""
    grads, parts = training_gradients(diffusion, w, inp, x_start, t, noise, noise_neg, mined, functional)
    clipped, norm = clip_by_total_norm(grads, grad_clip, in_place=in_place)
    return clipped, _with_norm(parts, norm, grad_clip)


def weight_grads(rows: Rows, table: TimeTable, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, a: Acts,
                 d: Deltas, g_bar: torch.Tensor, e_bar: torch.Tensor | None) -> Weights:
    """∂L/∂θ of a loss L of ε̂ = ∇_y E at the first n = len(x) rows of ``y`` (adjoint ``g_bar`` =
    ∂L/∂ε̂; ``d`` is that backward pass) and of E at the other rows (adjoint ``e_bar``; None: L does
    not depend on them).

    ``y`` holds blocks of n rows, one y per problem each, all at the problems' x and timesteps:
    ``rows`` and ``t`` are the problems', repeated once per block; ``a`` is the forward pass of
    every row. Each weight gradient that both passes contribute to is one matrix product over
    their rows stacked (so it is written once)."""
    w, hidden = rows.w, rows.w.w2.shape[0]
    n, y_dim = x.shape[0], y.shape[1]
    head = a.head(n)
    # backwards through ∇_y E = dz₁ W₁ᵧ, dz₁ = dh₁ ⊙ silu'(z₁), dh₁ = da₂ W₂, da₂ = dz₂ ⊙ q₂, ...
    dz1_bar = g_bar @ w.w1y(y_dim).t()
    dh1_bar = dz1_bar * head.d1
    z1_head = dz1_bar * d.dh1 * silu2(head.z1, head.s1, head.h1)
    da2_bar = dh1_bar @ w.w2.t()
    dz2_bar = da2_bar * rows.q2[:n]
    gain2_head = da2_bar * d.dz2
    dh2_bar = dz2_bar * head.d2
    z2_head = dz2_bar * d.dh2 * silu2(head.z2, head.s2, head.h2)
    da3_bar = dh2_bar @ w.w3.t()
    dz3_bar = da3_bar * rows.q3[:n]
    gain3_head = da3_bar * d.dz3
    dh3_bar = dz3_bar * head.d3
    z3_head = dz3_bar * d.dh3 * silu2(head.z3, head.s3, head.h3)
    # o's adjoint: through ∇_y E (do = 2o) at the first block, through E = Σ o² at the others
    o_bar = 2 * (dh3_bar @ w.wo.t())
    if e_bar is not None:
        o_bar = torch.cat((o_bar, 2 * e_bar[:, None] * a.o[n:]))
    elif a.o.shape[0] > n:
        o_bar = torch.cat((o_bar, torch.zeros_like(a.o[n:])))
    # backwards through the forward pass
    z3_bar = _plus_head((o_bar @ w.wo) * a.d3, z3_head)
    gain3_bar = _plus_head(z3_bar * a.a3, gain3_head)
    a3_bar = z3_bar * rows.q3
    z2_bar = _plus_head((a3_bar @ w.w3) * a.d2, z2_head)
    gain2_bar = _plus_head(z2_bar * a.a2, gain2_head)
    a2_bar = z2_bar * rows.q2
    z1_bar = _plus_head((a2_bar @ w.w2) * a.d1, z1_head)
    # z₁ = c₁ + y W₁ᵧᵀ: the x columns see each problem's rows summed over its blocks
    per_problem = z1_bar.view(-1, n, hidden).sum(0)
    w1_bar = torch.cat((per_problem.t() @ x, _stacked(d.dz1, z1_bar, g_bar, y)), dim=1)
    # the time path: each row's FiLM adjoints [gain, shift] summed onto its timestep (a product with the
    # rows' one-hot timesteps rather than index_add_, whose atomic adds would make a GPU run nondeterministic)
    steps = F.one_hot(t, table.emb.shape[0]).to(x.dtype).t()
    film_bar = [steps @ torch.cat((gain_bar, shift_bar), dim=1)
                for gain_bar, shift_bar in ((gain2_bar, z2_bar), (gain3_bar, z3_bar))]
    emb_bar = film_bar[0] @ w.f2 + film_bar[1] @ w.f3
    u_bar = (emb_bar @ w.t2) * gelu_grad(table.u)
    return Weights(t1=u_bar.t() @ table.p, t1b=u_bar.sum(0), t2=emb_bar.t() @ table.v, t2b=emb_bar.sum(0),
                   w1=w1_bar, b1=z1_bar.sum(0), w2=_stacked(d.da2, a2_bar, dh1_bar, a.h1), b2=a2_bar.sum(0),
                   f2=film_bar[0].t() @ table.emb, f2b=film_bar[0].sum(0), w3=_stacked(d.da3, a3_bar, dh2_bar, a.h2),
                   b3=a3_bar.sum(0), f3=film_bar[1].t() @ table.emb, f3b=film_bar[1].sum(0),
                   wo=_stacked(d.do, o_bar, dh3_bar, a.h3), bo=o_bar.sum(0))


def _plus_head(full: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """``full`` with ``head`` added to its first rows."""
    if head.shape[0] == full.shape[0]:
        return full + head
    return torch.cat((full[: head.shape[0]] + head, full[head.shape[0]:]))


def _stacked(left_a: torch.Tensor, left_b: torch.Tensor, right_a: torch.Tensor, right_b: torch.Tensor) -> torch.Tensor:
    """left_aᵀ right_a + left_bᵀ right_b as one product over the rows stacked."""
    return torch.cat((left_a, left_b)).t() @ torch.cat((right_a, right_b))


def training_gradients(diffusion: GaussianDiffusion1D, w: Weights, inp: torch.Tensor, x_start: torch.Tensor, t: torch.Tensor,
                       noise: torch.Tensor, noise_neg: torch.Tensor | None, mined: bool, functional: bool = False
                       ) -> tuple[Weights, dict[str, torch.Tensor]]:
    """The gradient of ``diffusion.training_loss`` (method §4–5) with respect to the energy network's
    weights ``w`` and the loss parts, for the draws given: the network's values and weight gradient
    in closed form, automatic differentiation only over the loss's few operations on ε̂ and E (which
    give their adjoints Ḡ and Ē): by autograd, or by ``torch.func`` when ``functional`` (what
    ``torch.func.vmap`` can map over; torch.export cannot compile it, so one run's step uses autograd;
    the same derivative formulas, the same numbers). On a mining step the opt step (weights held fixed)
    uses the same time path and ``x W₁ₓᵀ + b₁``."""
    m, n = diffusion.mining, inp.shape[0]
    frozen = Frozen(w, diffusion.timesteps)
    table = frozen.table
    problems = frozen.at(t, frozen.inputs(inp))
    descend = None
    if mined:
        def descend(i: torch.Tensor, y: torch.Tensor, t_: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
            return diffusion.descend(problems.energy_and_grad, problems.energy, y, t_, m.opt_steps, m.scale_factor, stats)
    def loss_at(shift: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, tuple[Any, ...]]:
        # the loss of the network's outputs (ε̂ at the first block of y, E at the others), whose adjoints
        # Ḡ, Ē are taken by autograd on the outputs themselves (shift None) or, by torch.func, as the
        # loss's gradient in ``shift`` (zeros added to them); the passes come back as tensors
        kept: list[Any] = []

        def network(i: torch.Tensor, y: torch.Tensor, t_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            rows = problems.repeat(y.shape[0] // n)
            a = forward(rows, y)
            d = backward(rows, a.head(n), y.shape[1])
            eps, energies = d.grad, a.o[n:].pow(2).sum(dim=-1)
            if shift is None:
                eps, energies = eps.requires_grad_(), energies.requires_grad_()
            else:
                eps, energies = eps + shift[0], energies + shift[1]
            kept.extend((rows.c1, rows.q2, rows.s2, rows.q3, rows.s3, y, _fields(a), _fields(d), (eps, energies)))
            return eps, energies

        total, parts = diffusion.training_loss(inp, x_start, t, noise, noise_neg, network=network, descend=descend)
        return total, (parts, tuple(kept))

    if functional:
        shift = (torch.zeros_like(x_start), x_start.new_zeros(2 * n if m.uses_negatives else 0))
        (g_bar, e_bar), (parts, kept) = grad(loss_at, has_aux=True)(shift)
        e_bar = e_bar if m.uses_negatives else None
    else:
        total, (parts, kept) = loss_at(None)
        g_bar, e_bar = torch.autograd.grad(total, kept[-1], allow_unused=True)
    *columns, y, acts, deltas, _ = kept
    rows, a, d = Rows(frozen.w, *columns), Acts(*acts), Deltas(*deltas)
    grads = weight_grads(rows, table, torch.cat([t] * (y.shape[0] // n)), inp, y, a, d, g_bar, e_bar)
    return grads, parts


def _fields(obj: Any) -> tuple[torch.Tensor, ...]:
    """A dataclass's tensors in field order."""
    return tuple(getattr(obj, f) for f in obj.__dataclass_fields__)


def check_training_gradient(diffusion: GaussianDiffusion1D, inp: torch.Tensor, x_start: torch.Tensor, t: torch.Tensor,
                            noise: torch.Tensor, noise_neg: torch.Tensor | None, rows: int = 16,
                            weights: Mapping[str, torch.Tensor] | None = None) -> float:
    """The guard of every job that trains through the closed form, at its first step: the
    closed-form weight gradient (:func:`training_gradients`) against ``torch.func``'s
    (:func:`diffusion_lib.ired.functional.loss`) in float64, on the first ``rows`` problems of the step's
    own draws, and ∇_y E against autograd (:func:`~diffusion_lib.ired.closed_form.check_fields`), at
    ``diffusion``'s network with ``weights`` (default: its own). Reads no random number stream. Returns
    the largest relative difference per tensor; a RuntimeError naming the tensor when it exceeds
    :data:`~diffusion_lib.ired.closed_form.AGREEMENT`."""
    ebm = float64_copy(diffusion.model.ebm)
    if weights is not None:
        ebm.load_state_dict({k: v.detach() for k, v in weights.items()}, strict=False)
    ref = GaussianDiffusion1D(DiffusionWrapper(ebm), diffusion.timesteps, diffusion.mining, n_inner=diffusion.n_inner,
                    inner_scale=diffusion.inner_scale, clamp=diffusion.clamp).to(inp.device, torch.float64)
    draws = [None if d is None else d[:rows].detach() for d in (inp, x_start, t, noise, noise_neg)]
    draws = [d if d is None or not d.is_floating_point() else d.to(torch.float64) for d in draws]
    closed, _ = training_gradients(ref, Weights.of(ebm), *draws, mined=False)
    params = {k: v.detach() for k, v in ebm.named_parameters()}
    auto, _ = func_gradients(ref, float("inf"))(params, *draws, False)
    differences = torch.stack([relative_difference(a, b) for a, b in zip(closed, auto)]).tolist()  # one host read
    worst, where = max(zip(differences, NAMES))
    if not worst <= AGREEMENT:
        raise RuntimeError(f"the closed-form training gradient disagrees with autograd on this network at the first "
                           f"step ({where}: relative difference {worst:.1e} > {AGREEMENT:g}): set train.gradients: "
                           "autograd")
    return max(worst, check_fields(ebm, draws[0], diffusion.timesteps))


def checked(fn: GradientFn, diffusion: GaussianDiffusion1D, packed: bool = False) -> GradientFn:
    """``fn`` (a closed-form gradient function for ``diffusion``'s network, eager, compiled ahead of
    time, or mapped over a pack of runs when ``packed``) that runs :func:`check_training_gradient` on
    the weights and draws of its first call before computing it: in a pack, those of its first run
    that trains (a frozen run's draws are zeros, a degenerate point to check at)."""
    done = [False]

    def first_checked(params: Any, inp: torch.Tensor, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                      noise_neg: torch.Tensor | None, mined: bool) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        if not done[0]:
            done[0] = True
            draws, weights = (inp, x_start, t, noise, noise_neg), params
            if packed:
                drawn = inp.flatten(1).ne(0).any(dim=1).tolist()  # one host read, once a job
                i = drawn.index(True) if True in drawn else 0
                draws = tuple(None if d is None else d[i] for d in draws)
                weights = {k: v[i] for k, v in params.items()}
            worst = check_training_gradient(diffusion, *draws, weights=weights)
            log.info("closed-form gradient checked against autograd at the first step (float64): largest relative "
                     "difference %.1e", worst)
        return fn(params, inp, x_start, t, noise, noise_neg, mined)

    first_checked.runners = getattr(fn, "runners", {})  # type: ignore[attr-defined] (aot's compiled steps)
    return first_checked
