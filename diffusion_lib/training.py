"""Training (SPEC §4): Adam, grad-norm clipping, EMA, validation, resumable checkpoints, divergence.

:class:`Trainer1D` trains a :class:`~diffusion_lib.diffusion.GaussianDiffusion1D` on an infinite
seeded :class:`~diffusion_lib.data.ProblemStream`. Every ``log_every`` steps it appends a
learning-curve row (mean loss parts over the interval, training wall time, and at ``eval_every``
steps the validation MSE of the EMA and of the raw model on a fixed held-out subset).

Resuming: every ``checkpoint_every`` steps (and on SIGTERM/SIGINT, as sent by SLURM before a
time-out or preemption) it writes a checkpoint atomically: model, EMA, optimizer, step, curve
rows, timers and every RNG state (global torch CPU/CUDA and the data stream's). A rerun with the
same configuration continues from it and, on the same machine and thread count, ends bitwise
identical to an uninterrupted run. The checkpoint's ``fingerprint`` covers everything that changes
the trajectory except the total step count, so raising ``steps`` extends a run instead of
restarting it.

Divergence: a loss that is NaN/inf or above ``max_loss`` stops the run at the next log boundary
(checked on the device, one host sync per log interval); the result is marked ``diverged`` with the
first bad step, and the outputs are still written so the report can count the run as unstable.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .compute import step_flops
from .curve import curve_row, interval_means
from .data import Heldout, ProblemStream
from .ema import DeviceEMA
from .diffusion import GaussianDiffusion1D, MiningConfig, build_diffusion  # noqa: F401 (re-exported)
from .evaluation import predict
from .seeding import derive_seed, rng_state, set_rng_state
from .signals import StopRequest
from .step import TrainStep, optimization_step  # noqa: F401 (re-exported)
from .progress import duration_text, eta_seconds, heartbeat_path, recent_rate, write_heartbeat
from .run_config import (IMPLEMENTATION_KEYS, LR_SCHEDULES, PRECISIONS, TrainConfig,  # noqa: F401 (re-exported)
                         train_config)

log = logging.getLogger("diffusion_lib.training")

CHECKPOINT_FORMAT = "ired-train-checkpoint-v2"  # v2: the EMA is a DeviceEMA


@dataclass
class TrainResult:
    """What a finished (or diverged) run reports."""

    status: str  # "completed" | "diverged"
    steps_done: int
    diverged_at: int | None
    train_seconds: float
    resumed_from: int | None
    curve: list[dict[str, Any]] = field(repr=False, default_factory=list)
    train_cpu_seconds: float = 0.0
    train_flops: float = 0.0

    @property
    def seconds_per_step(self) -> float:
        """Wall seconds per training step (validation and checkpointing excluded)."""
        return self.train_seconds / max(self.steps_done, 1)

    @property
    def cpu_seconds_per_step(self) -> float:
        """CPU (process) seconds per step: insensitive to other jobs sharing the CPU."""
        return self.train_cpu_seconds / max(self.steps_done, 1)

    @property
    def flops_per_step(self) -> float:
        """Profiler-counted matmul FLOPs per training step (NaN when not measured)."""
        return self.train_flops / self.steps_done if self.steps_done and self.train_flops else math.nan


def accumulate(sums: dict[str, torch.Tensor], parts: dict[str, torch.Tensor]) -> None:
    """Add one step's loss parts to the interval sums (device tensors: no host read)."""
    for key, value in parts.items():
        sums[key] = sums[key] + value if key in sums else value.clone()


def elapsed(device: torch.device, wall_start: float, cpu_start: float) -> tuple[float, float]:
    """Wall and CPU seconds since a log interval began, after the device finished its queued work
    (the interval's one wait)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall_start, time.process_time() - cpu_start


def apply_precision(precision: str, device: torch.device) -> None:
    """``train.precision`` on ``device``: TF32 matmuls allowed or not on CUDA; no effect on a CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    elif precision == "tf32":
        log.info("train.precision tf32 has no effect on %s (float32 matmuls)", device)


