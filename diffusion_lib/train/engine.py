"""The training engine (SPEC §4): N ≥ 1 runs of one strategy and one training config, trained
together as stacked weights; a solo run is N = 1.

:class:`Engine` owns the loop: the learning-rate schedule, the draws, the update
(:class:`~diffusion_lib.train.step.Update`: gradients, clipping, Adam, EMA, frozen runs), the learning
curves, validation, resumable checkpoints, signals and divergence. Each run keeps everything a run
trained alone has:

* its data stream (``derive_seed(seed, "train-data")``) and its noise generator, which continues
  the init RNG as :func:`~diffusion_lib.training.seeded_member` leaves it, so a run sees the same
  batches, time steps and noises whatever it trains with;
* its initial weights, Adam moments, gradient clipping by its own norm, EMA, learning curve,
  divergence check, resume checkpoint and output files.

Every ``log_every`` steps each run's curve gains a row (mean loss parts over the interval, training
time, and at ``eval_every`` steps the validation MSE of the EMA and of the raw model), read from the
device in one go for all runs; nothing else is read on the host.

Divergence: a loss that is NaN/inf or above ``max_loss`` stops its run at the next log boundary;
from then on the run is *frozen* by a device mask (the engine still computes it, but its state is
put back unchanged), so the other runs are untouched; its result is ``diverged`` with the first bad
step. A run resumed from a later checkpoint than the others waits frozen (its generators
untouched) until the engine reaches its step.

Checkpoints: every ``checkpoint_every`` steps (and on SIGTERM/SIGINT, as SLURM sends before a
time-out or preemption) each run writes its own ``resume.ckpt`` atomically: weights, EMA, Adam,
step, curve, timers, its generator's and data stream's states. A run resumes from it in an engine
of any size; on the same machine and thread count it ends bitwise equal to an uninterrupted run.
The ``fingerprint`` covers what changes the trajectory except the total step count, so raising
``steps`` extends a run (constant or warm-up-only schedules).

Time: an interval's wall and CPU seconds are shared equally among the runs that trained in it, so
a run's ``train_seconds`` is its share of the machine; ``steps_per_s`` in its curve is the engine's.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .curve import curve_row, interval_means
from ..ired.data import Heldout, ProblemStream
from ..ired.closed_form import supports
from ..ired.diffusion import GaussianDiffusion1D, build_diffusion
from ..spec.mining import MiningConfig
from .ema import EMASchedule
from ..ired.functional import draw_noise
from .progress import duration_text, eta_seconds, heartbeat_path, recent_rate, watched_row, write_heartbeat
from ..spec.run_config import TrainConfig
from .run_state import load_run_state, run_state
from ..ired.seeding import derive_seed
from .signals import StopRequest
from .step import Stack, Update
from ..training import TrainResult, accumulate, apply_precision, cpu_clock, elapsed, heldout_mse, load_resume, seeded_member, step_mode, training_step_flops

if TYPE_CHECKING:
    from ..watch.job_tracking import Tracker

log = logging.getLogger(__name__)


class Engine:
    """Train the runs ``diffusions[i]`` (config ``configs[i]``, noise ``generators[i]``) together.

    The configs may differ only in ``seed``; the diffusions must share one mining config.
    ``resume_paths[i]`` is run i's checkpoint file (keep it outside a workflow's declared outputs);
    ``progress`` shows a tqdm bar (None: only on a TTY); ``trackers[i]`` (or None) watches run i: it
    is started at the step the run starts or resumes from, given each curve row as it is made and
    closed when training ends (:mod:`diffusion_lib.watch.job_tracking`). :meth:`train` returns one
    :class:`~diffusion_lib.training.TrainResult` per run; :meth:`models` gives a run's weights.
    """

    def __init__(self, diffusions: Sequence[GaussianDiffusion1D], generators: Sequence[torch.Generator],
                 configs: Sequence[TrainConfig], val_set: Heldout | None = None, device: str | torch.device = "cpu",
                 resume_paths: Sequence[str | Path | None] | None = None, progress: bool | None = None,
                 trackers: Sequence[Tracker | None] | None = None):
        if not (len(diffusions) == len(generators) == len(configs)) or not diffusions:
            raise ValueError("the engine needs one diffusion, one generator and one config per run")
        cfg = configs[0]
        if any(dataclasses.replace(c, seed=cfg.seed) != cfg for c in configs[1:]):
            raise ValueError("the runs of one engine may differ only in their seed")
        if len({d.mining for d in diffusions}) != 1:
            raise ValueError("the runs of one engine must share one mining config")
        self.config, self.configs, self.n = cfg, list(configs), len(diffusions)
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
            p.data = stacked[0]  # the template holds run 0 in place (one run, closed-form gradient)
        self.dtype = self.stack.params[0].dtype
        self.update = Update(self.template, self.stack, grad_clip=cfg.grad_clip, betas=tuple(cfg.betas),
                             ema=EMASchedule(cfg.ema_decay, cfg.ema_update_every, cfg.ema_update_after_step,
                                             cfg.ema_power),
                             lr_at=cfg.lr_at, mode=step_mode(cfg, self.device))
        self.generators = list(generators)
        self.streams = [ProblemStream(c.batch_size, c.rank, c.train_eps, derive_seed(c.seed, "train-data"),
                                      self.device) for c in configs]
        self.val_set = val_set.subset(cfg.val_size).to(self.device) if val_set is not None else None
        self.resume_paths = [Path(p) if p else None for p in (resume_paths or [None] * self.n)]
        self.progress_paths = [heartbeat_path(p) for p in self.resume_paths]  # each run's progress.json
        self.trackers = list(trackers or [None] * self.n)
        if len(self.trackers) != self.n:
            raise ValueError(f"{len(self.trackers)} trackers for {self.n} runs")
        self.progress = progress
        self.fingerprints = [c.fingerprint(self.mining) for c in configs]
        self.steps = [0] * self.n
        self.curves: list[list[dict[str, Any]]] = [[] for _ in range(self.n)]
        self.train_seconds = [0.0] * self.n
        self.train_cpu_seconds = [0.0] * self.n
        self.train_flops = [0.0] * self.n
        self.diverged_at: list[int | None] = [None] * self.n
        self.resumed_from: list[int | None] = [None] * self.n
        self._scratch: GaussianDiffusion1D | None = None
        self._active_host: list[bool] = [True] * self.n
        self._active = torch.ones(self.n, dtype=torch.bool, device=self.device)

    @classmethod
    def seeded(cls, configs: Sequence[TrainConfig], mining: MiningConfig | dict | None, val_set: Heldout | None = None,
               device: str | torch.device = "cpu", resume_paths: Sequence[str | Path | None] | None = None,
               progress: bool | None = None, trackers: Sequence[Tracker | None] | None = None) -> "Engine":
        """The engine of the runs ``configs`` describe, each seeded as the workflow seeds it
        (:func:`~diffusion_lib.training.seeded_member`): a script's seed k trains the workflow's seed k."""
        members = [seeded_member(c.seed, c.rank, c.timesteps, mining, device, c.model) for c in configs]
        return cls([d for d, _ in members], [g for _, g in members], configs, val_set, device, resume_paths, progress,
                   trackers)

    # ---------------------------------------------------------------- runs
    def active_at(self, step: int) -> list[bool]:
        """Which runs train at engine step ``step``: not diverged, and resumed no later than it."""
        return [self.diverged_at[i] is None and self.steps[i] == step for i in range(self.n)]

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
        """Run ``i``'s resume checkpoint (:func:`diffusion_lib.train.run_state.run_state`)."""
        return run_state(self, i)

    def load_state(self, i: int, state: dict[str, Any]) -> None:
        """Restore run ``i`` from a checkpoint (:func:`diffusion_lib.train.run_state.load_run_state`)."""
        load_run_state(self, i, state)

    def save_checkpoints(self) -> None:
        for i, path in enumerate(self.resume_paths):
            if path is not None:
                ckpt.atomic_save(self.state(i), path)

    def try_resume(self) -> None:
        """Load each run's usable checkpoint, if it is past the state already loaded (a trunk's)."""
        for i, path in enumerate(self.resume_paths):
            if path is None:
                continue
            state = load_resume(path, self.fingerprints[i], self.config.steps)
            if state is None or int(state["step"]) <= self.steps[i]:
                continue
            self.load_state(i, state)
            self.resumed_from[i] = self.steps[i]
            log.info("run %d (seed %d) resumed from %s at step %d", i, self.configs[i].seed, path, self.steps[i])

    # ---------------------------------------------------------------- one step
    def draw(self, active: list[bool]) -> tuple[torch.Tensor, ...]:
        """The stacked batch and noises; each active run draws from its own stream and generator in
        the order (batch, t, ξ, ξ'); a frozen run's generators are not touched."""
        drawn = {i: self._draw_one(i) for i in range(self.n) if active[i]}
        like = next(iter(drawn.values()))
        rows = [drawn.get(i) or tuple(torch.zeros_like(x) for x in like) for i in range(self.n)]
        if self.n == 1:
            return tuple(x[None] for x in rows[0])
        return tuple(torch.stack(column) for column in zip(*rows))

    def _draw_one(self, i: int) -> tuple[torch.Tensor, ...]:
        A, Y = next(self.streams[i])
        A, Y = A.to(self.dtype), Y.to(self.dtype)  # no-op unless the runs are not float32
        return (A, Y, *draw_noise(self.template, Y, self.generators[i]))

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
        cfg = self.config
        out = {"val_mse_ema": heldout_mse(self._module(self.stack.ema, i), self.val_set, cfg.val_inner_steps)}
        if cfg.validate_raw:
            out["val_mse_raw"] = heldout_mse(self._module(self.stack.params, i), self.val_set, cfg.val_inner_steps)
        return out

    # ---------------------------------------------------------------- loop
    def train(self) -> list[TrainResult]:
        """Run (or continue) every run to ``config.steps``; one result per run."""
        cfg = self.config
        self.try_resume()
        for i, step in enumerate(self.steps):
            self._watch(i, "start", step)
        try:
            return self._train()
        finally:
            for i in range(self.n):
                self._watch(i, "close")

    def _watch(self, i: int, call: str, *args: Any) -> None:
        """Call run ``i``'s tracker; one that fails is dropped with a warning, never failing training."""
        if self.trackers[i] is None:
            return
        try:
            getattr(self.trackers[i], call)(*args)
        except Exception as exc:
            log.warning("run %d: its tracker failed in %s (%s: %s) and is off from now on", i, call,
                        type(exc).__name__, exc)
            self.trackers[i] = None

    def _train(self) -> list[TrainResult]:
        cfg = self.config
        start = min(self.steps)
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
                    waiting = [s for s, d in zip(self.steps, self.diverged_at) if d is None and s > step]
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
                for i in range(self.n):
                    if active[i]:
                        counts[i] += 1
                        self.steps[i] += 1
                        if flops:
                            self.train_flops[i] += flops[mined]
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
        return [TrainResult("diverged" if self.diverged_at[i] is not None else "completed", self.steps[i],
                            self.diverged_at[i], self.train_seconds[i], self.resumed_from[i], self.curves[i],
                            self.train_cpu_seconds[i], self.train_flops[i]) for i in range(self.n)]

    def _log_interval(self, step: int, sums: dict[str, torch.Tensor], counts: list[int], first_bad: torch.Tensor,
                      seconds: float, cpu_seconds: float) -> None:
        """At a log boundary: read the interval in one go, mark runs that diverged (their row, no
        validation), and give every other run that trained its time share, row and validation."""
        cfg = self.config
        first, residuals, means = self._read_interval(sums, counts, first_bad)
        trained = [i for i in range(self.n) if counts[i]]
        share = 1.0 / max(sum(first[i] < 0 for i in trained), 1)  # among those not diverging now
        for i in trained:
            who = f"run {i} (seed {self.configs[i].seed})" if self.n > 1 else "training"
            if first[i] >= 0:
                self.diverged_at[i] = first[i]
                log.error("%s diverged at step %d (loss NaN/inf or > max_loss=%g); stopped%s", who, first[i],
                          cfg.max_loss, ", the others go on" if self.n > 1 else "")
                self._append_row(i, means[i], counts[i], seconds, {})
                continue
            self.streams[i].check(residuals[i])
            self.train_seconds[i] += seconds * share
            self.train_cpu_seconds[i] += cpu_seconds * share
            metrics = self.validate(i) if step % cfg.eval_every == 0 or step == cfg.steps else {}
            self._append_row(i, means[i], counts[i], seconds, metrics)
            if metrics:
                eta = eta_seconds(step, cfg.steps, recent_rate(self.curves[i]))
                log.info("%s: step %d of %d: loss %.4f, %s; ETA %s", who, step, cfg.steps, self.curves[i][-1]["loss"],
                         ", ".join(f"{k} {v:.5f}" for k, v in metrics.items()), duration_text(eta))

    def _read_interval(self, sums: dict[str, torch.Tensor], counts: list[int], first_bad: torch.Tensor
                       ) -> tuple[list[int], list[float], list[dict[str, float]]]:
        """Per run, in one read from the device: the first diverged step (-1 if none), the data
        stream's largest residual since the last read, and the interval means of the loss parts."""
        keys = sorted(sums)
        residuals = torch.stack([s.max_residual for s in self.streams])
        table = torch.stack([first_bad.double(), residuals.double(), *(sums[k].double() for k in keys)]).tolist()
        for s in self.streams:
            s.max_residual = torch.zeros_like(s.max_residual)
        means = [interval_means({k: row[i] for k, row in zip(keys, table[2:])}, counts[i]) for i in range(self.n)]
        return [int(v) for v in table[0]], table[1], means

    def _append_row(self, i: int, means: dict[str, float], count: int, seconds: float,
                    metrics: dict[str, float]) -> None:
        """Run ``i``'s learning-curve row (:func:`diffusion_lib.train.curve.curve_row`) and its heartbeat
        (:mod:`diffusion_lib.train.progress`)."""
        self.curves[i].append(curve_row(self.steps[i], self.config.lr_at(self.steps[i] - 1), means, count, seconds,
                                        metrics, self.train_seconds[i], self.train_cpu_seconds[i],
                                        self.train_flops[i]))
        write_heartbeat(self.progress_paths[i], step=self.steps[i], steps=self.config.steps, curve=self.curves[i],
                        diverged_at=self.diverged_at[i])
        self._watch(i, "log", watched_row(self.curves[i]))
