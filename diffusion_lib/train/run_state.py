"""A run's resume checkpoint: what it holds and how a run of an engine is restored from it.

One format for every run, alone or in a pack, and the format of every earlier trainer (tests/
test_engine.py loads the layout Trainer1D wrote): ``model`` (the energy network's weights,
``model.ebm.<name>``), ``ema`` (``step``, ``initted``, ``ema_model`` weights), ``optimizer`` in
``torch.optim.Adam``'s ``state_dict`` layout, ``rng`` (the run's noise generator as the global RNG's
state, per device), ``data`` (its stream), ``curve``, timers, ``diverged_at``, and the
``fingerprint`` that decides whether a rerun may continue from it.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from ..training import CHECKPOINT_FORMAT

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)


def run_state(engine: "Engine", i: int) -> dict[str, Any]:
    """Run ``i`` of ``engine`` as a resume checkpoint (the module docstring's format)."""
    s, keys, step = engine.stack, [f"model.ebm.{name}" for name in engine.names], engine.steps[i]
    groups = [{"lr": engine.config.lr, "betas": tuple(engine.config.betas), "eps": 1e-8, "weight_decay": 0,
               "amsgrad": False, "params": list(range(len(keys)))}]
    adam = {"state": {j: {"step": torch.tensor(float(step), dtype=torch.float32),
                          "exp_avg": s.exp_avg[j][i].clone(), "exp_avg_sq": s.exp_avg_sq[j][i].clone()}
                      for j in range(len(keys))} if step else {}, "param_groups": groups}
    gen = engine.generators[i].get_state()
    if engine.device.type == "cpu":
        rng = {"torch": gen}
    else:  # every visible device's state, this run's at the training device
        cuda = torch.cuda.get_rng_state_all()
        cuda[engine.device.index or 0] = gen
        rng = {"torch": torch.get_rng_state(), "cuda": cuda}
    return {"format": CHECKPOINT_FORMAT, "fingerprint": engine.fingerprints[i], "step": step,
            "model": {k: p[i].clone() for k, p in zip(keys, s.params)},
            "ema": {"format": "device-ema-v1", "step": step, "initted": step > 0,
                    "ema_model": {k: p[i].clone() for k, p in zip(keys, s.ema)}},
            "optimizer": adam, "rng": rng, "data": engine.streams[i].state_dict(), "curve": engine.curves[i],
            "train_seconds": engine.train_seconds[i], "train_cpu_seconds": engine.train_cpu_seconds[i],
            "train_flops": engine.train_flops[i], "diverged_at": engine.diverged_at[i]}


@torch.no_grad()
def load_run_state(engine: "Engine", i: int, state: dict[str, Any]) -> None:
    """Restore run ``i`` of ``engine`` from a checkpoint in this format, whoever wrote it."""
    if int(state["ema"]["step"]) != int(state["step"]):
        raise ValueError("checkpoint's EMA counter differs from its step (not a training checkpoint)")
    s, adam = engine.stack, state["optimizer"]["state"]
    for j, key in enumerate(f"model.ebm.{name}" for name in engine.names):
        s.params[j][i].copy_(state["model"][key])
        s.ema[j][i].copy_(state["ema"]["ema_model"][key])
        s.exp_avg[j][i].copy_(adam[j]["exp_avg"] if j in adam else 0)
        s.exp_avg_sq[j][i].copy_(adam[j]["exp_avg_sq"] if j in adam else 0)
    rng, index = state["rng"], engine.device.index or 0
    if engine.device.type == "cpu":
        engine.generators[i].set_state(rng["torch"].cpu())
    elif len(rng.get("cuda", [])) > index:
        engine.generators[i].set_state(rng["cuda"][index].cpu())
    else:
        log.warning("run %d: its checkpoint holds no RNG state of %s (written on another device); its "
                    "noise continues from a fresh generator", i, engine.device)
    engine.streams[i].load_state_dict(state["data"])
    engine.steps[i] = int(state["step"])
    engine.curves[i] = list(state["curve"])
    engine.train_seconds[i] = float(state["train_seconds"])
    engine.train_cpu_seconds[i] = float(state.get("train_cpu_seconds", 0.0))
    engine.train_flops[i] = float(state.get("train_flops", 0.0))
    engine.diverged_at[i] = state.get("diverged_at")
