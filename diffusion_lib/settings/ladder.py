"""The budget ladder (method §8.1): every run is read at several training budgets.

With the warmup-stable-decay schedule (:mod:`diffusion_lib.settings.lr_schedule`) a run of b steps is a
constant-lr *trunk* to its branch point (1 − f)·b followed by a linear decay *branch* to b. One
trunk serves every budget, so the ladder trains, per run, one trunk to the largest branch point
and one branch per rung; the largest rung is the run itself. ``f`` = 0 (the constant schedule)
reads the trunk at each rung.

A trunk state is saved at every branch point, so a branch is a job that starts from one saved
state. Curves and checkpoints are written at log boundaries, so every branch point must be a
multiple of ``train.log_every``: then a branch continues the trunk's learning curve exactly as a
run trained with that schedule from scratch would have logged it. Rungs declared as fractions of
``train.steps``, and the compute-matched rungs, are therefore snapped to the nearest budget whose
branch point is on that grid (:func:`snap`).

The compute-matched rung of a mining strategy is the budget at which its cumulative training
FLOPs equal the baseline's at the full budget: steps × F_baseline / F_strategy, snapped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .budget import PAPER_SAMPLES  # noqa: F401 (the ladder's top: the paper's budget, re-exported)
from .lr_schedule import decay_start

LADDER_SCHEDULES = ("constant", "wsd")


@dataclass(frozen=True)
class Rung:
    """One budget of a run: ``steps`` of training, branching from the trunk at ``branch_point``;
    ``kind`` is ``ladder`` or ``compute_matched``."""

    steps: int
    branch_point: int
    kind: str = "ladder"


def decay_fraction(train: Mapping[str, Any]) -> float:
    """The decay fraction f of a (schema-completed) ``train`` block: 0 for the constant schedule."""
    schedule = train["lr_schedule"]
    return 0.0 if schedule["kind"] == "constant" else float(schedule["decay_fraction"])


def uses_trunk(train: Mapping[str, Any]) -> bool:
    """Whether runs of this ``train`` block are trained as a trunk and branches (constant or wsd)."""
    return train["lr_schedule"]["kind"] in LADDER_SCHEDULES


def on_grid(steps: int, f: float, log_every: int) -> bool:
    """Whether a rung of ``steps`` branches at a log boundary."""
    return decay_start(steps, f) % log_every == 0 and decay_start(steps, f) > 0


def snap(target: float, f: float, log_every: int) -> int:
    """The budget nearest ``target`` (ties: the smaller) whose branch point is a positive multiple of
    ``log_every``."""
    centre = max(int(round(target)), 1)
    for offset in range(0, 4 * log_every + 4):
        for steps in (centre - offset, centre + offset):
            if steps >= 1 and on_grid(steps, f, log_every):
                return steps
    raise ValueError(f"no budget near {target} branches at a multiple of log_every={log_every}")


def ladder_steps(steps: int, fractions: Sequence[float], f: float, log_every: int) -> list[int]:
    """The ladder's budgets (ascending, distinct) for rungs given as fractions of ``steps``; the
    full budget is ``steps`` itself."""
    budgets = {steps if fr == 1 else snap(fr * steps, f, log_every) for fr in fractions}
    return sorted(b for b in budgets if b <= steps)


def compute_matched_steps(steps: int, flops_baseline: float, flops_strategy: float, f: float, log_every: int) -> int:
    """The budget at which a strategy's cumulative FLOPs equal the baseline's at ``steps`` (snapped)."""
    return min(snap(steps * flops_baseline / flops_strategy, f, log_every), steps)


def grown_steps(steps: int, max_steps: int | None) -> list[int]:
    """The budgets ``comparison.ladder.until_stable`` may add, in the order it adds them: twice the
    largest so far (2·steps, 4·steps, ...) while within ``max_steps``; none without a maximum."""
    grown: list[int] = []
    while max_steps is not None and 2 * (grown[-1] if grown else steps) <= max_steps:
        grown.append(2 * (grown[-1] if grown else steps))
    return grown


def rungs_of(budgets: Sequence[int], f: float, kind: str = "ladder") -> list[Rung]:
    return [Rung(b, decay_start(b, f), kind) for b in budgets]
