"""Rules ``trunk``, ``branch`` and ``train``: one run, or a pack of runs of one strategy
(``train.pack``), from scratch, from a saved trunk state, or from their resume checkpoints.

With the budget ladder (:mod:`diffusion_lib.settings.ladder`) a run is trained in pieces: *trunk* jobs train
the constant-lr trunk from one branch point to the next and save its full training state there
(model, EMA, Adam, RNG, data stream, curve); *branch* jobs start from a trunk state and train the
decay to their budget, writing a model like a run does (the ``train`` rule is the full budget's
branch). A branch equals a run trained with that schedule from scratch (tests/settings/test_ladder.py).
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import pandas as pd
import torch

from ..train import checkpoint as ckpt
from ..ired.data import load_heldout
from ..train.curve import CURVE_COLUMNS
from ..ired.diffusion import MiningConfig
from .runtime import log, setup_torch, write_json
from ..settings.lr_schedule import decay_start
from ..settings.run_config import TrainConfig, train_config
from ..train.engine import Engine
from ..train.run_state import CHECKPOINT_FORMAT
from ..train.engine import TrainResult
from ..watch.job_tracking import JobTracking
from ..watch.mlflow_client import MlflowSettings


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


def load_trunk_state(path: str, cfg: TrainConfig, mining: MiningConfig, step: int | None = None) -> dict[str, Any]:
    """The trunk state saved at ``path``, checked to belong to the run of ``cfg`` (its constant-lr
    trunk's fingerprint) and, unless the trunk diverged, to be at ``step``."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    want = cfg.trunk(cfg.steps).fingerprint(mining)
    if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != want:
        raise ValueError(f"{path} is not a trunk state of this run (fingerprint {state.get('fingerprint')}, "
                         f"expected {want}); delete it to retrain the trunk")
    if step is not None and state.get("diverged_at") is None and int(state["step"]) != step:
        raise ValueError(f"{path} is at step {state['step']}, expected the branch point {step}")
    return state


def train_runs(*, val_path: str, runs: Sequence[Mapping[str, Any]], mining: Mapping[str, Any],
               train: Mapping[str, Any], rank: int, id_eps: float, implementation: Mapping[str, Any] | None = None,
               device: str = "auto", threads: int = 2, trunk_to: int | None = None, tensorboard: bool = False,
               mlflow: MlflowSettings | None = None) -> list[dict[str, Any]]:
    """Train ``runs`` of one strategy; each is a mapping with ``run``, ``seed``, ``resume_path`` and:

    * optionally ``steps`` (the budget of a rung; default ``train["steps"]``) and ``start`` (the
      path of the trunk state it starts from: the branch point for a branch, an earlier trunk
      state for a trunk piece);
    * for a trunk piece (``trunk_to`` set): ``state_path``, where the trunk's state at step
      ``trunk_to`` is saved, and ``sidecar_path``, the JSON file naming the state it started from;
    * otherwise ``model_path``, ``curve_path``, ``status_path``: the model (raw + EMA), learning
      curve and status file of the run (or rung) at its budget.

    The runs train in one :class:`~diffusion_lib.train.engine.Engine` (one run, or a pack), each writing
    exactly the files it writes alone.
    ``implementation`` overrides ``train`` with the values that choose how runs are computed, not
    what they compute (``checkpoint_every``, ``compile``, ``cuda_graphs``, ``pack``): the workflow
    passes them apart from the values that shape a run, so changing them never retrains.
    ``tensorboard`` writes each run's TensorBoard stream beside its resume checkpoint
    (:mod:`diffusion_lib.watch.job_tracking`); ``mlflow`` logs each run to its MLflow run
    (:mod:`diffusion_lib.watch.mlflow_client`; ``run["dir"]``, the run's folder, keeps its id).
    """
    dev = setup_torch(threads, device)
    train = {**train, **(implementation or {})}
    mining_cfg = MiningConfig.from_mapping(mining)
    val = load_heldout(val_path, rank=rank)
    configs = []
    for r in runs:
        cfg = train_config({**train, "steps": int(r.get("steps", train["steps"]))}, seed=r["seed"], rank=rank,
                           id_eps=id_eps)
        configs.append(cfg.trunk(trunk_to) if trunk_to is not None else cfg)
    starts = []
    for r, cfg in zip(runs, configs):
        at = None if trunk_to is not None else decay_start(cfg.steps, cfg.decay_fraction
                                                            if cfg.lr_schedule == "wsd" else 0.0)
        starts.append(load_trunk_state(r["start"], cfg, mining_cfg, at) if r.get("start") else None)
    what = "trunk to step" if trunk_to is not None else "budget"
    names = [r["run"] for r in runs]
    log.info("training %s (%s %d): %s; %s", f"run {names[0]} (seed {configs[0].seed})" if len(runs) == 1 else
             f"a pack of {len(runs)} runs ({', '.join(names)})", what, configs[0].steps, mining_cfg, configs[0])
    started = time.time()
    # what each run's key hashes (diffusion_lib.plan.layout): its identity at the full budget and the validation split
    identities = [{**train_config(train, seed=r["seed"], rank=rank, id_eps=id_eps).identity(mining_cfg), "val": val_path}
                  for r in runs]
    with JobTracking(runs, full_steps=int(train["steps"]), tensorboard=tensorboard, mlflow=mlflow, params=identities,
                     tags={"mode": mining_cfg.mode, "torch": str(torch.__version__), "device": str(dev)}) as tracking:
        engine = Engine.seeded(configs, mining_cfg, val, device=dev, resume_paths=[r["resume_path"] for r in runs],
                               trackers=tracking.trackers)
        for i, (run, start) in enumerate(zip(runs, starts)):
            if start is not None:
                log.info("run %s starts from %s", run["run"], run["start"])
                engine.load_state(i, start)
        results = engine.train()
        statuses = []
        for i, (run, result, cfg) in enumerate(zip(runs, results, configs)):
            if trunk_to is not None:
                _save_trunk(run, engine.state(i), starts[i])
                statuses.append({"run": run["run"], "trunk_step": engine.runs[i].step, "diverged_at": engine.runs[i].diverged_at})
                tracking.finish(i, engine.runs[i].curve, [run["sidecar_path"]])
                continue
            raw, ema = engine.models(i)
            statuses.append(_finish(run, result, cfg, mining_cfg, dev, raw, ema, started,
                                    pack=names if len(runs) > 1 else ()))
            tracking.finish(i, result.curve, [run["curve_path"], run["status_path"]], result.status)
        for run in runs:  # only now: a kill while the outputs are written leaves every run resumable
            ckpt.remove(run["resume_path"])
    return statuses


def _save_trunk(run: Mapping[str, Any], state: dict[str, Any], start: Mapping[str, Any] | None) -> None:
    """Save a trunk state (atomically) and its sidecar: which state it continued (the workflow keeps
    that input when rungs are added later, so an existing trunk state never reruns)."""
    ckpt.atomic_save(state, run["state_path"])
    write_json({"run": run["run"], "step": int(state["step"]), "diverged_at": state.get("diverged_at"),
                "from": run.get("start") if start is not None else None},
               run["sidecar_path"])
    if state.get("diverged_at") is not None:
        log.error("run %s: the trunk DIVERGED at step %s; its branches will be marked diverged",
                  run["run"], state["diverged_at"])
