"""What every workflow job does around its work: logging to the rule's log file, torch threads and
device, and writing JSON results."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Iterator

import torch

from .seeding import resolve_device

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


def setup_torch(threads: int, device: str) -> torch.device:
    """Thread count, device, and denormal flushing on the CPU.

    Training drives some float32 values into the denormal range (below 1.2e-38), where x86 CPUs
    take a slow path: measured here, adversarial training at batch 64 fell from 29 to 8 steps/s
    after about 200 steps. Flushing them to zero (a CPU-only setting) keeps the speed; it changes
    values far below anything the loss can resolve, and runs stay deterministic.
    """
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    dev = resolve_device(device)
    log.info("device %s, %d torch threads, torch %s", dev, torch.get_num_threads(), torch.__version__)
    return dev
