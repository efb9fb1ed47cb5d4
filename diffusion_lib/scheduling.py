"""What a job asks of a scheduler: runtime and memory, from the config's ``resources`` block.

Training's runtime follows from the work: ``steps`` over the measured ``steps_per_second`` of its
mining mode, times a safety ``margin``, times the attempt number, so a job that SLURM killed at
its time limit is resubmitted (``retries`` in the profile) with more time and resumes from its
checkpoint. Memory is declared per rule. Profiles then carry only what a site decides (account,
partition, GPU type).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

PRIORITY = {"adversarial": 2, "random": 1, "none": 0}  # longest training first


def train_runtime(cfg: Mapping[str, Any], mode: str, attempt: int = 1) -> int:
    """Minutes to request for one training run of ``mode`` on attempt ``attempt`` (1, 2, ...)."""
    res = cfg["resources"]
    expected = cfg["train"]["steps"] / res["steps_per_second"][mode] / 60
    return max(res["min_runtime"], math.ceil(expected * res["margin"])) * attempt


def evaluate_runtime(cfg: Mapping[str, Any], attempt: int = 1) -> int:
    """Minutes to request for one evaluation job on attempt ``attempt``."""
    res = cfg["resources"]
    return max(res["min_runtime"], res["evaluate_runtime"]) * attempt
