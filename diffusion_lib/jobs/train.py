"""Rule ``train``: one run, or a pack of runs of one strategy (``train.pack``), from scratch or from
their resume checkpoints."""
from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import pandas as pd
import torch

from .. import checkpoint as ckpt
from ..data import load_heldout
from ..curve import CURVE_COLUMNS
from ..diffusion import MiningConfig
from ..runtime import log, setup_torch, write_json
from ..training import TrainConfig, Trainer1D, TrainResult, seeded_model


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


def _finish(run: Mapping[str, Any], result: TrainResult, cfg: TrainConfig, mining: MiningConfig, dev: torch.device,
            model: torch.nn.Module, ema: torch.nn.Module, started: float, pack: Sequence[str] = ()) -> dict[str, Any]:
    """Write one run's model file (raw + EMA), learning curve and status (the caller then drops
    its resume checkpoint)."""
    status = {"run": run["run"], "seed": run["seed"], "mode": mining.mode, "status": result.status,
              "diverged_at": result.diverged_at, "steps_done": result.steps_done, "steps": cfg.steps,
              "train_seconds": result.train_seconds, "seconds_per_step": result.seconds_per_step,
              "cpu_seconds_per_step": result.cpu_seconds_per_step, "flops_per_step": result.flops_per_step,
              # the time criterion's cost: CPU time on a CPU (robust to jobs sharing cores), wall time on a GPU
              "cost_seconds_per_step": result.cpu_seconds_per_step if dev.type == "cpu" else result.seconds_per_step,
              "resumed_from": result.resumed_from, "wall_seconds_this_attempt": time.time() - started,
              "pack": list(pack), "device": str(dev), "threads": torch.get_num_threads(),
              "torch": str(torch.__version__)}
    ckpt.save_model(run["model_path"], rank=cfg.rank, timesteps=cfg.timesteps, mining=mining.__dict__, model=model,
                    ema=ema, status=status)
    pd.DataFrame(result.curve, columns=CURVE_COLUMNS).to_csv(run["curve_path"], index=False)
    write_json(status, run["status_path"])
    if result.status == "diverged":
        log.error("run %s DIVERGED at step %s; outputs are marked diverged", run["run"], result.diverged_at)
    else:
        log.info("run %s completed: %d steps, %.1f s training (%.2f ms/step)", run["run"], result.steps_done,
                 result.train_seconds, 1000 * result.seconds_per_step)
    return status


def train_runs(*, val_path: str, runs: Sequence[Mapping[str, Any]], mining: Mapping[str, Any],
               train: Mapping[str, Any], rank: int, id_eps: float, implementation: Mapping[str, Any] | None = None,
               device: str = "auto", threads: int = 2) -> list[dict[str, Any]]:
    """Train ``runs`` (each: ``run``, ``seed``, ``model_path``, ``curve_path``, ``status_path``,
    ``resume_path``) of one strategy; write each one's model, learning curve and status file.

    One run trains alone (:class:`Trainer1D`); several train as a pack
    (:class:`~diffusion_lib.pack.PackTrainer`), each writing exactly the files it writes alone.
    ``implementation`` overrides ``train`` with the values that choose how runs are computed, not
    what they compute (``checkpoint_every``, ``compile``, ``cuda_graphs``, ``pack``): the workflow
    passes them apart from the values that shape a run, so changing them never retrains.
    """
    dev = setup_torch(threads, device)
    train = {**train, **(implementation or {})}
    mining_cfg = MiningConfig.from_mapping(mining)
    val = load_heldout(val_path, rank=rank)
    configs = [train_config(train, seed=r["seed"], rank=rank, id_eps=id_eps) for r in runs]
    started = time.time()
    if len(runs) == 1:
        (run,), (cfg,) = runs, configs
        diffusion = seeded_model(cfg.seed, rank, cfg.timesteps, mining_cfg)
        log.info("training run %s (seed %d): %s; %s", run["run"], cfg.seed, mining_cfg, cfg)
        trainer = Trainer1D(diffusion, cfg, val, device=dev, resume_path=run["resume_path"])
        result = trainer.train()
        status = _finish(run, result, cfg, mining_cfg, dev, trainer.diffusion, trainer.ema.ema_model, started)
        ckpt.remove(run["resume_path"])
        return [status]
    from ..pack import PackTrainer, init_member  # local: only packs need it

    names = [r["run"] for r in runs]
    members = [init_member(cfg.seed, rank, cfg.timesteps, mining_cfg, dev) for cfg in configs]
    log.info("training a pack of %d runs (%s): %s; %s", len(runs), ", ".join(names), mining_cfg, configs[0])
    trainer = PackTrainer([d for d, _ in members], [g for _, g in members], configs, val, device=dev,
                          resume_paths=[r["resume_path"] for r in runs])
    results = trainer.train()
    statuses = []
    for i, (run, result, cfg) in enumerate(zip(runs, results, configs)):
        raw, ema = trainer.member_models(i)
        statuses.append(_finish(run, result, cfg, mining_cfg, dev, raw, ema, started, pack=names))
    for run in runs:  # only now: a kill while the outputs are written leaves every run resumable
        ckpt.remove(run["resume_path"])
    return statuses
