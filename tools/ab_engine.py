"""A/B of the training step (and of sampling) in one process: an older checkout's code against this
checkout's, alternating blocks, for paired timings.

    python tools/ab_engine.py --old /path/to/older/checkout [--blocks 15] [--block 29] [--packs 1,2]
        [--sample-blocks 5] --json

The older checkout's ``diffusion_lib`` is imported under another name (its imports are relative),
so both share one process, one thread and one machine state. Training: each block's CPU time
(``time.process_time``) is taken around ``--block`` training steps (data, update, EMA, the loop's
sums) of each engine in turn: the older checkout's ``Engine`` (issue 20 onwards) or, before it,
``Trainer1D``/``PackTrainer``. Prints, per mode and pack size, the median run-steps per CPU second of
each and their ratio. With ``--sample-blocks N``: SPEC §6 sampling of ``--sample-batch`` problems
(default inner steps) by each checkout's diffusion holding the same weights, N alternating blocks;
prints the median CPU milliseconds per problem, their ratio and the largest difference between the
two predictions.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from diffusion_lib.jobs.runtime import setup_torch
from diffusion_lib.train.engine import Engine
from diffusion_lib.spec.run_config import TrainConfig
from diffusion_lib.training import accumulate


def _import_old(checkout: Path):
    spec = importlib.util.spec_from_file_location("diffusion_lib_old", checkout / "diffusion_lib" / "__init__.py",
                                                  submodule_search_locations=[str(checkout / "diffusion_lib")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["diffusion_lib_old"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("diffusion_lib_old.training")


def _old_engine_stepper(cfg, mode, n):
    old = importlib.import_module("diffusion_lib_old.engine")
    config = importlib.import_module("diffusion_lib_old.run_config").TrainConfig
    cfg = config(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(config)})
    engine = old.Engine.seeded([dataclasses.replace(cfg, seed=s) for s in range(n)], {"mode": mode}, progress=False)
    return lambda k, sums: accumulate(sums, engine.step_once(k, [True] * n))


def _old_stepper(training, cfg, mode, n):
    if importlib.util.find_spec("diffusion_lib_old.engine") is not None:
        return _old_engine_stepper(cfg, mode, n)
    if n > 1:
        pack_mod = importlib.import_module("diffusion_lib_old.pack")
        members = [pack_mod.init_member(s, 20, 10, {"mode": mode}) for s in range(n)]
        trainer = pack_mod.PackTrainer([d for d, _ in members], [g for _, g in members],
                                       [dataclasses.replace(cfg, seed=s) for s in range(n)], progress=False)
        return lambda step, sums: accumulate(sums, trainer.step_once(step))
    torch.manual_seed(0)
    trainer = training.Trainer1D(training.build_diffusion(20, 10, {"mode": mode}), cfg, progress=False)

    def step(k, sums):
        A, Y = next(trainer.stream)
        _, parts = trainer.train_step(A, Y, k)
        trainer.ema.update()
        accumulate(sums, parts)
    return step


def _new_stepper(cfg, mode, n):
    engine = Engine.seeded([dataclasses.replace(cfg, seed=s) for s in range(n)], {"mode": mode}, progress=False)
    return lambda k, sums: accumulate(sums, engine.step_once(k, [True] * n))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", type=Path, required=True)
    p.add_argument("--blocks", type=int, default=15)
    p.add_argument("--block", type=int, default=29)
    p.add_argument("--modes", default="none,random,adversarial")
    p.add_argument("--packs", default="1,2")
    p.add_argument("--sample-blocks", type=int, default=0, help="also A/B sampling, this many blocks")
    p.add_argument("--sample-batch", type=int, default=1024)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    setup_torch(1, "cpu")  # as the workflow's jobs do
    training = _import_old(a.old.resolve())
    cfg = TrainConfig(batch_size=64, lr=5e-4, rank=20, ema_update_every=1, ema_update_after_step=100,
                      measure_flops=False, lr_schedule="constant", warmup_steps=0)
    old_cfg = cfg if hasattr(training, "seeded_member") else training.TrainConfig(
        **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
    for mode in a.modes.split(","):
        for n in map(int, a.packs.split(",")):
            steppers = {"before": _old_stepper(training, old_cfg, mode, n), "after": _new_stepper(cfg, mode, n)}
            times: dict[str, list[float]] = {k: [] for k in steppers}
            step = 0
            for block in range(a.blocks + 1):  # the first block of each is warm-up
                for name, stepper in steppers.items():
                    sums: dict = {}
                    start = time.process_time()
                    for k in range(a.block):
                        stepper(step + k, sums)
                    float(sums["loss"].sum())  # the loop's one read per interval
                    if block:
                        times[name].append(time.process_time() - start)
                step += a.block
            rate = {k: n * a.block / statistics.median(v) for k, v in times.items()}
            record = {"mode": mode, "runs": n, "before_run_steps_per_cpu_s": rate["before"],
                      "after_run_steps_per_cpu_s": rate["after"], "after_over_before": rate["after"] / rate["before"],
                      "blocks": a.blocks, "block": a.block, "torch": torch.__version__}
            print(json.dumps(record) if a.json else record, flush=True)
    if a.sample_blocks:
        record = _sampling(a.sample_blocks, a.sample_batch)
        print(json.dumps(record) if a.json else record, flush=True)


def _sampling(blocks: int, batch: int) -> dict:
    """Median CPU ms per problem of each checkout's ``sample`` on the same weights and problems."""
    from diffusion_lib.ired.data import inverse_problems
    from diffusion_lib.ired.diffusion import build_diffusion
    old = importlib.import_module("diffusion_lib_old.diffusion")
    torch.manual_seed(0)
    new_d, old_d = build_diffusion(20, 10), old.build_diffusion(20, 10)
    old_d.load_state_dict(new_d.state_dict())
    A, _ = inverse_problems(batch, 20, 0.5, torch.Generator().manual_seed(1))
    outs, times = {}, {"before": [], "after": []}
    for block in range(blocks + 1):  # the first block is warm-up
        for name, d in (("before", old_d), ("after", new_d)):
            start = time.process_time()
            outs[name] = d.sample(A, generator=torch.Generator().manual_seed(2))
            if block:
                times[name].append(time.process_time() - start)
    ms = {k: 1000 * statistics.median(v) / batch for k, v in times.items()}
    return {"sampling_batch": batch, "before_cpu_ms_per_problem": ms["before"], "after_cpu_ms_per_problem": ms["after"],
            "before_over_after": ms["before"] / ms["after"], "blocks": blocks,
            "max_abs_prediction_difference": float((outs["before"] - outs["after"]).abs().max()),
            "torch": torch.__version__}


if __name__ == "__main__":
    main()
