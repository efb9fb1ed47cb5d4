"""Several runs of one strategy trained in one process: stacked weights and one vmapped step.

A *pack* trains N seeds of one mining strategy and one training config together. Their weights
are stacked along a leading axis and a training step is :func:`diffusion_lib.functional.make_step_fn`
under ``torch.func.vmap``: one set of kernels for N runs, which is what a GPU needs when one
1.4M-parameter run leaves it idle. Each member keeps everything its solo run has:

* its data stream (``derive_seed(seed, "train-data")``) and its noise generator, which continues
  the init RNG exactly as the solo job's global generator does (:func:`init_member`), so the
  member sees the same batches, time steps and noises as its solo run;
* its initial weights (the solo job's seeding and construction);
* its Adam moments (Adam is elementwise, so the stacked update is N independent updates; it
  follows ``torch.optim.Adam`` operation for operation);
* gradient-norm clipping by its own norm (computed inside the vmapped function);
* its EMA (ema-pytorch's schedule, :func:`diffusion_lib.ema.ema_decay`), learning curve,
  divergence check, resume checkpoint and output files.

Freezing: a member whose loss diverged is stopped at the next log boundary (as a solo run stops
there) and from then on is *frozen* by a device mask: the pack still computes it, but its weights,
moments and EMA are selected unchanged, so the other members are untouched (tested bitwise). A
member resumed from a later checkpoint than the others waits frozen (its generators untouched)
until the pack reaches its step.

Checkpoints: each member writes its own ``resume.ckpt`` in :class:`~diffusion_lib.training.Trainer1D`'s
format (same fingerprint, optimizer layout and RNG layout), so a run can resume in a pack of any
composition, or alone.

Time: the pack's wall and CPU seconds of an interval are shared equally among the members that
trained in it, so a member's ``train_seconds`` is its share of the machine, comparable to a solo
run's (the report's cost per step); ``steps_per_s`` in its curve is the pack's step rate.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.func import vmap
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .data import Heldout, ProblemStream
from .diffusion import GaussianDiffusion1D, MiningConfig, build_diffusion
from .ema import ema_decay
from .functional import make_step_fn
from .progress import duration_text, eta_seconds, heartbeat_path, recent_rate, write_heartbeat
from .seeding import derive_seed
from .curve import curve_row, interval_means
from .signals import StopRequest
from .training import (CHECKPOINT_FORMAT, TrainConfig, TrainResult, accumulate, apply_precision, elapsed,
                       heldout_mse, load_resume, seeded_model, training_step_flops)

log = logging.getLogger("diffusion_lib.pack")
ADAM_EPS = 1e-8  # torch.optim.Adam's default, as the solo trainer uses it


def init_member(seed: int, rank: int, timesteps: int, mining: MiningConfig | dict | None,
                device: str | torch.device = "cpu") -> tuple[GaussianDiffusion1D, torch.Generator]:
    """A run's initial model and its noise generator, as the solo job makes them.

    The solo job seeds the global RNG with ``derive_seed(seed, "init")``, builds the model on the
    CPU (consuming the CPU generator) and then draws its training noise from the global generator
    of the training device. Here that generator is a private one in the same state: the CPU
    generator's state after the build, or on a GPU a device generator seeded alike.
    """
    device = torch.device(device)
    diffusion = seeded_model(seed, rank, timesteps, mining)
    generator = torch.Generator(device=device)
    if device.type == "cpu":
        generator.set_state(torch.get_rng_state())
    else:
        generator.manual_seed(derive_seed(seed, "init"))
    return diffusion, generator


class PackTrainer:
    """Train the runs ``diffusions[i]`` (config ``configs[i]``, noise ``generators[i]``) together.

    The configs may differ only in ``seed``. ``resume_paths[i]`` is member i's checkpoint file.
    :meth:`train` returns one :class:`~diffusion_lib.training.TrainResult` per member; the
    members' final weights come from :meth:`member_models`.
    """

    def __init__(self, diffusions: Sequence[GaussianDiffusion1D], generators: Sequence[torch.Generator],
                 configs: Sequence[TrainConfig], val_set: Heldout | None = None, device: str | torch.device = "cpu",
                 resume_paths: Sequence[str | Path | None] | None = None, progress: bool | None = None):
        if not (len(diffusions) == len(generators) == len(configs)) or not diffusions:
            raise ValueError("a pack needs one diffusion, one generator and one config per member")
        cfg = configs[0]
        for other in configs[1:]:
            if dataclasses.replace(other, seed=cfg.seed) != cfg:
                raise ValueError("the members of a pack may differ only in their seed")
        minings = {d.mining for d in diffusions}
        if len(minings) != 1:
            raise ValueError("the members of a pack must share one mining config")
        self.config, self.configs, self.n = cfg, list(configs), len(diffusions)
        self.device = torch.device(device)
        if cfg.cuda_graphs or cfg.compile:
            log.warning("train.compile and train.cuda_graphs apply to single runs; a pack trains eagerly")
        apply_precision(cfg.precision, self.device)
        self.template = diffusions[0].to(self.device)  # structure, buffers, and scratch weights for validation
        self.mining = self.template.mining
        self.names = [name for name, _ in self.template.model.ebm.named_parameters()]
        if len(self.names) != len(list(self.template.parameters())):
            raise ValueError("the diffusion's only parameters must be its energy network's")
        self.params = [torch.stack([dict(d.model.ebm.named_parameters())[name].detach().to(self.device)
                                    for d in diffusions]) for name in self.names]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.ema = [p.clone() for p in self.params]
        self.dtype = self.params[0].dtype
        self.generators = list(generators)
        self.streams = [ProblemStream(c.batch_size, c.rank, c.train_eps, derive_seed(c.seed, "train-data"),
                                      self.device) for c in configs]
        self.val_set = val_set.subset(cfg.val_size).to(self.device) if val_set is not None else None
        self.resume_paths = [Path(p) if p else None for p in (resume_paths or [None] * self.n)]
        self.progress_paths = [heartbeat_path(p) for p in self.resume_paths]  # each member's progress.json
        self.progress = progress
        self.fingerprints = [c.fingerprint(self.mining) for c in configs]
        self.steps = [0] * self.n
        self.curves: list[list[dict[str, Any]]] = [[] for _ in range(self.n)]
        self.train_seconds = [0.0] * self.n
        self.train_cpu_seconds = [0.0] * self.n
        self.train_flops = [0.0] * self.n
        self.diverged_at: list[int | None] = [None] * self.n
        self.resumed_from: list[int | None] = [None] * self.n
        self._adam_groups = torch.optim.Adam(self.template.parameters(), lr=cfg.lr,
                                             betas=tuple(cfg.betas)).state_dict()["param_groups"]
        step_fn = make_step_fn(self.template, cfg.grad_clip)

        def member_step(mined: bool) -> Callable[..., Any]:  # one member's step; ξ' only with negatives
            return lambda p, A, Y, t, xi, *neg: step_fn(p, A, Y, t, xi, neg[0] if neg else None, mined)

        self._vstep = {mined: vmap(member_step(mined)) for mined in (False, True)}  # every input batched on dim 0
        self._active_host: list[bool] = [True] * self.n
        self._active = torch.ones(self.n, dtype=torch.bool, device=self.device)

    # ---------------------------------------------------------------- members
    def active_at(self, step: int) -> list[bool]:
        """Which members train at pack step ``step``: not diverged, and resumed no later than it."""
        return [self.diverged_at[i] is None and self.steps[i] == step for i in range(self.n)]

    def _set_active(self, active: list[bool]) -> None:
        if active != self._active_host:
            self._active_host = active
            self._active = torch.tensor(active, dtype=torch.bool, device=self.device)

    def member_models(self, i: int) -> tuple[GaussianDiffusion1D, GaussianDiffusion1D]:
        """(raw, EMA) diffusions holding member ``i``'s current weights (fresh modules)."""
        out = []
        for source in (self.params, self.ema):
            model = build_diffusion(self.config.rank, self.config.timesteps, self.mining).to(self.device, self.dtype)
            self._load_weights(model, source, i)
            out.append(model)
        return out[0], out[1]

    @staticmethod
    @torch.no_grad()
    def _load_weights(model: GaussianDiffusion1D, source: list[torch.Tensor], i: int) -> None:
        for p, stacked in zip(model.model.ebm.parameters(), source):
            p.copy_(stacked[i])

    # ---------------------------------------------------------------- checkpoints (Trainer1D's format)
    def member_state(self, i: int) -> dict[str, Any]:
        """Member ``i``'s resume checkpoint, in :meth:`Trainer1D.state_dict`'s layout."""
        keys = [f"model.ebm.{name}" for name in self.names]
        step = self.steps[i]
        adam = {"state": {j: {"step": torch.tensor(float(step), dtype=torch.float32),
                              "exp_avg": self.exp_avg[j][i].clone(), "exp_avg_sq": self.exp_avg_sq[j][i].clone()}
                          for j in range(len(self.names))} if step else {},
                "param_groups": self._adam_groups}
        gen = self.generators[i].get_state()
        if self.device.type == "cpu":
            rng = {"torch": gen}
        else:  # Trainer1D's layout: every visible device's state, this member's at the training device
            cuda = torch.cuda.get_rng_state_all()
            cuda[self.device.index or 0] = gen
            rng = {"torch": torch.get_rng_state(), "cuda": cuda}
        return {"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprints[i], "step": step,
                "model": {k: p[i].clone() for k, p in zip(keys, self.params)},
                "ema": {"format": "device-ema-v1", "step": step, "initted": step > 0,
                        "ema_model": {k: p[i].clone() for k, p in zip(keys, self.ema)}},
                "optimizer": adam, "rng": rng, "data": self.streams[i].state_dict(), "curve": self.curves[i],
                "train_seconds": self.train_seconds[i], "train_cpu_seconds": self.train_cpu_seconds[i],
                "train_flops": self.train_flops[i],
                # a diverged member stays diverged when its pack resumes (a solo run never
                # checkpoints after diverging; Trainer1D honours this key too)
                "diverged_at": self.diverged_at[i]}

    @torch.no_grad()
    def load_member_state(self, i: int, state: dict[str, Any]) -> None:
        """Restore member ``i`` from a checkpoint written by a pack or by :class:`Trainer1D`."""
        keys = [f"model.ebm.{name}" for name in self.names]
        if int(state["ema"]["step"]) != int(state["step"]):
            raise ValueError("checkpoint's EMA counter differs from its step (not a training checkpoint)")
        adam = state["optimizer"]["state"]
        for j, key in enumerate(keys):
            self.params[j][i].copy_(state["model"][key])
            self.ema[j][i].copy_(state["ema"]["ema_model"][key])
            self.exp_avg[j][i].copy_(adam[j]["exp_avg"] if j in adam else 0)
            self.exp_avg_sq[j][i].copy_(adam[j]["exp_avg_sq"] if j in adam else 0)
        rng = state["rng"]
        index = self.device.index or 0
        if self.device.type == "cpu":
            self.generators[i].set_state(rng["torch"].cpu())
        elif len(rng.get("cuda", [])) > index:
            self.generators[i].set_state(rng["cuda"][index].cpu())
        else:
            log.warning("member %d: its checkpoint holds no RNG state of %s (written on another device); its "
                        "noise continues from a fresh generator", i, self.device)
        self.streams[i].load_state_dict(state["data"])
        self.steps[i] = int(state["step"])
        self.curves[i] = list(state["curve"])
        self.train_seconds[i] = float(state["train_seconds"])
        self.train_cpu_seconds[i] = float(state.get("train_cpu_seconds", 0.0))
        self.train_flops[i] = float(state.get("train_flops", 0.0))
        self.diverged_at[i] = state.get("diverged_at")

    def save_checkpoints(self) -> None:
        for i, path in enumerate(self.resume_paths):
            if path is not None:
                ckpt.atomic_save(self.member_state(i), path)

    def try_resume(self) -> None:
        """Load each member's usable checkpoint (see :meth:`Trainer1D.try_resume`)."""
        for i, path in enumerate(self.resume_paths):
            if path is None:
                continue
            state = load_resume(path, self.fingerprints[i], self.config.steps)
            if state is None or int(state["step"]) <= self.steps[i]:  # not past a loaded trunk state
                continue
            self.load_member_state(i, state)
            self.resumed_from[i] = self.steps[i]
            log.info("member %d resumed from %s at step %d", i, path, self.steps[i])

    # ---------------------------------------------------------------- one step
    def _draw(self, active: list[bool]) -> tuple[torch.Tensor, ...]:
        """The stacked batch and noises; each active member draws from its own stream and generator
        in the solo run's order (batch, t, ξ, ξ'); a frozen member's generators are not touched."""
        cfg = self.config
        size, dim = cfg.batch_size, cfg.rank * cfg.rank
        width = 5 if self.mining.uses_negatives else 4
        columns: list[list[torch.Tensor]] = [[] for _ in range(width)]
        for i in range(self.n):
            if active[i]:
                A, Y = next(self.streams[i])
                g = self.generators[i]
                draws = [A.to(self.dtype), Y.to(self.dtype),
                         torch.randint(0, self.template.timesteps, (size,), device=self.device, generator=g),
                         torch.randn(size, dim, device=self.device, dtype=self.dtype, generator=g)]
                if self.mining.uses_negatives:
                    draws.append(torch.randn(size, dim, device=self.device, dtype=self.dtype, generator=g))
            else:
                zeros = torch.zeros(size, dim, device=self.device, dtype=self.dtype)
                draws = [zeros, zeros, torch.zeros(size, dtype=torch.long, device=self.device), zeros, zeros][:width]
            for column, value in zip(columns, draws):
                column.append(value)
        return tuple(torch.stack(c) for c in columns)

    @torch.no_grad()
    def _adam(self, grads: list[torch.Tensor], lr: float, step: int) -> None:
        """``torch.optim.Adam`` (no weight decay) on the stacked tensors: every member is at Adam
        step ``step + 1``; frozen members keep their weights and moments."""
        beta1, beta2 = self.config.betas
        masked = not all(self._active_host)
        if masked:
            saved = [[t.clone() for t in group] for group in (self.params, self.exp_avg, self.exp_avg_sq)]
        count = float(step + 1)
        bias1, bias2 = 1 - beta1 ** count, 1 - beta2 ** count
        torch._foreach_lerp_(self.exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(self.exp_avg_sq, beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, bias2 ** 0.5)
        torch._foreach_add_(denom, ADAM_EPS)
        torch._foreach_addcdiv_(self.params, self.exp_avg, denom, value=-(lr / bias1))
        if masked:
            for group, old in zip((self.params, self.exp_avg, self.exp_avg_sq), saved):
                self._keep_frozen(group, old)

    def _keep_frozen(self, tensors: list[torch.Tensor], old: list[torch.Tensor]) -> None:
        for t, o in zip(tensors, old):
            t.copy_(torch.where(self._active.view(-1, *([1] * (t.dim() - 1))), t, o))

    @torch.no_grad()
    def _ema_update(self, counter: int) -> None:
        """The EMA update of every active member whose counter reads ``counter`` (DeviceEMA.update)."""
        cfg = self.config
        if counter and counter % cfg.ema_update_every:
            return
        old = [t.clone() for t in self.ema] if not all(self._active_host) else None
        if counter == 0 or counter <= cfg.ema_update_after_step:
            torch._foreach_copy_(self.ema, self.params)
        else:
            # DeviceEMA (like ema-pytorch) advances its counter before it computes the decay
            decay = ema_decay(counter + 1, beta=cfg.ema_decay, update_after_step=cfg.ema_update_after_step,
                              power=cfg.ema_power)
            torch._foreach_lerp_(self.ema, self.params, 1.0 - decay)
        if old is not None:
            self._keep_frozen(self.ema, old)

    def validate(self, i: int) -> dict[str, float]:
        """Member ``i``'s validation MSEs (EMA and raw), as :meth:`Trainer1D.validate`."""
        if self.val_set is None:
            return {}
        cfg = self.config
        self._load_weights(self.template, self.ema, i)
        out = {"val_mse_ema": heldout_mse(self.template, self.val_set, cfg.val_inner_steps)}
        if cfg.validate_raw:
            self._load_weights(self.template, self.params, i)
            out["val_mse_raw"] = heldout_mse(self.template, self.val_set, cfg.val_inner_steps)
        return out

    def step_once(self, step: int) -> dict[str, torch.Tensor]:
        """Pack step ``step`` for the active members: batch and noises, the vmapped loss and
        gradients (clipped per member), Adam and the EMA. Returns the loss parts, shape (N,) each;
        reads nothing from the device."""
        A, Y, *noise = self._draw(self._active_host)
        params = dict(zip(self.names, self.params))
        grads, parts = self._vstep[self.template.is_mining_step(step)](params, A, Y, *noise)
        self._adam(list(grads), self.config.lr_at(step), step)
        self._ema_update(step)
        return parts

    # ---------------------------------------------------------------- loop
    def train(self) -> list[TrainResult]:
        """Run (or continue) every member to ``config.steps``; one result per member."""
        cfg = self.config
        self.try_resume()
        start = min(self.steps)
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        bar = tqdm(total=cfg.steps, initial=start, disable=not show, dynamic_ncols=True, desc=f"train x{self.n}")
        flops = training_step_flops(self.template, cfg, self.device)
        sums: dict[str, torch.Tensor] = {}
        counts = [0] * self.n
        first_bad = torch.full((self.n,), -1, dtype=torch.long, device=self.device)
        interval_start, interval_cpu = time.perf_counter(), time.process_time()
        step = start
        with StopRequest() as stop:
            while step < cfg.steps:
                active = self.active_at(step)
                if not any(active):  # members resumed from later checkpoints wait; diverged ones are done
                    waiting = [s for s, d in zip(self.steps, self.diverged_at) if d is None and s > step]
                    if not waiting:
                        break
                    step = min(waiting)
                    continue
                self._set_active(active)
                parts = self.step_once(step)
                mined = self.template.is_mining_step(step)
                loss = parts["loss"]
                bad = (~torch.isfinite(loss) | (loss > cfg.max_loss)) & self._active & (first_bad < 0)
                first_bad = torch.where(bad, torch.full_like(first_bad, step), first_bad)
                if not all(active):
                    parts = {k: torch.where(self._active, v, torch.zeros_like(v)) for k, v in parts.items()}
                accumulate(sums, parts)
                for i in range(self.n):
                    if active[i]:
                        counts[i] += 1
                        self.steps[i] += 1
                        if flops:
                            self.train_flops[i] += flops[mined]
                step += 1
                bar.update(1)
                at_log = step % cfg.log_every == 0 or step == cfg.steps
                if not (at_log or stop.signum is not None):
                    continue
                seconds, cpu_seconds = elapsed(self.device, interval_start, interval_cpu)
                first, residuals, means = self._read_interval(sums, counts, first_bad)
                trained = [i for i in range(self.n) if counts[i]]
                share = 1.0 / max(sum(first[i] < 0 for i in trained), 1)  # among those not diverging now
                for i in trained:
                    if first[i] >= 0:
                        self.diverged_at[i] = first[i]
                        log.error("member %d (seed %d) diverged at step %d (loss NaN/inf or > max_loss=%g); "
                                  "frozen, the others go on", i, self.configs[i].seed, first[i], cfg.max_loss)
                        self._append_row(i, means[i], counts[i], seconds, {})
                        continue
                    self.streams[i].check(residuals[i])
                    self.train_seconds[i] += seconds * share
                    self.train_cpu_seconds[i] += cpu_seconds * share
                    validate = step % cfg.eval_every == 0 or step == cfg.steps
                    metrics = self.validate(i) if validate else {}
                    self._append_row(i, means[i], counts[i], seconds, metrics)
                    if metrics:
                        eta = eta_seconds(step, cfg.steps, recent_rate(self.curves[i]))
                        log.info("member %d (seed %d) step %d of %d: loss %.4f, %s; ETA %s", i, self.configs[i].seed,
                                 step, cfg.steps, self.curves[i][-1]["loss"],
                                 ", ".join(f"{k} {v:.5f}" for k, v in metrics.items()), duration_text(eta))
                sums, counts = {}, [0] * self.n
                if stop.signum is not None:
                    self.save_checkpoints()
                    bar.close()
                    log.warning("received signal %d at step %d; checkpoints written, exiting", stop.signum, step)
                    raise SystemExit(128 + stop.signum)
                if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    self.save_checkpoints()
                interval_start, interval_cpu = time.perf_counter(), time.process_time()
        bar.close()
        return [TrainResult("diverged" if self.diverged_at[i] is not None else "completed", self.steps[i],
                            self.diverged_at[i], self.train_seconds[i], self.resumed_from[i], self.curves[i],
                            self.train_cpu_seconds[i], self.train_flops[i]) for i in range(self.n)]

    def _read_interval(self, sums: dict[str, torch.Tensor], counts: list[int], first_bad: torch.Tensor
                       ) -> tuple[list[int], list[float], list[dict[str, float]]]:
        """Per member, in one read from the device: the first diverged step (-1 if none), the data
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
        """Member ``i``'s learning-curve row (:func:`diffusion_lib.curve.curve_row`, as a solo run's)."""
        self.curves[i].append(curve_row(self.steps[i], self.config.lr_at(self.steps[i] - 1), means, count, seconds,
                                        metrics, self.train_seconds[i], self.train_cpu_seconds[i],
                                        self.train_flops[i]))
        write_heartbeat(self.progress_paths[i], step=self.steps[i], steps=self.config.steps, curve=self.curves[i],
                        diverged_at=self.diverged_at[i])
