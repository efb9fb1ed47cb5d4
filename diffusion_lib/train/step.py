"""The engine's one update of N ≥ 1 stacked runs at a training step, eager, compiled or as a CUDA graph.

One update: the clipped gradient of every active run (:mod:`diffusion_lib.ired.gradients`) → Adam
(:mod:`diffusion_lib.train.adam`) → the EMA (:mod:`diffusion_lib.train.ema`) → frozen runs put back as they were.
The runs' weights, Adam moments and EMA weights are lists of stacked tensors (:class:`Stack`, run on
dim 0). How the gradient is computed is the only thing the modes change:

* ``eager``: the closed-form derivatives (:mod:`diffusion_lib.ired.closed_form`, the fastest path on a
  CPU), for several runs mapped over them by ``torch.func.vmap`` (batched matrix products);
* ``aot`` (one run, CPU): the closed-form gradient compiled ahead of time into a cache shared by every
  job (:mod:`diffusion_lib.train.aot`; eager where it cannot be compiled); several runs train as ``eager``;
* ``compile``: the functional gradient (vmapped for several runs) under
  ``torch.compile(fullgraph=True)``, one graph per kind of step (mining or not); if compiling fails,
  the eager functional gradient, with one log line;
* ``cuda_graphs`` (CUDA only): the gradient (the closed form, one run's 1.1–1.3× faster on an H200 than
  the functional gradient's graph, docs/performance.md; vmapped for several runs), a
  device-scalar Adam and the freezing captured once per kind of step and replayed, the draws copied into static buffers first; the first
  :data:`GRAPH_WARMUP` updates run the same operations eagerly on a side stream (as PyTorch requires
  before a capture), so the trajectory is the graph's from the first step. The EMA runs after the replay.

Nothing here reads a value on the host.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import vmap

from .adam import adam_, adam_captured_
from ..ired.diffusion import GaussianDiffusion1D
from .ema import EMASchedule, ema_update_
from .aot import aot_gradients
from ..ired.closed_form import supports
from ..ired.gradients import GradientFn, checked, closed_form_gradients, func_gradients

log = logging.getLogger(__name__)
GRAPH_WARMUP = 3
MODES = ("eager", "aot", "compile", "cuda_graphs")


@dataclass
class Stack:
    """The training state of N runs, each a list of tensors with the run on dim 0 (in the energy
    network's parameter order, ``names``)."""

    names: list[str]
    params: list[torch.Tensor]
    exp_avg: list[torch.Tensor]
    exp_avg_sq: list[torch.Tensor]
    ema: list[torch.Tensor]

    @classmethod
    def of(cls, names: list[str], weights: list[list[torch.Tensor]]) -> "Stack":
        """Fresh state (zero moments, EMA = weights) of runs whose weights are ``weights[run][tensor]``."""
        params = [torch.stack([w[j].detach() for w in weights]) for j in range(len(names))]
        return cls(names, params, [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params],
                   [p.clone() for p in params])

    @property
    def trained(self) -> list[torch.Tensor]:
        """What an update changes: weights, moments and EMA."""
        return [*self.params, *self.exp_avg, *self.exp_avg_sq, *self.ema]


def keep_frozen_(tensors: list[torch.Tensor], before: list[torch.Tensor], active: torch.Tensor) -> None:
    """Put back ``before`` in the runs where ``active`` (bool, one per run) is False."""
    for t, b in zip(tensors, before):
        t.copy_(torch.where(active.view(-1, *([1] * (t.dim() - 1))), t, b))


class ParameterUpdate:
    """``update(draws, step, active)``: the update of ``stack`` at training step ``step`` (see the
    module docstring); ``draws`` = (A, Y, t, ξ[, ξ']) stacked over runs, ``active`` = which runs train
    (host list) and the same as a device bool tensor. Returns the loss parts, shape (N,) each.

    ``template`` is the runs' diffusion: their network's architecture and the diffusion's settings (the
    weights trained are ``stack``'s).
    """

    def __init__(self, template: GaussianDiffusion1D, stack: Stack, *, grad_clip: float, betas: tuple[float, float],
                 ema: EMASchedule, lr_at: Any, mode: str = "eager"):
        if mode not in MODES:
            raise ValueError(f"step mode {mode!r} is not one of {MODES}")
        device = stack.params[0].device
        if mode == "cuda_graphs" and device.type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA device, the runs are on {device}")
        self.template, self.stack, self.mode = template, stack, mode
        self.betas, self.ema, self.lr_at = betas, ema, lr_at
        self.n = stack.params[0].shape[0]
        if mode == "aot" and self.n > 1:
            log.info("the step compiled ahead of time trains one run at a time; training a pack of %d eagerly", self.n)
            self.mode = mode = "eager"
        self.single, fn = self.n == 1, gradient_function(template, grad_clip, mode, self.n)
        # per kind of step: the step compiled ahead of time, None where it trains eagerly
        self._aot_runners: dict[bool, object] = getattr(fn, "runners", {})
        self.fn: dict[bool, GradientFn] = {}
        for mined in (False, True):
            kind = _bind(fn, mined)
            self.fn[mined] = _CompiledOrEager(kind) if mode == "compile" else kind
        self._graphs: dict[bool, _GraphedUpdate] = {}
        self._calls = 0
        if mode == "cuda_graphs":
            self.lr = torch.zeros((), dtype=stack.params[0].dtype, device=device)
            self.count = torch.zeros((), dtype=stack.params[0].dtype, device=device)

    @property
    def aot_failed(self) -> bool:
        """Whether a kind of step that ran in ``aot`` mode fell back to the eager closed form."""
        return any(runner is None for runner in self._aot_runners.values())

    @property
    def compile_failed(self) -> bool:
        """Whether ``compile`` fell back to the eager functional gradient."""
        return any(isinstance(fn, _CompiledOrEager) and fn.failed for fn in self.fn.values())

    def gradients(self, draws: tuple[torch.Tensor, ...], mined: bool
                  ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Clipped gradients and loss parts of every run, stacked on dim 0."""
        s = self.stack
        if self.single:
            grads, parts = self.fn[mined](dict(zip(s.names, (p[0] for p in s.params))), *(d[0] for d in draws))
            return [g[None] for g in grads], {k: v[None] for k, v in parts.items()}
        return self.fn[mined](dict(zip(s.names, s.params)), *draws)

    def __call__(self, draws: tuple[torch.Tensor, ...], step: int, active: list[bool], active_t: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
        mined = self.template.mining.mines_at(step)
        if self.mode == "cuda_graphs":
            parts = self._graph_update(draws, step, mined, active_t)
        else:
            before = [t.clone() for t in self.stack.trained] if not all(active) else None
            grads, parts = self.gradients(draws, mined)
            s = self.stack
            adam_(s.params, s.exp_avg, s.exp_avg_sq, grads, lr=self.lr_at(step), count=step + 1, betas=self.betas)
            ema_update_(s.ema, s.params, self.ema, step)
            if before is not None:
                keep_frozen_(s.trained, before, active_t)
            return parts
        if not all(active):  # the EMA runs outside the graph
            before = [t.clone() for t in self.stack.ema]
            ema_update_(self.stack.ema, self.stack.params, self.ema, step)
            keep_frozen_(self.stack.ema, before, active_t)
        else:
            ema_update_(self.stack.ema, self.stack.params, self.ema, step)
        return parts

    # ---------------------------------------------------------------- CUDA graphs
    def captured(self, draws: tuple[torch.Tensor, ...], mined: bool, active_t: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
        """The update a graph captures: gradients, device-scalar Adam (``self.lr``, ``self.count``)
        and frozen runs put back."""
        s = self.stack
        before = [t.clone() for t in (*s.params, *s.exp_avg, *s.exp_avg_sq)]
        grads, parts = self.gradients(draws, mined)
        adam_captured_(s.params, s.exp_avg, s.exp_avg_sq, grads, lr=self.lr, count=self.count, betas=self.betas)
        keep_frozen_([*s.params, *s.exp_avg, *s.exp_avg_sq], before, active_t)
        return parts

    def _graph_update(self, draws: tuple[torch.Tensor, ...], step: int, mined: bool, active_t: torch.Tensor
                      ) -> dict[str, torch.Tensor]:
        self.lr.fill_(self.lr_at(step))
        self.count.fill_(step + 1)
        self._calls += 1
        if self._calls > GRAPH_WARMUP:
            graph = self._graphs.get(mined)
            if graph is None:
                pool = next(iter(self._graphs.values())).pool if self._graphs else None
                graph = self._graphs[mined] = _GraphedUpdate(self, draws, mined, active_t, pool)
            return graph.replay(draws, active_t)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            parts = self.captured(draws, mined, active_t)
        torch.cuda.current_stream().wait_stream(side)
        return parts


def gradient_function(template: GaussianDiffusion1D, grad_clip: float, mode: str, n: int) -> GradientFn:
    """The gradient function (:mod:`diffusion_lib.ired.gradients`) that an update of ``n`` runs computes in
    ``mode``, mapped over the runs' stacked weights and draws by ``torch.func.vmap`` when ``n > 1``: the
    closed form in ``eager`` and ``cuda_graphs`` mode, compiled ahead of time in ``aot`` mode (one run),
    checked against autograd at its first step on the first run (:func:`~diffusion_lib.ired.gradients.checked`),
    where the closed form applies (:meth:`~diffusion_lib.ired.diffusion.GaussianDiffusion1D.uses_closed_form`);
    otherwise, and under ``compile``, the functional gradient (``torch.func``). One log line says which."""
    closed = mode in ("eager", "cuda_graphs", "aot") and template.uses_closed_form()
    pack = f", a pack of {n} runs mapped over by torch.func.vmap" if n > 1 else ""
    if closed:
        log.info("training gradient: the closed form (SPEC §3's network)%s%s",
                 ", compiled ahead of time" if mode == "aot" and n == 1 else "", pack)
        if mode == "aot" and n == 1:  # (a pack trains the eager closed form: ParameterUpdate says so)
            return checked(aot_gradients(template, grad_clip), template)
        return checked(_packed(closed_form_gradients(template, grad_clip, pack=n > 1), n), template, packed=n > 1)
    if not template.closed_form:
        why = "train.gradients: autograd"
    elif mode == "compile":
        why = "torch.compile trains the functional gradient"
    else:
        why = supports(template.model.ebm)
    log.info("training gradient: autograd (torch.func): %s%s", why, pack)
    return _packed(func_gradients(template, grad_clip), n)


def _packed(fn: GradientFn, n: int) -> GradientFn:
    """``fn`` mapped over a pack of ``n`` runs (weights and draws stacked on dim 0) when ``n > 1``."""
    if n == 1:
        return fn

    def pack(params: Any, inp: torch.Tensor, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
             noise_neg: torch.Tensor | None, mined: bool) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        dims = (0, 0, 0, 0, 0, None if noise_neg is None else 0, None)  # no ξ' without negatives
        return vmap(fn, in_dims=dims)(params, inp, x_start, t, noise, noise_neg, mined)

    return pack


def _bind(fn: GradientFn, mined: bool) -> GradientFn:
    """``fn`` for one kind of step, taking ``(params, A, Y, t, ξ[, ξ'])``."""
    def one(params: Any, A: torch.Tensor, Y: torch.Tensor, t: torch.Tensor, xi: torch.Tensor,
            *neg: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        return fn(params, A, Y, t, xi, neg[0] if neg else None, mined)

    return one


class _CompiledOrEager:
    """``torch.compile(fn, fullgraph=True)``; on a compile error, ``fn`` itself from then on."""

    def __init__(self, fn: Any):
        self.fn, self.compiled = fn, torch.compile(fn, fullgraph=True, dynamic=False)
        self.failed = False

    def __call__(self, *args: Any) -> Any:
        if not self.failed:
            try:
                return self.compiled(*args)
            except Exception as exc:  # noqa: BLE001 (any compiler failure: fall back, say so once)
                self.failed = True
                log.warning("torch.compile of the training step failed (%s: %s); training eagerly",
                            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return self.fn(*args)


class _GraphedUpdate:
    """One kind of update (mining or not) captured as a CUDA graph with static inputs."""

    def __init__(self, owner: ParameterUpdate, draws: tuple[torch.Tensor, ...], mined: bool, active_t: torch.Tensor,
                 pool: Any = None):
        self.static = [d.clone() for d in draws]
        self.active = active_t.clone()
        self.graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        with torch.cuda.graph(self.graph, pool=pool):
            self.out = owner.captured(tuple(self.static), mined, self.active)
        self.pool = self.graph.pool()

    def replay(self, draws: tuple[torch.Tensor, ...], active_t: torch.Tensor) -> dict[str, torch.Tensor]:
        for dst, src in zip(self.static, draws):
            dst.copy_(src)
        self.active.copy_(active_t)
        self.graph.replay()
        return {k: v.clone() for k, v in self.out.items()}
