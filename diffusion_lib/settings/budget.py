"""A training budget and how the report names it (method §8.1: an answer is an answer at a budget).

A budget is counted in training samples, steps × batch size, and set against the IRED paper's
100,000 steps × batch 2,048 = 204.8M samples. The verdict sentence, the ladder table and figure
all name a budget through :class:`Budget`, so they agree on the numbers and their rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from typing import Mapping

PAPER_STEPS = 100_000
PAPER_BATCH = 2_048
PAPER_SAMPLES = PAPER_STEPS * PAPER_BATCH


def samples_text(samples: float) -> str:
    """A sample count in three significant digits with a K/M/G suffix: 185,600 -> ``186K``."""
    if not math.isfinite(samples):
        return "n/a"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(samples) >= scale:
            return f"{samples / scale:.3g}{suffix}"
    return f"{samples:.3g}"


def share_text(share: float) -> str:
    """A share (0.000906 -> ``0.09%``): one significant digit below 1%, two up to 100%, whole
    percents beyond."""
    if not math.isfinite(share) or share <= 0:
        return "n/a"
    pct = 100 * share
    if pct < 1:
        return f"{pct:.{-math.floor(math.log10(pct))}f}%"
    return f"{pct:.2g}%" if pct < 100 else f"{pct:,.0f}%"


@dataclass(frozen=True)
class Budget:
    """``steps`` of training at ``batch_size`` samples per step, against ``paper_samples``."""

    steps: int
    batch_size: int
    paper_samples: int = PAPER_SAMPLES

    @property
    def samples(self) -> int:
        return self.steps * self.batch_size

    @property
    def share(self) -> float:
        """The budget's share of the paper's training samples."""
        return self.samples / self.paper_samples

    def short(self) -> str:
        """``186K samples``."""
        return f"{samples_text(self.samples)} samples"

    def phrase(self) -> str:
        """The verdict's budget: ``186K training samples (2,900 steps × batch 64; 0.09% of the paper's
        100,000 × 2,048)``."""
        paper = (f"{PAPER_STEPS:,} × {PAPER_BATCH:,}" if self.paper_samples == PAPER_SAMPLES
                 else samples_text(self.paper_samples))
        return (f"{samples_text(self.samples)} training samples ({self.steps:,} steps × batch {self.batch_size:,}; "
                f"{share_text(self.share)} of the paper's {paper})")

    def as_dict(self) -> dict[str, object]:
        return {"steps": self.steps, "batch_size": self.batch_size, "samples": self.samples,
                "paper_samples": self.paper_samples, "share": self.share, "phrase": self.phrase(),
                "short": self.short()}


def budget_of(ladder: Mapping[str, Any] | None, training: Mapping[str, Any]) -> Budget | None:
    """The full budget: the ladder's largest rung (else ``train.steps``) at its batch size."""
    steps = ((ladder or {}).get("rungs") or [None])[-1] or training.get("steps")
    batch = (ladder or {}).get("batch_size") or training.get("batch_size")
    if not steps or not batch:
        return None
    return Budget(int(steps), int(batch), int((ladder or {}).get("paper_samples", PAPER_SAMPLES)))
