"""The scenarios of the engine's golden test (settings, digests, and how each is run with today's
engine), shared by the recorder (tests/golden/record_engine.py) and tests/train/test_engine_golden.py.
The golden file was first recorded at bf81f49 by the engines the one engine replaced."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from diffusion_lib.ired.data import ProblemStream
from diffusion_lib.settings.run_config import TrainConfig

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


SCENARIOS = [f"{k}-{m}" for m in MINING for k in ("solo", "pack")] + [
    "solo-resume", "pack-resume", "solo-diverges", "pack-diverges"]


def train(mode: str, seeds, resume=None, nan_at=None) -> dict:
    """Runs ``seeds`` of ``mode`` trained together by today's engine, as digests, curves and results."""
    from diffusion_lib.train.engine import Engine

    configs = [dataclasses.replace(CFG, seed=s) for s in seeds]
    engine = Engine.seeded(configs, MINING[mode], None, resume_paths=resume, progress=False)
    for stream, at in zip([run.stream for run in engine.runs], nan_at or [-1] * len(seeds)):
        stream.__class__ = NaNStream
        stream.nan_at = at
    results = engine.train()
    models = [engine.models(i) for i in range(len(seeds))]
    return {"raw": [digest(raw) for raw, _ in models], "ema": [digest(ema) for _, ema in models],
            "curves": [curve_table(r.curve) for r in results], "results": [result_record(r) for r in results]}


def scenario(name: str, tmp: Path) -> dict:
    """One scenario of :data:`SCENARIOS` run now (``tmp``: where its checkpoints go)."""
    kind, what = name.split("-", 1)
    seeds = (0,) if kind == "solo" else SEEDS
    if what in MINING:
        return train(what, seeds)
    if what == "resume":
        mode, seeds = ("adversarial", (1,)) if kind == "solo" else ("random", SEEDS)
        paths = [tmp / f"{s}.ckpt" for s in seeds]
        train(mode, seeds, resume=paths)
        return train(mode, seeds, resume=paths)
    if kind == "solo":
        return train("adversarial", (2,), nan_at=[5])
    return train("adversarial", SEEDS, nan_at=[-1, 5, -1])
