"""The training step compiled ahead of time (train.aot) against the eager closed form, paired in one process.

    python tools/ab_aot.py [--modes none,random,adversarial] [--blocks 15] [--block 20] [--json]

Two engines of the pilot's shape (batch 64, rank 20, one thread, the pilot's mining settings) train
side by side, one with ``train.aot: auto`` and one with ``false``; after a warm-up (which compiles
the step, or loads it from the cache) each block's CPU time (``time.process_time``) is taken around
``--block`` steps of each engine in turn. Prints per mode the median milliseconds per step of each
and their ratio. Use it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from diffusion_lib.train.engine import Engine
from diffusion_lib.settings.run_config import TrainConfig
from diffusion_lib.jobs.runtime import setup_torch

MINING = {"none": {"mode": "none"}, "random": {"mode": "random", "noise_scale": 3.0, "energy_loss_weight": 0.5},
          "adversarial": {"mode": "adversarial", "opt_steps": 2, "noise_scale": 3.0, "energy_loss_weight": 0.5}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default="none,random,adversarial")
    p.add_argument("--blocks", type=int, default=15)
    p.add_argument("--block", type=int, default=20)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    setup_torch(1, "cpu")
    for mode in a.modes.split(","):
        engines = {}
        for aot in ("auto", False):
            cfg = TrainConfig(batch_size=64, rank=20, lr=5e-4, ema_update_every=1, ema_update_after_step=100,
                              measure_flops=False, aot=aot)
            engines[aot] = Engine.seeded([cfg], MINING[mode], progress=False)
        steps = dict.fromkeys(engines, 0)

        def run(key: str | bool, n: int) -> None:
            for _ in range(n):
                engines[key].step_once(steps[key], [True])
                steps[key] += 1

        for key in engines:
            run(key, 30)
        times: dict[str | bool, list[float]] = {key: [] for key in engines}
        for _ in range(a.blocks):
            for key in engines:
                start = time.process_time()
                run(key, a.block)
                times[key].append((time.process_time() - start) / a.block)
        ms = {key: 1000 * statistics.median(v) for key, v in times.items()}
        compiled = engines["auto"].update
        record = {"mode": mode, "aot_step": compiled.mode, "aot_fell_back": compiled.aot_failed,
                  "eager_ms_per_step": ms[False], "aot_ms_per_step": ms["auto"],
                  "eager_over_aot": ms[False] / ms["auto"],
                  "blocks": a.blocks, "block": a.block, "torch": torch.__version__}
        print(json.dumps(record) if a.json else record, flush=True)


if __name__ == "__main__":
    main()
