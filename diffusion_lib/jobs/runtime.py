"""What every workflow job does around its work: logging to the rule's log file, torch threads and
device, and writing JSON results."""
from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Iterator

import torch

from ..ired.seeding import resolve_device

log = logging.getLogger("diffusion_lib")


@contextlib.contextmanager
def logging_to(path: str | os.PathLike | list[str | os.PathLike] | None, level: int = logging.INFO
               ) -> Iterator[logging.Logger]:
    """Send ``diffusion_lib`` logging to ``path`` (a file, or each file of a list: a pack's runs)
    and stderr; log any exception before re-raising."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    for file in ([] if not path else path if isinstance(path, list) else [path]):
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(file, mode="a"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    for h in handlers:
        h.setFormatter(fmt)
        log.addHandler(h)
    log.setLevel(level)
    try:
        yield log
    except BaseException as exc:
        if not (isinstance(exc, SystemExit) and exc.code in (0, None)):
            log.error("failed: %s\n%s", exc, traceback.format_exc())
        raise
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """``obj`` as indented JSON (numpy/torch scalars as floats), creating the folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=2, default=float)
        fh.write("\n")


#: glibc's mallopt parameters and the values :func:`keep_freed_memory` sets
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    By default glibc serves a block of 128 KiB or more (one activation of 64 × 512 floats; a 1 MiB
    weight gradient) with a fresh ``mmap`` and unmaps it when freed, and trims the heap's free top:
    every training step then faults in and zeroes the same pages again. Measured on a 2-core CPU
    (docs/performance.md, issue 22): 180,000–220,000 page faults in a 20-second benchmark, and the
    training step 1.2–1.5× slower than with the thresholds raised. Raising ``M_MMAP_THRESHOLD`` (to
    glibc's maximum, 32 MiB) and ``M_TRIM_THRESHOLD`` (1 GiB) keeps the memory in the process: the
    resident size stays at its peak (as PyTorch's GPU allocator does on a GPU). Only malloc's
    bookkeeping changes, never a value. Returns whether it applied: not on a non-glibc system, nor
    when the user already tunes malloc (``GLIBC_TUNABLES`` with malloc settings, or
    ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``), which is left alone.
    """
    if "malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(
            k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


def setup_torch(threads: int, device: str) -> torch.device:
    """Thread count, device, denormal flushing on the CPU and malloc keeping freed memory
    (:func:`keep_freed_memory`).

    Training drives some float32 values into the denormal range (below 1.2e-38), where x86 CPUs
    take a slow path: measured here, adversarial training at batch 64 fell from 29 to 8 steps/s
    after about 200 steps. Flushing them to zero (a CPU-only setting) keeps the speed; it changes
    values far below anything the loss can resolve, and runs stay deterministic.
    """
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    keep_freed_memory()
    dev = resolve_device(device)
    log.info("device %s, %d torch threads, torch %s", dev, torch.get_num_threads(), torch.__version__)
    return dev
