"""What a job asks of a scheduler: time and memory.


Training's runtime follows from the work: ``steps`` over the measured ``steps_per_second`` of its
mining mode, times a safety ``margin``, times the attempt number, so a job that SLURM killed at
its time limit is resubmitted (``retries`` in the profile) with more time and resumes from its
checkpoint. A pack of m runs asks for ``1 + pack_member_cost · (m - 1)`` times a run's time and
``pack_member_mem_mb`` more memory per extra run. Memory is declared per rule. Profiles then
carry only what a site decides (account, partition, GPU type).
"""
from __future__ import annotations

import math
import shutil
from typing import Any, Callable, Iterable, Mapping


PRIORITY = {"adversarial": 2, "random": 1, "none": 0}  # longest training first


def train_runtime(cfg: Mapping[str, Any], mode: str, attempt: int = 1, members: int = 1, share: float = 1.0) -> int:
    """Minutes to request for a training job of ``members`` runs of ``mode`` on attempt ``attempt``
    that trains ``share`` of ``train.steps`` (a trunk piece or a decay branch: less than 1)."""
    res = cfg["resources"]
    expected = share * cfg["train"]["steps"] / res["steps_per_second"][mode] / 60
    expected *= 1 + res["pack_member_cost"] * (members - 1)
    return max(res["min_runtime"], math.ceil(expected * res["margin"])) * attempt


def train_mem_mb(cfg: Mapping[str, Any], members: int = 1) -> int:
    """Memory (MB) to request for a training job of ``members`` runs."""
    res = cfg["resources"]
    return res["train_mem_mb"] + res["pack_member_mem_mb"] * (members - 1)


def evaluate_runtime(cfg: Mapping[str, Any], attempt: int = 1) -> int:
    """Minutes to request for one evaluation job on attempt ``attempt``."""
    res = cfg["resources"]
    return max(res["min_runtime"], res["evaluate_runtime"]) * attempt


def inherit_profile_settings(resource_settings: Any, rules: Iterable[tuple[str, str]]) -> bool:
    """Give each pack rule ``(name, kind)`` the threads and resources a profile sets for the
    rule of its kind (``trunk``, ``branch``), else for the ``train`` rule (set-threads, set-resources:
    profiles/slurm), where the profile sets none for the pack rule itself: a pack rule is the same
    kind of job under another name, and Snakemake has no rule-name patterns for these settings.
    ``resource_settings`` is Snakemake's ``workflow.resource_settings``; False when this Snakemake
    does not expose the parsed settings (the pack rules then keep their own values)."""
    try:
        resources = resource_settings._parsed_overwrite_resources
        threads = resource_settings._parsed_overwrite_threads
    except AttributeError:
        return False
    for rule, kind in rules:
        for source in dict.fromkeys((kind, "train")):  # its kind's rule first, then train
            if source in resources:
                resources.setdefault(rule, resources[source])
            if source in threads:
                threads.setdefault(rule, threads[source])
    return True


def gpus_per_job(device: str, which: Callable[[str], str | None] = shutil.which) -> int:
    """The GPUs a training or evaluation job holds (its ``gpu`` resource): 1 on a CUDA device, or
    with ``device: auto`` on a machine with ``nvidia-smi``; 0 otherwise."""
    return int(device.startswith("cuda") or (device == "auto" and which("nvidia-smi") is not None))
