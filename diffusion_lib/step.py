"""One training update, three ways: the module path, the whole step compiled, or replayed as a CUDA graph.

* ``eager`` (default): :func:`optimization_step` on the modules;
* ``functional``: the functional step (below) run eagerly, the reference the compiled and graphed
  steps are proven against (tests/test_functional.py);
* ``compile``: the functional step (:func:`diffusion_lib.functional.make_step_fn`: loss, both
  gradients, clipping) under ``torch.compile(fullgraph=True)``; one graph per kind of step (mining
  or not). If compiling fails, the step falls back to the eager functional step, with one log line.
* ``cuda_graphs`` (CUDA only): the functional step and a capturable Adam step captured once per
  kind of step and replayed; the batch and the noise are copied into static buffers first. The
  first :data:`GRAPH_WARMUP` steps run eagerly on a side stream (as PyTorch requires before a
  capture): they are real training steps, so the trajectory is the same as without graphs.

Every mode draws its randomness in the module path's order and returns detached 0-d tensors,
never reading a value on the host.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from .diffusion import GaussianDiffusion1D
from .functional import draw_noise, make_step_fn

log = logging.getLogger(__name__)
GRAPH_WARMUP = 3


def optimization_step(diffusion: GaussianDiffusion1D, optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
                      A: torch.Tensor, Y: torch.Tensor, step: int, grad_clip: float
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training update (SPEC §4): loss with its parts, backward, grad-norm clipping, Adam step.

    The parts gain ``grad_norm`` (the gradient norm before clipping) and ``clip_frac`` (1 when clipping
    scaled the gradient down; its interval mean is the fraction of steps clipped), both device
    tensors: nothing here waits on the device.
    """
    loss, parts = diffusion(A, Y, step=step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    parts["grad_norm"] = norm.detach()
    parts["clip_frac"] = (norm.detach() > grad_clip).float()
    return loss, parts


class TrainStep:
    """Callable ``(A, Y, step) -> (loss, parts)`` that also updates the weights (see the module docstring)."""

    def __init__(self, diffusion: GaussianDiffusion1D, optimizer: torch.optim.Optimizer, grad_clip: float, *,
                 compile: bool = False, cuda_graphs: bool = False, functional: bool = False):
        self.diffusion, self.optimizer, self.grad_clip = diffusion, optimizer, grad_clip
        self.params = list(diffusion.parameters())
        self.names = [name for name, _ in diffusion.model.ebm.named_parameters()]
        if len(self.names) != len(self.params):
            raise ValueError("the diffusion's only parameters must be its energy network's")
        device = self.params[0].device
        if cuda_graphs and device.type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA device, the model is on {device}")
        self.mode = "cuda_graphs" if cuda_graphs else "compile" if compile else "functional" if functional else "eager"
        self.functional = self.mode != "eager"
        self.step_fn = make_step_fn(diffusion, grad_clip) if self.functional else None
        if compile:
            self.step_fn = _CompiledOrEager(self.step_fn)
        self._graphs: dict[bool, _GraphedStep] = {}
        self._calls = 0

    def __call__(self, A: torch.Tensor, Y: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mined = self.diffusion.is_mining_step(step)
        if not self.functional:
            return optimization_step(self.diffusion, self.optimizer, self.params, A, Y, step, self.grad_clip)
        noise = draw_noise(self.diffusion, Y)
        if self.mode == "cuda_graphs":
            self._calls += 1
            if self._calls > GRAPH_WARMUP:
                graph = self._graphs.get(mined)
                if graph is None:
                    graph = self._graphs[mined] = _GraphedStep(self, A, Y, noise, mined,
                                                               pool=next(iter(self._graphs.values())).pool
                                                               if self._graphs else None)
                return graph.replay(A, Y, noise)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self._functional_update(A, Y, noise, mined)
            torch.cuda.current_stream().wait_stream(side)
            return out
        return self._functional_update(A, Y, noise, mined)

    def _functional_update(self, A: torch.Tensor, Y: torch.Tensor, noise: tuple[torch.Tensor, ...], mined: bool
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        t, xi, *rest = noise
        params = dict(zip(self.names, self.params))
        grads, parts = self.step_fn(params, A, Y, t, xi, rest[0] if rest else None, mined)
        for p, g in zip(self.params, grads):
            p.grad = g
        self.optimizer.step()
        return parts["loss"], parts


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


class _GraphedStep:
    """One kind of step (mining or not) captured as a CUDA graph with static inputs."""

    def __init__(self, owner: TrainStep, A: torch.Tensor, Y: torch.Tensor, noise: tuple[torch.Tensor, ...],
                 mined: bool, pool: Any = None):
        self.static = [A.clone(), Y.clone(), *(n.clone() for n in noise)]
        self.graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        with torch.cuda.graph(self.graph, pool=pool):
            A_s, Y_s, *noise_s = self.static
            self.out = owner._functional_update(A_s, Y_s, tuple(noise_s), mined)
        self.pool = self.graph.pool()

    def replay(self, A: torch.Tensor, Y: torch.Tensor, noise: tuple[torch.Tensor, ...]
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        for dst, src in zip(self.static, (A, Y, *noise)):
            dst.copy_(src)
        self.graph.replay()
        loss, parts = self.out
        return loss.clone(), {k: v.clone() for k, v in parts.items()}
