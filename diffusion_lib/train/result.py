"""What a training run returns: its status, steps, curve and cost (:class:`TrainResult`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainResult:
    """What a finished (or diverged) run reports."""

    status: str  # "completed" | "diverged"
    steps_done: int
    diverged_at: int | None
    train_seconds: float
    resumed_from: int | None
    curve: list[dict[str, Any]] = field(repr=False, default_factory=list)
    train_cpu_seconds: float = 0.0
    train_flops: float = 0.0

    @property
    def seconds_per_step(self) -> float:
        """Wall seconds per training step (validation and checkpointing excluded)."""
        return self.train_seconds / max(self.steps_done, 1)

    @property
    def cpu_seconds_per_step(self) -> float:
        """CPU seconds per step (the process's, a compiler it ran included): insensitive to other jobs
        sharing the CPU."""
        return self.train_cpu_seconds / max(self.steps_done, 1)

    @property
    def flops_per_step(self) -> float:
        """Profiler-counted matmul FLOPs per training step (NaN when not measured)."""
        return self.train_flops / self.steps_done if self.steps_done and self.train_flops else math.nan
