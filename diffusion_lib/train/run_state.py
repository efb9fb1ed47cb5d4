"""One run of an engine: its initial state from its seed (:func:`seeded_member`), its state while it
trains (:class:`RunState`) and its resume checkpoint, what that holds and how a run is restored from it.

One checkpoint format for every run, alone or in a pack, and the format of every earlier trainer
(tests/train/test_engine.py loads the layout Trainer1D wrote): ``model`` (the energy network's weights,
``model.ebm.<name>``), ``ema`` (``step``, ``initted``, ``ema_model`` weights), ``optimizer`` in
``torch.optim.Adam``'s ``state_dict`` layout, ``rng`` (the run's noise generator as the global RNG's
state, per device), ``data`` (its stream), ``curve``, timers, ``diverged_at``, and the
``fingerprint`` that decides whether a rerun may continue from it.

Checkpoints: every ``checkpoint_every`` steps (and on SIGTERM/SIGINT, as SLURM sends before a
time-out or preemption) each run writes its own ``resume.ckpt`` atomically: weights, EMA, Adam,
step, curve, timers, its generator's and data stream's states. A run resumes from it in an engine
of any size; on the same machine and thread count it ends bitwise equal to an uninterrupted run.
The ``fingerprint`` covers what changes the trajectory except the total step count, so raising
``steps`` extends a run (constant or warm-up-only schedules).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..ired.data import ProblemStream
from ..ired.diffusion import GaussianDiffusion1D, build_diffusion
from ..ired.functional import draw_noise
from ..ired.seeding import derive_seed
from ..settings.mining import MiningConfig
from ..settings.run_config import TrainConfig
from . import checkpoint as ckpt
from .progress import Tracker
from .step import Stack

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ired-train-checkpoint-v2"  # v2: the EMA in its own layout (``ema``: step, initted, weights)


@dataclass
class RunState:
    """What one run of an engine owns besides its slice of the stacked weights: its config and
    fingerprint, its noise generator and data stream, where it checkpoints and reports, how far it
    is, its learning curve, the training time and FLOPs it has spent, and whether it diverged."""

    config: TrainConfig
    fingerprint: str
    generator: torch.Generator
    stream: ProblemStream
    resume_path: Path | None = None
    progress_path: Path | None = None  #: its heartbeat (``progress.json``)
    tracker: Tracker | None = None
    step: int = 0
    curve: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0
    train_flops: float = 0.0
    diverged_at: int | None = None
    resumed_from: int | None = None

    def draw(self, template: GaussianDiffusion1D, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """This run's next batch and noises, in the order (batch, t, ξ, ξ'), from its own stream and
        generator."""
        A, Y = next(self.stream)
        A, Y = A.to(dtype), Y.to(dtype)  # no-op unless the runs are not float32
        return (A, Y, *draw_noise(template, Y, self.generator))

    def watch(self, i: int, call: str, *args: Any) -> None:
        """Call this run's (run ``i``'s) tracker; one that fails is dropped with a warning, never
        failing training."""
        if self.tracker is None:
            return
        try:
            getattr(self.tracker, call)(*args)
        except Exception as exc:
            log.warning("run %d: its tracker failed in %s (%s: %s) and is off from now on", i, call,
                        type(exc).__name__, exc)
            self.tracker = None


def check_together(diffusions: Sequence[GaussianDiffusion1D], generators: Sequence[torch.Generator],
                   configs: Sequence[TrainConfig]) -> None:
    """Refuse runs that cannot train as one engine: one diffusion, generator and config each, configs
    that differ only in their seed, one mining config."""
    if not (len(diffusions) == len(generators) == len(configs)) or not diffusions:
        raise ValueError("the engine needs one diffusion, one generator and one config per run")
    if any(dataclasses.replace(c, seed=configs[0].seed) != configs[0] for c in configs[1:]):
        raise ValueError("the runs of one engine may differ only in their seed")
    if len({d.mining for d in diffusions}) != 1:
        raise ValueError("the runs of one engine must share one mining config")


def checkpoint(run: RunState, i: int, stack: Stack, names: list[str], device: torch.device) -> dict[str, Any]:
    """Run ``run`` (slice ``i`` of ``stack``, whose tensors are ``names``) as a resume checkpoint
    (the module docstring's format)."""
    keys, step, cfg = [f"model.ebm.{name}" for name in names], run.step, run.config
    groups = [{"lr": cfg.lr, "betas": tuple(cfg.betas), "eps": 1e-8, "weight_decay": 0,
               "amsgrad": False, "params": list(range(len(keys)))}]
    adam = {"state": {j: {"step": torch.tensor(float(step), dtype=torch.float32),
                          "exp_avg": stack.exp_avg[j][i].clone(), "exp_avg_sq": stack.exp_avg_sq[j][i].clone()}
                      for j in range(len(keys))} if step else {}, "param_groups": groups}
    gen = run.generator.get_state()
    if device.type == "cpu":
        rng = {"torch": gen}
    else:  # every visible device's state, this run's at the training device
        cuda = torch.cuda.get_rng_state_all()
        cuda[device.index or 0] = gen
        rng = {"torch": torch.get_rng_state(), "cuda": cuda}
    return {"format": CHECKPOINT_FORMAT, "fingerprint": run.fingerprint, "step": step,
            "model": {k: p[i].clone() for k, p in zip(keys, stack.params)},
            "ema": {"format": "device-ema-v1", "step": step, "initted": step > 0,
                    "ema_model": {k: p[i].clone() for k, p in zip(keys, stack.ema)}},
            "optimizer": adam, "rng": rng, "data": run.stream.state_dict(), "curve": run.curve,
            "train_seconds": run.train_seconds, "train_cpu_seconds": run.train_cpu_seconds,
            "train_flops": run.train_flops, "diverged_at": run.diverged_at}


@torch.no_grad()
def restore(run: RunState, i: int, stack: Stack, names: list[str], device: torch.device, state: dict[str, Any]
            ) -> None:
    """Restore ``run`` (slice ``i`` of ``stack``) from a checkpoint in this format, whoever wrote it."""
    if int(state["ema"]["step"]) != int(state["step"]):
        raise ValueError("checkpoint's EMA counter differs from its step (not a training checkpoint)")
    adam = state["optimizer"]["state"]
    for j, key in enumerate(f"model.ebm.{name}" for name in names):
        stack.params[j][i].copy_(state["model"][key])
        stack.ema[j][i].copy_(state["ema"]["ema_model"][key])
        stack.exp_avg[j][i].copy_(adam[j]["exp_avg"] if j in adam else 0)
        stack.exp_avg_sq[j][i].copy_(adam[j]["exp_avg_sq"] if j in adam else 0)
    rng, index = state["rng"], device.index or 0
    if device.type == "cpu":
        run.generator.set_state(rng["torch"].cpu())
    elif len(rng.get("cuda", [])) > index:
        run.generator.set_state(rng["cuda"][index].cpu())
    else:
        log.warning("run %d: its checkpoint holds no RNG state of %s (written on another device); its "
                    "noise continues from a fresh generator", i, device)
    run.stream.load_state_dict(state["data"])
    run.step = int(state["step"])
    run.curve = list(state["curve"])
    run.train_seconds = float(state["train_seconds"])
    run.train_cpu_seconds = float(state.get("train_cpu_seconds", 0.0))
    run.train_flops = float(state.get("train_flops", 0.0))
    run.diverged_at = state.get("diverged_at")


def load_resume(path: str | Path, fingerprint: str, steps: int) -> dict[str, Any] | None:
    """The usable resume checkpoint at ``path`` (see :func:`checkpoint.load_latest`), or None;
    one beyond ``steps`` is not usable (the run starts over)."""
    state = ckpt.load_latest(path, fingerprint, log=log.warning, format=CHECKPOINT_FORMAT)
    if state is not None and int(state["step"]) > steps:
        log.warning("checkpoint %s is at step %d, beyond the requested %d steps; starting over",
                    path, state["step"], steps)
        return None
    return state


def save_all(runs: Sequence[RunState], stack: Stack, names: list[str], device: torch.device) -> None:
    """Write every run's resume checkpoint (atomically; a run without a resume path writes none)."""
    for i, run in enumerate(runs):
        if run.resume_path is not None:
            ckpt.atomic_save(checkpoint(run, i, stack, names, device), run.resume_path)


def resume_all(runs: Sequence[RunState], stack: Stack, names: list[str], device: torch.device, steps: int) -> None:
    """Restore each run from its usable checkpoint, if that is past the state already loaded (a trunk's)."""
    for i, run in enumerate(runs):
        if run.resume_path is None:
            continue
        state = load_resume(run.resume_path, run.fingerprint, steps)
        if state is None or int(state["step"]) <= run.step:
            continue
        restore(run, i, stack, names, device, state)
        run.resumed_from = run.step
        log.info("run %d (seed %d) resumed from %s at step %d", i, run.config.seed, run.resume_path, run.step)


# --------------------------------------------------------------------------- a run's initial state from its seed
def seeded_model(seed: int, rank: int, timesteps: int, mining: MiningConfig | dict | None,
                 model: Mapping[str, Any] | None = None) -> GaussianDiffusion1D:
    """A run's initial model (architecture ``model``, method §3's by default): the global RNG seeded
    with ``derive_seed(seed, "init")``, the model built on the CPU (see :func:`seeded_member` for the
    noise generator that goes on from there)."""
    torch.manual_seed(derive_seed(seed, "init"))
    return build_diffusion(rank, timesteps, mining, model)


def seeded_member(seed: int, rank: int, timesteps: int, mining: MiningConfig | dict | None,
                  device: str | torch.device = "cpu", model: Mapping[str, Any] | None = None
                  ) -> tuple[GaussianDiffusion1D, torch.Generator]:
    """Run ``seed``'s initial model and its training-noise generator, as the workflow seeds them:
    the generator continues the init RNG (on a CPU, its state after the build; on a GPU, a device
    generator seeded alike). An engine given these trains the workflow's run ``seed``."""
    device = torch.device(device)
    diffusion = seeded_model(seed, rank, timesteps, mining, model)
    generator = torch.Generator(device=device)
    if device.type == "cpu":
        generator.set_state(torch.get_rng_state())
    else:
        generator.manual_seed(derive_seed(seed, "init"))
    return diffusion, generator
