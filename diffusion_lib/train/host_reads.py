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
import threading
import warnings
from collections import Counter
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
def count_device_syncs(device: torch.device) -> Iterator[dict[str, int]]:
    """Count the operations inside the block that made the host wait for a CUDA device, torch's own
    included (``torch.cuda.set_sync_debug_mode("warn")`` reports each one as a warning); yields
    ``{"count": n, "sites": [...]}``, filled when the block ends: ``sites`` names the Python line
    (``file:line``) each synchronising operation was called from, once each, to trace where they come
    from. On other devices the count stays 0."""
    counts: dict[str, Any] = {"count": 0, "sites": []}
    if device.type != "cuda":
        yield counts
        return
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield counts
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    counts["count"] = len(syncs)
    counts["sites"] = sorted({f"{w.filename}:{w.lineno}" for w in syncs})
