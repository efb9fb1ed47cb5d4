"""Rule ``train``: one run (a mining config and a seed) from scratch or from its resume checkpoint."""
from __future__ import annotations

import time
from typing import Any, Mapping

import pandas as pd
import torch

from .. import checkpoint as ckpt
from ..data import load_heldout
from ..diffusion import MiningConfig, build_diffusion
from ..runtime import log, setup_torch, write_json
from ..seeding import derive_seed
from ..training import CURVE_COLUMNS, TrainConfig, Trainer1D


def train_config(train: Mapping[str, Any], *, seed: int, rank: int, id_eps: float) -> TrainConfig:
    """Map the config's ``train`` block (schema-validated) onto :class:`TrainConfig`."""
    ema = train.get("ema", {})
    schedule = train.get("lr_schedule", {})
    keys = {"steps", "batch_size", "lr", "grad_clip", "timesteps", "eval_every", "val_size", "val_inner_steps",
            "log_every", "checkpoint_every", "max_loss", "validate_raw", "compile", "cuda_graphs", "precision"}
    return TrainConfig(**{k: train[k] for k in keys if k in train}, betas=tuple(train.get("betas", (0.9, 0.99))),
                       lr_schedule=schedule.get("kind", "constant"), warmup_steps=schedule.get("warmup_steps", 0),
                       min_lr_ratio=schedule.get("min_lr_ratio", 0.0),
                       warmdown_fraction=schedule.get("warmdown_fraction", 0.5),
                       ema_decay=ema.get("decay", 0.995), ema_update_every=ema.get("update_every", 10),
                       ema_update_after_step=ema.get("update_after_step", 100), ema_power=ema.get("power", 2 / 3),
                       rank=rank, train_eps=id_eps, seed=seed)


def train_run(*, val_path: str, model_path: str, curve_path: str, status_path: str, resume_path: str,
              mining: Mapping[str, Any], train: Mapping[str, Any], seed: int, rank: int, id_eps: float,
              implementation: Mapping[str, Any] | None = None, run: str = "", device: str = "auto",
              threads: int = 2) -> dict[str, Any]:
    """Train one run; write the model (raw + EMA), the learning curve and a status file.

    ``implementation`` overrides ``train`` with the values that choose how the run is computed,
    not what it computes (``checkpoint_every``, ``compile``, ``cuda_graphs``): the workflow passes
    them apart from the values that shape the run, so changing them never retrains. ``run`` names
    the run (its directory) in the logs and the status file.
    """
    dev = setup_torch(threads, device)
    train = {**train, **(implementation or {})}
    cfg = train_config(train, seed=seed, rank=rank, id_eps=id_eps)
    mining_cfg = MiningConfig.from_mapping(mining)
    val = load_heldout(val_path, rank=rank)
    torch.manual_seed(derive_seed(seed, "init"))
    diffusion = build_diffusion(rank, cfg.timesteps, mining_cfg)
    log.info("training run %s (seed %d): %s; %s", run, seed, mining_cfg, cfg)
    trainer = Trainer1D(diffusion, cfg, val, device=dev, resume_path=resume_path)
    start = time.time()
    result = trainer.train()
    status = {"run": run, "seed": seed, "mode": mining_cfg.mode, "status": result.status,
              "diverged_at": result.diverged_at, "steps_done": result.steps_done, "steps": cfg.steps,
              "train_seconds": result.train_seconds, "seconds_per_step": result.seconds_per_step,
              "cpu_seconds_per_step": result.cpu_seconds_per_step, "flops_per_step": result.flops_per_step,
              # the time criterion's cost: CPU time on a CPU (robust to jobs sharing cores), wall time on a GPU
              "cost_seconds_per_step": result.cpu_seconds_per_step if dev.type == "cpu" else result.seconds_per_step,
              "resumed_from": result.resumed_from, "wall_seconds_this_attempt": time.time() - start,
              "device": str(dev), "threads": torch.get_num_threads(), "torch": str(torch.__version__)}
    ckpt.save_model(model_path, rank=rank, timesteps=cfg.timesteps, mining=mining_cfg.__dict__,
                    model=trainer.diffusion, ema=trainer.ema.ema_model, status=status)
    pd.DataFrame(result.curve, columns=CURVE_COLUMNS).to_csv(curve_path, index=False)
    write_json(status, status_path)
    ckpt.remove(resume_path)
    if result.status == "diverged":
        log.error("run %s DIVERGED at step %s; outputs are marked diverged", run, result.diverged_at)
    else:
        log.info("run %s completed: %d steps, %.1f s training (%.2f ms/step)", run, result.steps_done,
                 result.train_seconds, 1000 * result.seconds_per_step)
    return status
