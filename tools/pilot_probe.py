"""Measure one candidate pilot design on one (strategy, seed): training time, the validation curve,
the convergence gate and the test MSE. Used to choose config/config.yaml (see docs/pilot-design.md).

    python tools/pilot_probe.py --mode adversarial --steps 3000 --batch-size 64 --lr 5e-4 \
        --schedule cosine --warmup 100 --floor 0.05 --seed 0 --json

Starting several probes at once (``&``) measures the time a workflow running that many jobs on
this machine would see. Held-out sets are generated in-process from the default data seed.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from diffusion_lib.jobs.runtime import setup_torch
from diffusion_lib.analysis.convergence import ConvergenceRule
from diffusion_lib.ired.data import make_heldout
from diffusion_lib.ired.evaluation import predict, solution_metrics
from diffusion_lib.ired.seeding import derive_seed
from diffusion_lib.train.engine import Engine
from diffusion_lib.settings.run_config import train_config
from diffusion_lib.train.engine import cpu_clock


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", default="adversarial", choices=["none", "random", "adversarial"])
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--schedule", default="constant", choices=["constant", "cosine", "wsd"])
    p.add_argument("--decay-fraction", type=float, default=0.2, help="wsd: share of the steps spent decaying")
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--floor", type=float, default=0.0)
    p.add_argument("--ema-every", type=int, default=1)
    p.add_argument("--evals", type=int, default=10, help="validation evaluations over the run")
    p.add_argument("--val-size", type=int, default=128)
    p.add_argument("--test-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    setup_torch(a.threads, "cpu")  # as the workflow's jobs do
    data_seed = 20240601
    val = make_heldout(a.val_size, 20, 0.5, derive_seed(data_seed, "val_id"), name="val_id")
    test = make_heldout(a.test_size, 20, 0.5, derive_seed(data_seed, "test_id"), name="test_id")
    every = max(a.steps // a.evals, 1)
    train = {"steps": a.steps, "batch_size": a.batch_size, "lr": a.lr, "eval_every": every, "log_every": every,
             "checkpoint_every": every, "val_size": a.val_size,
             "ema": {"decay": 0.995, "update_every": a.ema_every, "update_after_step": 100, "power": 2 / 3},
             "lr_schedule": {"kind": a.schedule, "warmup_steps": a.warmup, "min_lr_ratio": a.floor,
                             "decay_fraction": a.decay_fraction}}
    cfg = train_config(train, seed=a.seed, rank=20, id_eps=0.5)
    engine = Engine.seeded([cfg], {"mode": a.mode}, val, progress=False)  # the workflow's seeding of seed a.seed
    start, cpu = time.perf_counter(), cpu_clock()  # compiling the step (train.aot) included
    (result,) = engine.train()
    wall, cpu = time.perf_counter() - start, cpu_clock() - cpu
    pred, _ = predict(engine.models(0)[1], test, 5)
    test_mse = solution_metrics(pred, test)["mse"].mean().item()
    curve = [(r["step"], r["val_mse_ema"]) for r in result.curve if r["val_mse_ema"] == r["val_mse_ema"]]
    gate = ConvergenceRule().assess([s for s, _ in curve], [v for _, v in curve])
    record = {"mode": a.mode, "seed": a.seed, "steps": a.steps, "batch_size": a.batch_size, "lr": a.lr,
              "schedule": a.schedule, "warmup": a.warmup, "floor": a.floor, "wall_s": wall, "cpu_s": cpu,
              "test_mse": test_mse, "val_curve": curve, **gate, "step": engine.update.mode,
              "train_cpu_s": result.train_cpu_seconds,
              "torch": torch.__version__}
    print(json.dumps(record) if a.json else record)


if __name__ == "__main__":
    main()
