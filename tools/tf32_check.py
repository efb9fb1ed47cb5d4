"""TF32 against float64 on a trained model: gradient cosine and opt-step accept-flip rate.

    python tools/tf32_check.py results/runs/<run>/model.pt [--problems 512] [--device cpu|cuda] --json

Loads a finished run's model (raw weights; the EMA weights with --ema), draws problems from the
training distribution and prints :func:`tools.precision.tf32_report` (real TF32 on a GPU,
emulated TF32 on a CPU). docs/performance.md records its output for the pilot's runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tools/ and diffusion_lib/

from diffusion_lib.train.checkpoint import load_model
from diffusion_lib.ired.data import inverse_problems
from tools.precision import tf32_report
from diffusion_lib.ired.seeding import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--problems", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ema", action="store_true", help="test the EMA weights instead of the raw ones")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    dev = resolve_device(args.device)
    ema, raw, status = load_model(args.model, dev)
    model = ema if args.ema else raw
    rank = int(round(model.model.out_dim ** 0.5))
    A, Y = inverse_problems(args.problems, rank, 0.5, torch.Generator(device=dev).manual_seed(args.seed + 1), dev)
    report = {"model": args.model, "mode": status.get("mode"), "weights": "ema" if args.ema else "raw",
              **tf32_report(model, A, Y, seed=args.seed)}
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
