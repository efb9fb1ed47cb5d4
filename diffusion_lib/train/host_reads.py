"""Counting the places where the host waits for the device (a GPU's launch queue drains).

A CUDA training step that reads a value back (``tensor.item()``, ``bool(tensor)``, ``.tolist()``,
a Cholesky that checks its ``info``) blocks the CPU until every queued kernel has run, so the GPU
idles while the next kernels are launched. This model is small enough that such stalls, not
FLOPs, bound its speed. :func:`count_host_reads` counts these calls from Python on any device,
so the count is a CPU-testable proxy for GPU synchronisations: the methods that read a tensor's
value on the host, plus ``torch.linalg.cholesky``/``inv`` and ``nonzero`` (which sync on CUDA to
check errors or size their output). Reads of the tensors ``exclude`` names (torch's own
CPU-resident Adam step counters, which are not device tensors) and reads inside
:func:`host_reads` (host scalars by construction) are not counted.
"""
from __future__ import annotations

import contextlib
import os
import threading
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

_HOST = threading.local()
TENSOR_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "numpy")
FUNCTIONS = ((torch.linalg, "cholesky"), (torch.linalg, "inv"), (torch, "nonzero"))


@contextlib.contextmanager
def host_reads() -> Iterator[None]:
    """Marks reads of tensors that live in host memory by construction (CPU scalars computed on
    the host, whatever the training device): they never wait for a GPU, so they are not counted."""
    depth = getattr(_HOST, "depth", 0)
    _HOST.depth = depth + 1
    try:
        yield
    finally:
        _HOST.depth = depth


@contextlib.contextmanager
def count_host_reads(exclude: Callable[[], Iterable[torch.Tensor]] | None = None) -> Iterator[Counter]:
    """Count host reads of tensor values inside the block; yields a Counter keyed by call name."""
    counts: Counter = Counter()
    saved = [(torch.Tensor, name, getattr(torch.Tensor, name), name in vars(torch.Tensor)) for name in TENSOR_READS]
    saved += [(owner, name, getattr(owner, name), True) for owner, name in FUNCTIONS]

    def tensor_wrapper(name: str, original: Callable) -> Callable:
        def wrapper(self, *args, **kwargs):
            if not getattr(_HOST, "depth", 0) and (exclude is None or not any(self is t for t in exclude())):
                counts[name] += 1
            return original(self, *args, **kwargs)
        return wrapper

    def function_wrapper(name: str, original: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            if not getattr(_HOST, "depth", 0):
                counts[name] += 1
            return original(*args, **kwargs)
        return wrapper

    try:
        for owner, name, original, _ in saved:
            wrap = tensor_wrapper if owner is torch.Tensor else function_wrapper
            setattr(owner, name, wrap(name, original))
        yield counts
    finally:
        for owner, name, original, own in saved:
            if own:
                setattr(owner, name, original)
            else:  # inherited (e.g. TensorBase.__bool__): remove the override
                delattr(owner, name)


@contextlib.contextmanager
def count_device_syncs(device: torch.device, frames: int = 3) -> Iterator[dict[str, Any]]:
    """Count the operations inside the block that made the host wait for a CUDA device, torch's own
    included (``torch.cuda.set_sync_debug_mode("warn")`` reports each one as a warning); yields
    ``{"count": n, "sites": [...]}``, filled when the block ends: ``sites`` names, once each, where
    the synchronising operations were called from: the innermost ``frames`` Python frames outside
    torch and this module (``file:line``, innermost first, paths from the repository or from
    ``site-packages``), to trace where they come from. On other devices the count stays 0."""
    counts: dict[str, Any] = {"count": 0, "sites": []}
    if device.type != "cuda":
        yield counts
        return
    previous = torch.cuda.get_sync_debug_mode()
    sites: list[str] = []

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if "synchroniz" in str(message).lower():  # other warnings inside the block are dropped, as before
            sites.append(_site(traceback.extract_stack()[:-1], frames))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield counts
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    counts["count"] = len(sites)
    counts["sites"] = sorted(set(sites))


def _site(stack: traceback.StackSummary, frames: int) -> str:
    """The innermost ``frames`` frames of ``stack`` outside torch, the warnings machinery and this module."""
    inside = (f"{os.sep}torch{os.sep}", f"{os.sep}warnings.py", __file__)
    own = [f for f in stack if not any(part in f.filename for part in inside)]
    return " < ".join(f"{_short_path(f.filename)}:{f.lineno}" for f in reversed(own[-frames:]))


def _short_path(path: str) -> str:
    """``path`` from the repository root, or from ``site-packages`` for an installed package."""
    root = str(Path(__file__).resolve().parents[2]) + os.sep
    if path.startswith(root):
        return path[len(root):]
    return path.split(f"site-packages{os.sep}", 1)[-1]
