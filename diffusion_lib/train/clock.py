"""The clocks a training interval is timed by: wall seconds (after the device's queue drains) and CPU seconds.

Time: an interval's wall and CPU seconds are shared equally among the runs that trained in it, so
a run's ``train_seconds`` is its share of the machine; ``steps_per_s`` in its curve is the engine's.
"""
from __future__ import annotations

import resource
import time

import torch


def cpu_clock() -> float:
    """CPU seconds used so far by this process and by the child processes it has waited for (the C++
    compiler that builds the step compiled ahead of time, :mod:`diffusion_lib.train.aot`), so that a run's
    CPU time includes its compiling."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def elapsed(device: torch.device, wall_start: float, cpu_start: float) -> tuple[float, float]:
    """Wall and CPU seconds (:func:`cpu_clock`) since a log interval began, after the device finished
    its queued work (the interval's one wait)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall_start, cpu_clock() - cpu_start
