"""Learning-curve rows: what a log interval of training becomes in ``curve.csv``.

Written by :class:`~diffusion_lib.train.engine.Engine` for every run it trains, so a run alone and a
run in a pack write the same columns with the same meaning.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from ..ired.data import ProblemStream

CURVE_COLUMNS = ["step", "lr", "loss", "loss_mse", "loss_energy", "energy_pos", "energy_neg", "energy_gap",
                 "saturated_frac", "mine_accept", "grad_norm", "clip_frac", "train_seconds", "train_cpu_seconds",
                 "train_flops", "steps_per_s", "val_mse_ema", "val_mse_raw"]
#: Loss parts averaged per step over a log interval (the rest of a row is computed, see :func:`curve_row`).
MEAN_PARTS = ("loss", "loss_mse", "loss_energy", "energy_pos", "energy_neg", "energy_gap", "saturated_frac",
              "grad_norm", "clip_frac")


def interval_means(totals: Mapping[str, float], count: int) -> dict[str, float]:
    """Per-step means of the loss parts summed over ``count`` steps, and the mining acceptance rate
    (accepted / proposed opt steps) when the interval had mining steps."""
    means = {k: totals[k] / count if count else math.nan for k in MEAN_PARTS if k in totals}
    if totals.get("mine_proposed"):
        means["mine_accept"] = totals["mine_accepted"] / totals["mine_proposed"]
    return means


def curve_row(step: int, lr: float, means: Mapping[str, float], count: int, seconds: float,
              metrics: Mapping[str, float], train_seconds: float, train_cpu_seconds: float,
              train_flops: float) -> dict[str, Any]:
    """One row: the interval's means (:func:`interval_means`), cumulative training time and FLOPs,
    the interval's step rate (``count`` steps in ``seconds``) and the validation ``metrics``."""
    row: dict[str, Any] = {"step": step, "lr": lr}
    row.update({key: means.get(key, math.nan) for key in MEAN_PARTS})
    row["mine_accept"] = means.get("mine_accept", math.nan)
    row["train_seconds"] = train_seconds
    row["train_cpu_seconds"] = train_cpu_seconds
    row["train_flops"] = train_flops if train_flops else math.nan
    row["steps_per_s"] = count / seconds if seconds > 0 else math.nan
    row["val_mse_ema"] = metrics.get("val_mse_ema", math.nan)
    row["val_mse_raw"] = metrics.get("val_mse_raw", math.nan)
    return row


def accumulate(sums: dict[str, torch.Tensor], parts: dict[str, torch.Tensor]) -> None:
    """Add one step's loss parts to the interval sums (device tensors: no host read)."""
    for key, value in parts.items():
        sums[key] = sums[key] + value if key in sums else value.clone()


def read_interval(sums: dict[str, torch.Tensor], counts: list[int], first_bad: torch.Tensor,
                  streams: Sequence[ProblemStream]) -> tuple[list[int], list[float], list[dict[str, float]]]:
    """Per run, in one read from the device: the first diverged step (-1 if none), its data stream's
    largest residual since the last read (then reset), and the interval means of the loss parts."""
    keys = sorted(sums)
    residuals = torch.stack([s.max_residual for s in streams])
    table = torch.stack([first_bad.double(), residuals.double(), *(sums[k].double() for k in keys)]).tolist()
    for s in streams:
        s.max_residual = torch.zeros_like(s.max_residual)
    means = [interval_means({k: row[i] for k, row in zip(keys, table[2:])}, counts[i]) for i in range(len(counts))]
    return [int(v) for v in table[0]], table[1], means