def seeded_model(seed: int, rank: int, timesteps: int, mining: MiningConfig | dict | None) -> GaussianDiffusion1D:
    """A run's initial model: the global RNG seeded with ``derive_seed(seed, "init")``, the model
    built on the CPU. The global RNG then goes on as the run's training noise (on a GPU, the
    device's generator, seeded by the same call)."""
    torch.manual_seed(derive_seed(seed, "init"))
    return build_diffusion(rank, timesteps, mining)


def run_trainer(cfg: "TrainConfig", mining: MiningConfig | dict | None, val_set: Heldout | None = None,
                device: str | torch.device = "cpu", resume_path: str | Path | None = None,
                progress: bool | None = None) -> "Trainer1D":
    """The trainer of the run ``cfg`` describes, seeded as the workflow seeds run ``cfg.seed``
    (:func:`seeded_model`, then the data stream from ``derive_seed(cfg.seed, "train-data")``): a
    script's seed k trains the workflow's seed k."""
    return Trainer1D(seeded_model(cfg.seed, cfg.rank, cfg.timesteps, mining), cfg, val_set, device=device,
                     resume_path=resume_path, progress=progress)


def load_resume(path: str | Path, fingerprint: str, steps: int) -> dict[str, Any] | None:
    """The usable resume checkpoint at ``path`` (see :func:`checkpoint.load_latest`), or None;
    one beyond ``steps`` is not usable (the run starts over)."""
    state = ckpt.load_latest(path, fingerprint, log=log.warning, format=CHECKPOINT_FORMAT)
    if state is not None and int(state["step"]) > steps:
        log.warning("checkpoint %s is at step %d, beyond the requested %d steps; starting over",
                    path, state["step"], steps)
        return None
    return state


def training_step_flops(diffusion: GaussianDiffusion1D, config: TrainConfig, device: torch.device
                        ) -> dict[bool, float]:
    """FLOPs of a mining and of an ordinary training step (see :func:`compute.step_flops`); {}
    when ``config.measure_flops`` is off."""
    if not config.measure_flops:
        return {}
    kinds = {True, False} if diffusion.mining.mines else {False}
    flops = {k: step_flops(diffusion, config.batch_size, config.rank, config.train_eps, k, device) for k in kinds}
    log.info("training FLOPs per step: %s", {("mining" if k else "plain"): f"{v:.4g}" for k, v in flops.items()})
    return flops


def heldout_mse(diffusion: GaussianDiffusion1D, heldout: Heldout, n_inner: int, seed: int = 0,
                batch_size: int = 1024) -> float:
    """MSE of ``diffusion.sample`` on ``heldout`` (fixed sampling noise from ``seed``)."""
    pred, _ = predict(diffusion, heldout, n_inner, batch_size=batch_size, seed=seed)
    return (pred - heldout.Y.cpu()).pow(2).mean().item()


