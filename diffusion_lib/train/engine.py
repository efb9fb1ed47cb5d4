"""The training engine (method §4): N ≥ 1 runs of one strategy and one training config, trained
together as stacked weights; a solo run is N = 1.

:class:`Engine` owns the loop: the learning-rate schedule, the draws, the update
(:class:`~diffusion_lib.train.step.ParameterUpdate`: gradients, clipping, Adam, EMA, frozen runs), the learning
curves, validation, resumable checkpoints, signals and divergence. Each run keeps everything a run
trained alone has:

* its data stream (``derive_seed(seed, "train-data")``) and its noise generator, which continues
  the init RNG as :func:`~diffusion_lib.train.run_state.seeded_member` leaves it, so a run sees the same
  batches, time steps and noises whatever it trains with;
* its initial weights, Adam moments, gradient clipping by its own norm, EMA, learning curve,
  divergence check, resume checkpoint and output files.

Checkpoints and a run's initial state: :mod:`diffusion_lib.train.run_state`. Time: an interval's wall and
CPU seconds are shared equally among the runs that trained in it, so a run's ``train_seconds`` is its
share of the machine; ``steps_per_s`` in its curve is the engine's. Stop requests: SIGTERM/SIGINT (as
SLURM sends before a time-out or preemption) become a flag read at the next log boundary, so a run
writes its checkpoint before exiting.

Every ``log_every`` steps each run's curve gains a row (mean loss parts over the interval, training
time, and at ``eval_every`` steps the validation MSE of the EMA and of the raw model), read from the
device in one go for all runs; nothing else is read on the host.

Divergence: a loss that is NaN/inf or above ``max_loss`` stops its run at the next log boundary;
from then on the run is *frozen* by a device mask (the engine still computes it, but its state is
put back unchanged), so the other runs are untouched; its result is ``diverged`` with the first bad
step. A run resumed from a later checkpoint than the others waits frozen (its generators
untouched) until the engine reaches its step.
"""
from __future__ import annotations

import logging
import math
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from .curve import curve_row, read_interval
from ..ired.data import Heldout, ProblemStream
from ..ired.evaluation import predict
from ..ired.closed_form import supports
from ..ired.diffusion import GaussianDiffusion1D, build_diffusion
from ..settings.mining import MiningConfig
from .ema import EMASchedule
from .progress import Tracker, duration_text, eta_seconds, heartbeat_path, recent_rate, watched_row, write_heartbeat
from ..settings.run_config import TrainConfig
from .run_state import RunState, check_together, checkpoint, restore, resume_all, save_all, seeded_member
from ..ired.seeding import derive_seed
from .step import Stack, ParameterUpdate
from .curve import accumulate
from .step_mode import apply_precision, step_mode
from .flops import training_step_flops

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- what a run returns
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
        """CPU seconds per step (the process's, a compiler it ran included): insensitive to other jobs
        sharing the CPU."""
        return self.train_cpu_seconds / max(self.steps_done, 1)

    @property
    def flops_per_step(self) -> float:
        """Profiler-counted matmul FLOPs per training step (NaN when not measured)."""
        return self.train_flops / self.steps_done if self.steps_done and self.train_flops else math.nan


