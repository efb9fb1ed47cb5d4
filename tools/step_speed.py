"""Training-loop speed of one checkout, for before/after comparisons in the same session.

    PYTHONPATH=<checkout> python tools/step_speed.py --mode adversarial --steps 600 [--compile] [--pack N] --json

Trains the pilot's configuration (rank 20, batch 64, one thread, the pilot's EMA and logging) for
``--steps`` steps with the checkout's training engine (``Engine``, or ``Trainer1D`` in a checkout from
before the one engine) and prints the loop's steps/s: the median over its 58-step log
intervals after the first (which includes compiling), and overall (validation off, FLOPs not
measured), as run-steps per second (N × the engine's steps/s with ``--pack N``) of wall time and of
CPU time (the process's, which other tenants of a shared machine disturb less). Only the ``diffusion_lib`` on PYTHONPATH decides what is measured, so
an older checkout can be timed by the same command, alternating with the current one.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import time
from pathlib import Path

import torch

import diffusion_lib
import diffusion_lib.jobs.runtime
from diffusion_lib.ired.data import make_heldout
from diffusion_lib.spec.run_config import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["none", "random", "adversarial"], default="adversarial")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--pack", type=int, default=1, help="runs trained together (seeds 0..N-1)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--syncs-steps", type=int, default=116, help="steps of a second run that counts host reads")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    getattr(diffusion_lib.jobs.runtime, "keep_freed_memory", lambda: None)()  # what this checkout's jobs do
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    extra = {"compile": True} if args.compile else {}
    if extra and "compile" not in fields:
        parser.error("this checkout has no train.compile")
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=5e-4, rank=20, eval_every=10**9, val_size=8,
                      log_every=58, checkpoint_every=58 * 10**6, ema_update_every=1, ema_update_after_step=100,
                      measure_flops=False, seed=0, **extra)
    _, train, _ = _trainer(cfg, args.mode, args.pack)
    start = time.perf_counter()
    results = train()
    rates = sorted(row["steps_per_s"] for row in results[0].curve[1:])  # the first interval includes compiling
    done = sum(r.steps_done for r in results)
    record = {"checkout": diffusion_lib.__file__, "mode": args.mode, "compile": args.compile, "steps": args.steps,
              "pack": args.pack, "run_steps_per_s": args.pack * rates[len(rates) // 2],
              "overall_run_steps_per_s": done / sum(r.train_seconds for r in results),
              "cpu_run_steps_per_s": done / sum(r.train_cpu_seconds for r in results),
              "wall_s": time.perf_counter() - start}
    if args.syncs_steps:
        record["syncs_per_step"] = _syncs_per_step(cfg, args.mode, args.syncs_steps, args.compile)
    print(json.dumps(record) if args.json else record)


def _syncs_per_step(cfg: TrainConfig, mode: str, steps: int, compile: bool) -> float:
    """Host reads per step of a fresh run (this checkout's diffusion_lib/train/host_reads.py counts them, so an
    older checkout on PYTHONPATH is counted the same way)."""
    try:  # the checkout's own counter, so its host_reads() marks are honoured
        from diffusion_lib.train import host_reads as syncs
    except ImportError:  # an older checkout: this checkout's counter, loaded by path
        spec = importlib.util.spec_from_file_location("syncs", Path(__file__).resolve().parents[1] / "diffusion_lib/train/host_reads.py")
        syncs = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(syncs)
    cfg = dataclasses.replace(cfg, steps=steps)
    warm, train, exclude = _trainer(cfg, mode, 1)
    if compile:  # compiling reads constants once: count the steady state
        warm()
    with syncs.count_host_reads(**exclude(syncs)) as reads:
        train()
    return sum(reads.values()) / steps


def _trainer(cfg: TrainConfig, mode: str, pack: int) -> tuple:
    """(one warm-up step, train() -> the runs' results, count_host_reads' extra arguments) of this
    checkout's engine for ``pack`` runs (seeds 0..pack-1): ``Engine``, or before it existed
    ``Trainer1D`` (one run) and ``PackTrainer`` (several)."""
    val = make_heldout(8, 20, 0.5, seed=1)
    configs = [dataclasses.replace(cfg, seed=s) for s in range(pack)]
    try:
        from diffusion_lib.train.engine import Engine
    except ImportError:
        if pack > 1:
            from diffusion_lib.pack import PackTrainer, init_member

            members = [init_member(c.seed, 20, c.timesteps, {"mode": mode}) for c in configs]
            trainer = PackTrainer([d for d, _ in members], [g for _, g in members], configs, val, progress=False)
            return None, trainer.train, lambda syncs: {}
        from diffusion_lib.training import Trainer1D, build_diffusion

        torch.manual_seed(0)
        trainer = Trainer1D(build_diffusion(20, 10, {"mode": mode}), cfg, val, progress=False)
        return (lambda: trainer.train_step(*next(trainer.stream), 0), lambda: [trainer.train()],
                lambda syncs: {"exclude": syncs.adam_step_counters(trainer.optimizer)})
    engine = Engine.seeded(configs, {"mode": mode}, val, progress=False)
    return lambda: engine.step_once(0, [True] * pack), engine.train, lambda syncs: {}


if __name__ == "__main__":
    main()
