"""Where a training job has got to: a small JSON heartbeat beside its resume checkpoint.

A trainer rewrites ``progress.json`` (next to the job's ``resume.ckpt``) at every log interval from
the values it has just read for its learning curve, so the heartbeat adds no read from the device:
the step reached and the job's target, the latest validation MSE, the interval's step rate, the
ETA of the job, and when it was written. ``python -m diffusion_lib.watch.status`` reads these files
(and the outputs of finished jobs) to print a study's status table. The file is not a declared
output: a job that finishes leaves its final heartbeat; a killed one leaves its last.
"""
from __future__ import annotations

import json
import math
import os
import socket
import statistics
import time
from pathlib import Path
from typing import Any, Mapping, Sequence
from typing import Protocol

from ..analysis.instability import ratio_to_best

NAME = "progress.json"


def heartbeat_path(resume_path: str | Path | None) -> Path | None:
    """The heartbeat of the job whose resume checkpoint is ``resume_path`` (None: none)."""
    return None if resume_path is None else Path(resume_path).with_name(NAME)


def recent_rate(curve: Sequence[Mapping[str, Any]], rows: int = 3) -> float:
    """The median step rate of the last ``rows`` curve rows (NaN without one)."""
    rates = [r["steps_per_s"] for r in curve[-rows:] if isinstance(r.get("steps_per_s"), (int, float))
             and math.isfinite(r["steps_per_s"]) and r["steps_per_s"] > 0]
    return statistics.median(rates) if rates else math.nan


def latest(curve: Sequence[Mapping[str, Any]], key: str) -> float:
    """The last finite value of ``key`` in the curve (NaN without one)."""
    for row in reversed(curve):
        value = row.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    return math.nan


def eta_seconds(step: int, steps: int, rate: float) -> float:
    """Seconds left at ``rate`` steps/s to go from ``step`` to ``steps`` (NaN when unknown)."""
    return (steps - step) / rate if rate > 0 and math.isfinite(rate) else math.nan


def duration_text(seconds: float) -> str:
    """``1 h 05 min``, ``12 min 30 s``, ``45 s`` (``?`` when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def watched_row(curve: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the trackers are given as a run's newest curve row: the row, with its validation MSE over
    its best so far (``val_mse_over_best``), so a blow-up shows as it happens."""
    return {**curve[-1], "val_mse_over_best": ratio_to_best(curve)}


def write_heartbeat(path: str | Path | None, *, step: int, steps: int, curve: Sequence[Mapping[str, Any]],
                    diverged_at: int | None = None) -> dict[str, Any] | None:
    """Rewrite the heartbeat at ``path`` (atomically); returns what it wrote (None without a path)."""
    if path is None:
        return None
    rate = recent_rate(curve)
    beat = {"step": step, "steps": steps, "val_mse_ema": latest(curve, "val_mse_ema"),
            "val_mse_over_best": ratio_to_best(curve), "steps_per_s": rate,
            "eta_s": eta_seconds(step, steps, rate), "diverged_at": diverged_at, "updated": time.time(),
            "host": socket.gethostname(), "pid": os.getpid()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(beat, allow_nan=True))
    os.replace(tmp, path)
    return beat


def read_heartbeat(path: str | Path) -> dict[str, Any] | None:
    """The heartbeat at ``path``, or None if there is none (or it is unreadable)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class Tracker(Protocol):
    """What the engine calls to let a run be watched."""

    def start(self, step: int) -> None:
        """The run starts, or resumes, at training step ``step``."""

    def log(self, row: Mapping[str, Any]) -> None:
        """A learning-curve row (:func:`diffusion_lib.train.curve.curve_row`), as it is made."""

    def close(self) -> None:
        """Training ends (done, stopped or failed)."""