class Trainer1D:
    """Train ``diffusion`` with ``config``; ``val_set`` is the fixed ID validation set.

    ``resume_path`` (optional) is the checkpoint file; keep it outside a workflow's declared
    outputs. ``progress`` shows a tqdm bar (None: only on a TTY).
    """

    def __init__(self, diffusion: GaussianDiffusion1D, config: TrainConfig, val_set: Heldout | None = None,
                 device: str | torch.device = "cpu", resume_path: str | Path | None = None,
                 progress: bool | None = None):
        self.config = config
        self.device = torch.device(device)
        self.diffusion = diffusion.to(self.device)
        self.dtype = next(diffusion.parameters()).dtype
        self.val_set = val_set.subset(config.val_size).to(self.device) if val_set is not None else None
        self.resume_path = Path(resume_path) if resume_path else None
        self.progress_path = heartbeat_path(self.resume_path)  # progress.json, rewritten at each log row
        self.progress = progress
        graphs = config.cuda_graphs and self.device.type == "cuda"
        if config.cuda_graphs and not graphs:
            log.warning("train.cuda_graphs needs a CUDA device; training on %s without graphs", self.device)
        apply_precision(config.precision, self.device)
        # a CUDA graph replays a capturable Adam whose learning rate lives on the device
        lr = torch.tensor(config.lr, device=self.device) if graphs else config.lr
        self.optimizer = torch.optim.Adam(self.diffusion.parameters(), lr=lr, betas=tuple(config.betas),
                                          capturable=graphs)
        self.train_step = TrainStep(self.diffusion, self.optimizer, config.grad_clip, compile=config.compile,
                                    cuda_graphs=graphs)
        self.ema = DeviceEMA(self.diffusion, beta=config.ema_decay, update_every=config.ema_update_every,
                             update_after_step=config.ema_update_after_step, power=config.ema_power)
        self.stream = ProblemStream(config.batch_size, config.rank, config.train_eps,
                                    derive_seed(config.seed, "train-data"), self.device)
        self.fingerprint = config.fingerprint(diffusion.mining)
        self.step = 0
        self.curve: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self.train_cpu_seconds = 0.0
        self.train_flops = 0.0
        self.resumed_from: int | None = None
        self.diverged_at: int | None = None
        self._step_flops: dict[bool, float] = {}

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, "step": self.step,
                "model": self.diffusion.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "rng": rng_state(), "data": self.stream.state_dict(),
                "curve": self.curve, "train_seconds": self.train_seconds, "train_cpu_seconds": self.train_cpu_seconds,
                "train_flops": self.train_flops, "diverged_at": self.diverged_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.diffusion.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._own_adam_flags()
        set_rng_state(state["rng"])
        self.stream.load_state_dict(state["data"])
        self.step = int(state["step"])
        self.curve = list(state["curve"])
        self.train_seconds = float(state["train_seconds"])
        self.train_cpu_seconds = float(state.get("train_cpu_seconds", 0.0))
        self.train_flops = float(state.get("train_flops", 0.0))
        self.diverged_at = state.get("diverged_at")  # set in a pack member's checkpoint after it diverged

    def _own_adam_flags(self) -> None:
        """After loading an optimizer state written elsewhere (another run mode, a pack): this
        trainer's ``capturable`` flag and learning-rate type, and step counters on its device when
        capturable (a CUDA graph replays them)."""
        capturable = self.train_step.mode == "cuda_graphs"
        for group in self.optimizer.param_groups:
            group["capturable"] = capturable
            if capturable and not isinstance(group["lr"], torch.Tensor):
                group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
            elif not capturable and isinstance(group["lr"], torch.Tensor):
                group["lr"] = float(group["lr"])
        if capturable:
            for state in self.optimizer.state.values():
                state["step"] = state["step"].to(self.device)

    def save_checkpoint(self) -> None:
        if self.resume_path is not None:
            ckpt.atomic_save(self.state_dict(), self.resume_path)

    def try_resume(self) -> int | None:
        """Load the resume checkpoint if a usable one exists; return the step resumed from."""
        if self.resume_path is None:
            return None
        state = load_resume(self.resume_path, self.fingerprint, self.config.steps)
        if state is None or int(state["step"]) <= self.step:  # not past the state already loaded (a trunk's)
            return None
        self.load_state_dict(state)
        self.resumed_from = self.step
        log.info("resumed from %s at step %d", self.resume_path, self.step)
        return self.step

    # ---------------------------------------------------------------- validation
    def validate(self) -> dict[str, float]:
        if self.val_set is None:
            return {}
        cfg = self.config
        out = {"val_mse_ema": heldout_mse(self.ema.ema_model, self.val_set, cfg.val_inner_steps)}
        if cfg.validate_raw:
            out["val_mse_raw"] = heldout_mse(self.diffusion, self.val_set, cfg.val_inner_steps)
        return out

    # ---------------------------------------------------------------- compute
    def measure_step_flops(self) -> dict[bool, float]:
        """FLOPs of a mining and of an ordinary training step (see :func:`compute.step_flops`)."""
        if not self._step_flops:
            self._step_flops = training_step_flops(self.diffusion, self.config, self.device)
        return self._step_flops

    # ---------------------------------------------------------------- loop
    def train(self) -> TrainResult:
        """Run (or continue) training to ``config.steps``; returns the run's :class:`TrainResult`."""
        cfg = self.config
        self.try_resume()
        if self.diverged_at is not None:  # resumed a run that had diverged (in a pack): it stays so
            return TrainResult("diverged", self.step, self.diverged_at, self.train_seconds, self.resumed_from,
                               self.curve, self.train_cpu_seconds, self.train_flops)
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not show, dynamic_ncols=True, desc="train")
        sums: dict[str, torch.Tensor] = {}
        count = 0
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        diverged_at: int | None = None
        interval_start, interval_cpu = time.perf_counter(), time.process_time()
        flops = self.measure_step_flops()
        self.diffusion.train()
        with StopRequest() as stop:
            while self.step < cfg.steps:
                A, Y = next(self.stream)
                A, Y = A.to(self.dtype), Y.to(self.dtype)  # no-op unless the model is not float32
                lr = cfg.lr_at(self.step)
                for group in self.optimizer.param_groups:
                    if isinstance(group["lr"], torch.Tensor):
                        group["lr"].fill_(lr)
                    else:
                        group["lr"] = lr
                if flops:
                    self.train_flops += flops[self.diffusion.is_mining_step(self.step)]
                loss, parts = self.train_step(A, Y, self.step)
                self.ema.update()
                bad = ~torch.isfinite(loss.detach()) | (loss.detach() > cfg.max_loss)
                first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, self.step), first_bad)
                accumulate(sums, parts)
                count += 1
                self.step += 1
                bar.update(1)
                at_log = self.step % cfg.log_every == 0 or self.step == cfg.steps
                if not (at_log or stop.signum is not None):
                    continue
                interval_seconds, interval_cpu_seconds = elapsed(self.device, interval_start, interval_cpu)
                bad_step, max_residual, means = self._read_interval(sums, count, first_bad)
                if bad_step >= 0:
                    diverged_at = self.diverged_at = bad_step
                    log.error("training diverged at step %d (loss NaN/inf or > max_loss=%g); stopping",
                              bad_step, cfg.max_loss)
                    self._append_row(means, count, interval_seconds, {})
                    break
                self.stream.check(max_residual)
                self.train_seconds += interval_seconds
                self.train_cpu_seconds += interval_cpu_seconds
                metrics = self.validate() if (self.step % cfg.eval_every == 0 or self.step == cfg.steps) else {}
                self._append_row(means, count, interval_seconds, metrics)
                if metrics:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()})
                    eta = eta_seconds(self.step, cfg.steps, recent_rate(self.curve))
                    log.info("step %d of %d: loss %.4f, %s; ETA %s", self.step, cfg.steps, self.curve[-1]["loss"],
                             ", ".join(f"{k} {v:.5f}" for k, v in metrics.items()), duration_text(eta))
                sums, count = {}, 0
                if stop.signum is not None:
                    self.save_checkpoint()
                    bar.close()
                    log.warning("received signal %d at step %d; checkpoint written, exiting", stop.signum, self.step)
                    raise SystemExit(128 + stop.signum)
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint()
                interval_start, interval_cpu = time.perf_counter(), time.process_time()
        bar.close()
        status = "diverged" if diverged_at is not None else "completed"
        return TrainResult(status, self.step, diverged_at, self.train_seconds, self.resumed_from, self.curve,
                           self.train_cpu_seconds, self.train_flops)

    def _read_interval(self, sums: dict[str, torch.Tensor], count: int, first_bad: torch.Tensor
                       ) -> tuple[int, float, dict[str, float]]:
        """Everything the host needs at a log boundary, in one read from the device: the first
        diverged step (-1 if none), the data stream's largest residual since the last read, and
        the interval means of the loss parts (with the mining acceptance rate)."""
        keys = sorted(sums)
        values = torch.stack([first_bad.double(), self.stream.max_residual.double(),
                              *(sums[k].double() for k in keys)]).tolist()
        self.stream.max_residual = torch.zeros_like(self.stream.max_residual)
        return int(values[0]), values[1], interval_means(dict(zip(keys, values[2:])), count)

    def _append_row(self, means: dict[str, float], count: int, seconds: float, metrics: dict[str, float]) -> None:
        """One learning-curve row (:func:`diffusion_lib.curve.curve_row`) and the job's heartbeat
        (:mod:`diffusion_lib.progress`)."""
        self.curve.append(curve_row(self.step, self.config.lr_at(self.step - 1), means, count, seconds, metrics,
                                    self.train_seconds, self.train_cpu_seconds, self.train_flops))
        write_heartbeat(self.progress_path, step=self.step, steps=self.config.steps, curve=self.curve,
                        diverged_at=self.diverged_at)