# --------------------------------------------------------------------------- the clocks an interval is timed by
def cpu_clock() -> float:
    """CPU seconds used so far by this process and by the child processes it has waited for (the C++
    compiler that builds the step compiled ahead of time, :mod:`diffusion_lib.train.aot`), so that a run's
    CPU time includes its compiling."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def elapsed(device: torch.device, wall_start: float, cpu_start: float) -> tuple[float, float]:
    """Wall and CPU seconds (:func:`cpu_clock`) since a log interval began, after the device finished
    its queued work (the interval's one wait)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall_start, cpu_clock() - cpu_start


# --------------------------------------------------------------------------- a stop request
class StopRequest:
    """Context manager: while active, SIGTERM and SIGINT set :attr:`signum` instead of killing the
    process (in the main thread; elsewhere signals keep their handlers)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------- the validation score
def heldout_mse(diffusion: GaussianDiffusion1D, heldout: Heldout, n_inner: int, seed: int = 0,
                batch_size: int = 1024) -> float:
    """MSE of ``diffusion.sample`` on ``heldout`` (fixed sampling noise from ``seed``)."""
    pred, _ = predict(diffusion, heldout, n_inner, batch_size=batch_size, seed=seed)
    return (pred - heldout.Y.cpu()).pow(2).mean().item()


# --------------------------------------------------------------------------- the engine


class Engine:
    """Train the runs ``diffusions[i]`` (config ``configs[i]``, noise ``generators[i]``) together.

    The configs may differ only in ``seed``; the diffusions must share one mining config.
    ``resume_paths[i]`` is run i's checkpoint file (keep it outside a workflow's declared outputs);
    ``progress`` shows a tqdm bar (None: only on a TTY); ``trackers[i]`` (or None) watches run i: it
    is started at the step the run starts or resumes from, given each curve row as it is made and
    closed when training ends (:mod:`diffusion_lib.watch.job_tracking`). :meth:`train` returns one
    :class:`TrainResult` per run; :meth:`models` gives a run's weights.
    """

    def __init__(self, diffusions: Sequence[GaussianDiffusion1D], generators: Sequence[torch.Generator],
                 configs: Sequence[TrainConfig], val_set: Heldout | None = None, device: str | torch.device = "cpu",
                 resume_paths: Sequence[str | Path | None] | None = None, progress: bool | None = None,
                 trackers: Sequence[Tracker | None] | None = None):
        check_together(diffusions, generators, configs)
        cfg = configs[0]
        self.config, self.n = cfg, len(diffusions)
        self.device = torch.device(device)
        apply_precision(cfg.precision, self.device)
        self.template = diffusions[0].to(self.device)
        built = getattr(self.template.model.ebm, "spec", cfg.model)
        if built != cfg.model:
            raise ValueError(f"the runs' network {built} is not the one train.model describes ({cfg.model})")
        self.template.closed_form = cfg.gradients != "autograd"
        if cfg.gradients == "closed_form" and (why := supports(self.template.model.ebm)) is not None:
            raise ValueError(f"train.gradients: closed_form, but the closed-form derivatives do not apply: {why}")
        self.mining = self.template.mining
        self.names = [name for name, _ in self.template.model.ebm.named_parameters()]
        if len(self.names) != len(list(self.template.parameters())):
            raise ValueError("the diffusion's only parameters must be its energy network's")
        self.stack = Stack.of(self.names, [[p.to(self.device) for p in d.model.ebm.parameters()] for d in diffusions])
        for p, stacked in zip(self.template.model.ebm.parameters(), self.stack.params):
            p.data = stacked[0]  # the template holds run 0 in place
        self.dtype = self.stack.params[0].dtype
        self.update = ParameterUpdate(self.template, self.stack, grad_clip=cfg.grad_clip, betas=tuple(cfg.betas),
                             ema=EMASchedule(cfg.ema_decay, cfg.ema_update_every, cfg.ema_update_after_step,
                                             cfg.ema_power),
                             lr_at=cfg.lr_at, mode=step_mode(cfg, self.device))
        self.val_set = val_set.subset(cfg.val_size).to(self.device) if val_set is not None else None
        paths = [Path(p) if p else None for p in (resume_paths or [None] * self.n)]
        trackers = list(trackers or [None] * self.n)
        if len(trackers) != self.n:
            raise ValueError(f"{len(trackers)} trackers for {self.n} runs")
        self.progress = progress
        self.runs = [RunState(c, c.fingerprint(self.mining), g,
                              ProblemStream(c.batch_size, c.rank, c.train_eps, derive_seed(c.seed, "train-data"),
                                            self.device), path, heartbeat_path(path), tracker)
                     for c, g, path, tracker in zip(configs, generators, paths, trackers)]
        self._scratch: GaussianDiffusion1D | None = None
        self._active_host: list[bool] = [True] * self.n
        self._active = torch.ones(self.n, dtype=torch.bool, device=self.device)

    @classmethod
    def seeded(cls, configs: Sequence[TrainConfig], mining: MiningConfig | dict | None, val_set: Heldout | None = None,
               device: str | torch.device = "cpu", resume_paths: Sequence[str | Path | None] | None = None,
               progress: bool | None = None, trackers: Sequence[Tracker | None] | None = None) -> "Engine":
        """The engine of the runs ``configs`` describe, each seeded as the workflow seeds it
        (:func:`~diffusion_lib.train.run_state.seeded_member`): a script's seed k trains the workflow's seed k."""
        members = [seeded_member(c.seed, c.rank, c.timesteps, mining, device, c.model) for c in configs]
        return cls([d for d, _ in members], [g for _, g in members], configs, val_set, device, resume_paths, progress,
                   trackers)

    # ---------------------------------------------------------------- runs
    def active_at(self, step: int) -> list[bool]:
        """Which runs train at engine step ``step``: not diverged, and resumed no later than it."""
        return [run.diverged_at is None and run.step == step for run in self.runs]

    def _set_active(self, active: list[bool]) -> None:
        if active != self._active_host:
            self._active_host = active
            self._active = torch.tensor(active, dtype=torch.bool, device=self.device)

    def models(self, i: int = 0) -> tuple[GaussianDiffusion1D, GaussianDiffusion1D]:
        """(raw, EMA) diffusions holding run ``i``'s current weights (fresh modules)."""
        return self._module(self.stack.params, i, fresh=True), self._module(self.stack.ema, i, fresh=True)

    @torch.no_grad()
    def _module(self, source: list[torch.Tensor], i: int, fresh: bool = False) -> GaussianDiffusion1D:
        """A diffusion holding run ``i``'s weights from ``source``: a new one, or the reused scratch module."""
        model = None if fresh else self._scratch
        if model is None:
            model = build_diffusion(self.config.rank, self.config.timesteps, self.mining, self.config.model
                                    ).to(self.device, self.dtype)
            model.closed_form = self.template.closed_form
            if not fresh:
                self._scratch = model
        for p, stacked in zip(model.model.ebm.parameters(), source):
            p.copy_(stacked[i])
        return model

    # ---------------------------------------------------------------- checkpoints
    def state(self, i: int) -> dict[str, Any]:
        """Run ``i``'s resume checkpoint (:func:`diffusion_lib.train.run_state.checkpoint`)."""
        return checkpoint(self.runs[i], i, self.stack, self.names, self.device)

    def load_state(self, i: int, state: dict[str, Any]) -> None:
        """Restore run ``i`` from a checkpoint (:func:`diffusion_lib.train.run_state.restore`)."""
        restore(self.runs[i], i, self.stack, self.names, self.device, state)

    def save_checkpoints(self) -> None:
        save_all(self.runs, self.stack, self.names, self.device)

    def try_resume(self) -> None:
        """Load each run's usable checkpoint, if it is past the state already loaded (a trunk's)."""
        resume_all(self.runs, self.stack, self.names, self.device, self.config.steps)

    # ---------------------------------------------------------------- one step
    def draw(self, active: list[bool]) -> tuple[torch.Tensor, ...]:
        """The stacked batch and noises; each active run draws from its own stream and generator in
        the order (batch, t, ξ, ξ'); a frozen run's generators are not touched."""
        drawn = {i: run.draw(self.template, self.dtype) for i, run in enumerate(self.runs) if active[i]}
        like = next(iter(drawn.values()))
        rows = [drawn.get(i) or tuple(torch.zeros_like(x) for x in like) for i in range(self.n)]
        if self.n == 1:
            return tuple(x[None] for x in rows[0])
        return tuple(torch.stack(column) for column in zip(*rows))

    def step_once(self, step: int, active: list[bool], draws: tuple[torch.Tensor, ...] | None = None
                  ) -> dict[str, torch.Tensor]:
        """The update at training step ``step`` of the runs ``active`` marks, with their next draws
        (or ``draws``, as :meth:`draw` returns them); the loss parts, shape (N,) each."""
        self._set_active(active)
        return self.update(self.draw(active) if draws is None else draws, step, active, self._active)

    def validate(self, i: int) -> dict[str, float]:
        """Run ``i``'s validation MSEs (EMA, and raw with ``validate_raw``) on the fixed subset."""
        if self.val_set is None:
            return {}
        # one scratch module holds a run's weights at a time: score the EMA weights before loading the raw ones
        n_inner = self.config.val_inner_steps
        out = {"val_mse_ema": heldout_mse(self._module(self.stack.ema, i), self.val_set, n_inner)}
        if self.config.validate_raw:
            out["val_mse_raw"] = heldout_mse(self._module(self.stack.params, i), self.val_set, n_inner)
        return out

    # ---------------------------------------------------------------- loop
    def train(self) -> list[TrainResult]:
        """Run (or continue) every run to ``config.steps``; one result per run."""
        self.try_resume()
        for i, run in enumerate(self.runs):
            self.runs[i].watch(i, "start", run.step)
        try:
            return self._train()
        finally:
            for i in range(self.n):
                self.runs[i].watch(i, "close")

    def _train(self) -> list[TrainResult]:
        cfg = self.config
        start = min(run.step for run in self.runs)
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        bar = tqdm(total=cfg.steps, initial=start, disable=not show, dynamic_ncols=True,
                   desc="train" if self.n == 1 else f"train x{self.n}")
        flops = training_step_flops(self.template, cfg, self.device)
        sums: dict[str, torch.Tensor] = {}
        counts = [0] * self.n
        first_bad = torch.full((self.n,), -1, dtype=torch.long, device=self.device)
        interval_start, interval_cpu = time.perf_counter(), cpu_clock()
        step = start
        with StopRequest() as stop:
            while step < cfg.steps:
                active = self.active_at(step)
                if not any(active):  # runs resumed from later checkpoints wait; diverged ones are done
                    waiting = [run.step for run in self.runs if run.diverged_at is None and run.step > step]
                    if not waiting:
                        break
                    step = min(waiting)
                    continue
                parts = self.step_once(step, active)
                loss = parts["loss"]
                bad = (~torch.isfinite(loss) | (loss > cfg.max_loss)) & self._active & (first_bad < 0)
                first_bad = torch.where(bad, torch.full_like(first_bad, step), first_bad)
                if not all(active):
                    parts = {k: torch.where(self._active, v, torch.zeros_like(v)) for k, v in parts.items()}
                accumulate(sums, parts)
                mined = self.mining.mines_at(step)
                for i, run in enumerate(self.runs):
                    if active[i]:
                        counts[i] += 1
                        run.step += 1
                        if flops:
                            run.train_flops += flops[mined]
                step += 1
                bar.update(1)
                if not (step % cfg.log_every == 0 or step == cfg.steps or stop.signum is not None):
                    continue
                seconds, cpu_seconds = elapsed(self.device, interval_start, interval_cpu)
                self._log_interval(step, sums, counts, first_bad, seconds, cpu_seconds)
                sums, counts = {}, [0] * self.n
                if stop.signum is not None:
                    self.save_checkpoints()
                    bar.close()
                    log.warning("received signal %d at step %d; checkpoints written, exiting", stop.signum, step)
                    raise SystemExit(128 + stop.signum)
                if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    self.save_checkpoints()
                interval_start, interval_cpu = time.perf_counter(), cpu_clock()
        bar.close()
        return [TrainResult("diverged" if run.diverged_at is not None else "completed", run.step, run.diverged_at,
                            run.train_seconds, run.resumed_from, run.curve, run.train_cpu_seconds, run.train_flops)
                for run in self.runs]

    def _log_interval(self, step: int, sums: dict[str, torch.Tensor], counts: list[int], first_bad: torch.Tensor,
                      seconds: float, cpu_seconds: float) -> None:
        """At a log boundary: read the interval in one go, mark runs that diverged (their row, no
        validation), and give every other run that trained its time share, row and validation."""
        cfg = self.config
        first, residuals, means = read_interval(sums, counts, first_bad, [run.stream for run in self.runs])
        trained = [i for i in range(self.n) if counts[i]]
        share = 1.0 / max(sum(first[i] < 0 for i in trained), 1)  # among those not diverging now
        for i in trained:
            run = self.runs[i]
            who = f"run {i} (seed {run.config.seed})" if self.n > 1 else "training"
            if first[i] >= 0:
                run.diverged_at = first[i]
                log.error("%s diverged at step %d (loss NaN/inf or > max_loss=%g); stopped%s", who, first[i],
                          cfg.max_loss, ", the others go on" if self.n > 1 else "")
                self._append_row(i, means[i], counts[i], seconds, {})
                continue
            run.stream.check(residuals[i])
            run.train_seconds += seconds * share
            run.train_cpu_seconds += cpu_seconds * share
            metrics = self.validate(i) if step % cfg.eval_every == 0 or step == cfg.steps else {}
            self._append_row(i, means[i], counts[i], seconds, metrics)
            if metrics:
                eta = eta_seconds(step, cfg.steps, recent_rate(run.curve))
                log.info("%s: step %d of %d: loss %.4f, %s; ETA %s", who, step, cfg.steps, run.curve[-1]["loss"],
                         ", ".join(f"{k} {v:.5f}" for k, v in metrics.items()), duration_text(eta))

    def _append_row(self, i: int, means: dict[str, float], count: int, seconds: float,
                    metrics: dict[str, float]) -> None:
        """Run ``i``'s learning-curve row (:func:`diffusion_lib.train.curve.curve_row`) and its heartbeat
        (:mod:`diffusion_lib.train.progress`)."""
        run = self.runs[i]
        run.curve.append(curve_row(run.step, self.config.lr_at(run.step - 1), means, count, seconds, metrics,
                                   run.train_seconds, run.train_cpu_seconds, run.train_flops))
        write_heartbeat(run.progress_path, step=run.step, steps=self.config.steps, curve=run.curve,
                        diverged_at=run.diverged_at)
        self.runs[i].watch(i, "log", watched_row(run.curve))
