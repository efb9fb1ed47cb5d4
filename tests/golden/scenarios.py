"""The scenarios of the engine's golden test (settings and digests), shared by the recorder
(tests/golden/record_engine.py, run at bf81f49) and tests/test_engine_golden.py."""
from __future__ import annotations

import torch

from diffusion_lib.data import ProblemStream
from diffusion_lib.run_config import TrainConfig

RANK, SEEDS = 3, (0, 1, 2)
MINING = {"none": {"mode": "none"}, "random": {"mode": "random"},
          "adversarial": {"mode": "adversarial", "opt_steps": 2, "mine_every": 2}}
CFG = TrainConfig(steps=12, batch_size=16, lr=1e-3, grad_clip=0.05, rank=RANK, timesteps=10, log_every=4,
                  eval_every=4, ema_update_every=2, ema_update_after_step=3, measure_flops=False, checkpoint_every=4,
                  lr_schedule="wsd", warmup_steps=2, decay_fraction=0.25, min_lr_ratio=0.1, validate_raw=True,
                  val_size=8, val_inner_steps=2)
CURVE_KEYS = ("step", "lr", "loss", "loss_mse", "loss_energy", "energy_gap", "grad_norm", "clip_frac", "mine_accept",
              "val_mse_ema", "val_mse_raw")


class NaNStream(ProblemStream):
    """A stream whose ``nan_at``-th batch (0-based) holds NaN problems."""

    nan_at = -1
    calls = 0

    def __next__(self):
        A, Y = super().__next__()
        if self.calls == self.nan_at:
            A = torch.full_like(A, float("nan"))
        self.calls += 1
        return A, Y


def digest(model: torch.nn.Module) -> torch.Tensor:
    rows = []
    for p in model.model.ebm.parameters():
        flat = p.detach().reshape(-1).double()
        idx = torch.linspace(0, flat.numel() - 1, 16).long()
        rows.append(torch.cat([flat.sum()[None], flat.pow(2).sum()[None], flat[idx]]))
    return torch.cat(rows)


def curve_table(curve) -> torch.Tensor:
    return torch.tensor([[float(row.get(k, float("nan"))) for k in CURVE_KEYS] for row in curve], dtype=torch.float64)


def result_record(result) -> tuple:
    return (result.status, result.steps_done, result.diverged_at, result.resumed_from)


def skeleton(obj):
    """``obj`` (a checkpoint) with every tensor replaced by ``("tensor", shape, dtype)``: its layout,
    small enough to keep in the repository."""
    if isinstance(obj, torch.Tensor):
        return ("tensor", tuple(obj.shape), str(obj.dtype))
    if isinstance(obj, dict):
        return {k: skeleton(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(skeleton(v) for v in obj)
    return obj
