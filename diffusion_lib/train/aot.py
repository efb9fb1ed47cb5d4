"""The closed-form training gradient compiled ahead of time (AOTInductor), once per machine and shape.

On a CPU a training step at the pilot's batch (64 problems) spends about half its time outside
matrix products: a few hundred small elementwise operations, each dispatched on its own
(docs/performance.md, issue 22). ``torch.compile`` fuses them but costs every process 5–17 s of
tracing and compiling, more than a pilot job saves. Here the step's gradient
(:func:`~diffusion_lib.ired.gradients.closed_form_step`: the closed-form gradient, clipped) is exported
with the weights as inputs and compiled by AOTInductor into a package in a cache shared by every
job on the machine (:func:`cache_dir`); the first job that needs a graph compiles it (15–30 s here,
under a file lock, so concurrent jobs wait for it instead of compiling it again) and every later job
loads it in milliseconds.

A package is keyed by everything that shapes its code (:func:`package_key`): the library's code,
torch's version, the CPU's instruction set, the thread count, dtype and shapes, the diffusion's
schedule and mining config, the clipping norm and the kind of step (mining or not). Before a job
uses a package it checks the package's first gradient against the eager closed form
(:data:`CHECK_RTOL`); a package that cannot be built (no C++ compiler, an inductor error) or that
disagrees is not used: the job trains eagerly and says so once in its log. A failed build is
remembered as ``<key>.failed`` next to the packages (delete it to try again); a missing compiler is not.

The compiled step computes the same function as the eager one with its elementwise operations fused,
so float32 results differ from eager ones by rounding (float64: tests/train/test_aot.py); runs do not key
on it (``train.aot`` is an implementation setting, like ``train.compile``).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

from ..ired.closed_form import Weights
from ..ired.diffusion import GaussianDiffusion1D
from ..ired.gradients import GradientFn, closed_form_step
from ..settings.provenance import code_fingerprint

log = logging.getLogger(__name__)

#: environment variable naming the package cache (default: :func:`cache_dir`)
CACHE_ENV = "IRED_AOT_CACHE"
#: environment variable that turns the ahead-of-time step off where ``train.aot`` asks for it
#: (``IRED_AOT=off``; the test suite sets it, so that only tests/train/test_aot.py compiles)
SWITCH_ENV = "IRED_AOT"
#: a package's first gradient must equal the eager one to this relative tolerance (of each tensor's
#: largest entry): float32 rounding passes, a wrong kernel does not
CHECK_RTOL = 1e-3


def cache_dir() -> Path:
    """Where compiled steps are kept: ``$IRED_AOT_CACHE``, else ``$XDG_CACHE_HOME/ired/aot``
    (``~/.cache/ired/aot``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ired" / "aot"


def switched_off() -> bool:
    """Whether ``$IRED_AOT`` turns the ahead-of-time step off (``off``, ``0`` or ``false``)."""
    return os.environ.get(SWITCH_ENV, "").strip().lower() in ("off", "0", "false", "no")


def compiler_available() -> bool:
    """Whether a C++ compiler that AOTInductor can use is on the PATH (``$CXX``, g++ or clang++)."""
    return any(shutil.which(c) for c in filter(None, (os.environ.get("CXX"), "g++", "clang++", "c++")))


class _Step(torch.nn.Module):
    """What is exported: ``(weights, A, Y, t, ξ[, ξ']) -> (clipped grads, parts)`` of one kind of step."""

    def __init__(self, diffusion: GaussianDiffusion1D, grad_clip: float, mined: bool):
        super().__init__()
        self.diffusion, self.grad_clip, self.mined = diffusion, grad_clip, mined

    def forward(self, weights: tuple[torch.Tensor, ...], inp: torch.Tensor, x_start: torch.Tensor, t: torch.Tensor,
                noise: torch.Tensor, *neg: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
        grads, parts = closed_form_step(self.diffusion, Weights(*weights), self.grad_clip, inp, x_start, t, noise,
                                        neg[0] if neg else None, self.mined, in_place=False)
        return tuple(grads), parts


def package_key(diffusion: GaussianDiffusion1D, grad_clip: float, mined: bool, args: tuple[Any, ...]) -> str:
    """The cache key of the compiled step for these inputs (see the module docstring)."""
    tensors = [*args[0], *args[1:]]
    buffers = hashlib.sha256()
    for name, buffer in sorted(diffusion.named_buffers()):
        buffers.update(name.encode() + buffer.detach().cpu().contiguous().numpy().tobytes())
    identity = {
        "code": code_fingerprint(__name__), "torch": torch.__version__,
        "isa": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
        "inputs": [[str(x.dtype), list(x.shape), x.device.type] for x in tensors],
        "timesteps": diffusion.timesteps, "mining": repr(diffusion.mining), "buffers": buffers.hexdigest(),
        "grad_clip": float(grad_clip), "mined": bool(mined),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (jobs on one machine or a shared file system that supports it)."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # a file system without locks: concurrent jobs may compile the same graph
            pass
        yield


def load_or_compile(diffusion: GaussianDiffusion1D, grad_clip: float, mined: bool, args: tuple[Any, ...],
                    directory: Path | None = None) -> Any | None:
    """The compiled step for ``args`` (as :class:`_Step` takes them), loaded from the cache or compiled
    into it first; None if it cannot be built (the reason is logged once, and remembered)."""
    if not compiler_available():
        log.warning("training eagerly: compiling the step ahead of time needs a C++ compiler (g++, clang++ or "
                    "$CXX) on the PATH")
        return None
    directory = cache_dir() if directory is None else directory
    key = package_key(diffusion, grad_clip, mined, args)
    package, failed = directory / f"{key}.pt2", directory / f"{key}.failed"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _locked(directory / f"{key}.lock"):
            if not package.exists() and not failed.exists():
                _compile(_Step(diffusion, grad_clip, mined), args, package, failed)
    except OSError as exc:
        log.warning("training eagerly: the compiled-step cache %s is not usable (%s)", directory, exc)
        return None
    if failed.exists():
        log.warning("training eagerly: the %s step could not be compiled ahead of time (%s; delete %s to try again)",
                    "mining" if mined else "ordinary", failed.read_text().strip(), failed)
        return None
    runner = torch._inductor.aoti_load_package(str(package))
    log.info("training step (%s) compiled ahead of time: loaded %s", "mining" if mined else "ordinary", package)
    return runner


def _compile(step: _Step, args: tuple[Any, ...], package: Path, failed: Path) -> None:
    """Export ``step`` at ``args`` and compile it into ``package`` (atomically); on failure write ``failed``."""
    start = time.perf_counter()
    tmp = package.with_name(f"{package.stem}.{os.getpid()}.tmp.pt2")
    try:
        with warnings.catch_warnings():  # torch.export's notes on its own deprecated internals, not ours
            warnings.simplefilter("ignore", FutureWarning)
            exported = torch.export.export(step, args, strict=False)
        torch._inductor.aoti_compile_and_package(exported, package_path=str(tmp))
        os.replace(tmp, package)
    except Exception as exc:  # noqa: BLE001 (any export or compiler failure: train eagerly, say why)
        failed.write_text(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500])
        tmp.unlink(missing_ok=True)
        return
    log.info("compiled the training step ahead of time in %.0f s: %s", time.perf_counter() - start, package)


def agrees(compiled: tuple[Any, dict[str, torch.Tensor]], eager: tuple[Any, dict[str, torch.Tensor]]) -> bool:
    """Whether a compiled step's (grads, parts) equal the eager step's to :data:`CHECK_RTOL`."""
    if set(compiled[1]) != set(eager[1]) or len(compiled[0]) != len(eager[0]):
        return False
    pairs = [*zip(compiled[0], eager[0]), *((compiled[1][k], eager[1][k]) for k in eager[1])]
    return all(a.shape == b.shape and bool(torch.all((a - b).abs() <= CHECK_RTOL * b.abs().max().clamp(min=1e-12)))
               for a, b in pairs)


def aot_gradients(diffusion: GaussianDiffusion1D, grad_clip: float, directory: Path | None = None) -> GradientFn:
    """The gradient function of :func:`~diffusion_lib.ired.gradients.closed_form_gradients` (one run),
    computed by the step compiled ahead of time for each kind of step (mining or not) on its first call,
    or eagerly where that cannot be had (see the module docstring)."""
    Weights.of(diffusion.model.ebm)  # a ValueError for a network the closed form does not describe
    runners: dict[bool, Any] = {}

    def fn(params: Any, inp: torch.Tensor, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
           noise_neg: torch.Tensor | None, mined: bool) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        weights = Weights.named(params)
        neg = () if noise_neg is None else (noise_neg,)
        args = (tuple(w.detach() for w in weights), inp, x_start, t, noise, *neg)
        if mined not in runners:
            runner = load_or_compile(diffusion, grad_clip, mined, args, directory)
            if runner is not None:
                eager = closed_form_step(diffusion, weights, grad_clip, inp, x_start, t, noise, noise_neg, mined)
                out = runner(*args)
                if not agrees(out, eager):
                    log.warning("training eagerly: the %s step compiled ahead of time disagrees with the eager "
                                "step beyond rounding (rtol %g)", "mining" if mined else "ordinary", CHECK_RTOL)
                    runner = None
                runners[mined] = runner
                return eager
            runners[mined] = None
        runner = runners[mined]
        if runner is None:
            return closed_form_step(diffusion, weights, grad_clip, inp, x_start, t, noise, noise_neg, mined)
        grads, parts = runner(*args)
        return list(grads), parts

    fn.runners = runners  # type: ignore[attr-defined]  (which kinds run compiled: tests, the bench)
    return fn
