"""Comparing two float32 training trajectories that should be one computed two ways.

Adam divides each weight's moment by its root mean square, so a weight whose gradient is at rounding
level moves by up to ``lr`` a step in a direction the rounding chooses: two correct float32 ways of
computing one step (eager and a CUDA graph, a pack and its solo runs) then differ at a few such weights
by a few ``lr`` (seen on an H200, issue 33: 12–20 of 1.4M weights, up to 2.8e-4 after 12 steps at
lr 1e-3), and an elementwise tolerance fails on them. What is compared instead is the update itself:
the difference of the two trajectories' displacements relative to the displacement, which rounding
keeps near 1e-4 and a wrong step (another learning rate, a stale input, another seed) puts at 0.1–1.
"""
from __future__ import annotations

import torch

#: relative difference of the displacements w - w0 below which two trajectories are the same
SAME_UPDATE_RTOL = 1e-2


def update_difference(ours: torch.Tensor, theirs: torch.Tensor, start: torch.Tensor) -> float:
    """‖(ours − start) − (theirs − start)‖ / ‖theirs − start‖ for flattened weights."""
    return float((ours - theirs).double().norm() / (theirs - start).double().norm())


def assert_same_update(ours: torch.Tensor, theirs: torch.Tensor, start: torch.Tensor) -> None:
    """Two trajectories from ``start`` are one, computed two ways (see the module docstring)."""
    diff = update_difference(ours, theirs, start)
    assert diff < SAME_UPDATE_RTOL, f"the updates differ by {diff:.3g} of their size (allowed {SAME_UPDATE_RTOL})"
