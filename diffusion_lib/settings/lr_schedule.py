"""Learning-rate schedules (method §4 and §8.1): constant, cosine, and warmup-stable-decay.

Every schedule starts with a linear warm-up from lr/warmup_steps to lr over ``warmup_steps``
steps. Then:

* ``constant`` (the paper's) keeps lr;
* ``cosine`` decays along a half cosine from lr to ``floor``·lr at the last step;
* ``wsd`` (warmup-stable-decay) keeps lr until the decay starts at
  :func:`decay_start` = steps − round(decay_fraction·steps), then anneals linearly, reaching
  ``floor``·lr on the last step (step ``steps`` − 1).

A ``wsd`` run of b steps equals a constant-lr run (its *trunk*) to :func:`decay_start` followed by
the decay (its *branch*): the budget ladder (:mod:`diffusion_lib.settings.ladder`) trains one trunk per run
and one branch per budget from it.
"""
from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "wsd")


def decay_steps(steps: int, decay_fraction: float) -> int:
    """Steps of a ``wsd`` decay at a budget of ``steps``: round(decay_fraction·steps), halves up."""
    return int(math.floor(decay_fraction * steps + 0.5))


def decay_start(steps: int, decay_fraction: float) -> int:
    """The first step of a ``wsd`` schedule's decay (its branch point from the constant trunk)."""
    return steps - decay_steps(steps, decay_fraction)


def lr_at(kind: str, step: int, *, steps: int, lr: float, warmup_steps: int = 0, floor: float = 0.0,
          decay_fraction: float = 0.2) -> float:
    """Learning rate of training step ``step`` (0-based) of a ``steps``-step run (see the module docstring)."""
    if kind not in SCHEDULES:
        raise ValueError(f"lr_schedule: {kind!r} is not one of {list(SCHEDULES)}")
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if kind == "cosine":
        span = max(steps - 1 - warmup_steps, 1)
        progress = min((step - warmup_steps) / span, 1.0)
        return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    if kind == "wsd":
        start = decay_start(steps, decay_fraction)
        if step < start:
            return lr
        progress = min((step - start + 1) / (steps - start), 1.0)
        return lr * (1 - (1 - floor) * progress)
    return lr
