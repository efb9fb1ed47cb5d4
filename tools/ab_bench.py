"""Before/after of the training step and of sampling, each checkout as its own processes, alternating.

    python tools/ab_bench.py --old /path/to/older/checkout [--repeats 3] [--steps 300]
        [--modes none,random,adversarial] [--sample-problems 1024] [--old-args=--no-aot] --json

Runs ``python -m tools.bench --batch-size 64 --threads 1`` (the pilot's batch and thread
settings) of the older checkout and of this one in turn, ``--repeats`` times per mode, each in a fresh
process with its own checkout on ``PYTHONPATH`` — so each side runs exactly as its workflow jobs would,
process settings included (malloc, denormals). Prints per mode the median steady training steps/s,
sampling ms per problem (method §6 at ``--sample-problems``), the ratios after/before, the FLOPs per step
each side executes and the fraction of the single-thread fp32 matmul peak (measured in every run, median)
each achieves. Use it on an otherwise idle machine; the one-off scripts that paired blocks in one process (ab_engine.py, step_speed.py) were removed in issue 32 with the engine layouts they compared; their results stay in docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def bench(checkout: Path, mode: str, steps: int, sample_problems: int, extra: list[str] | None = None) -> dict:
    module = "tools.bench" if (checkout / "tools/bench.py").exists() else "diffusion_lib.bench"  # before issue 32
    cmd = [sys.executable, "-m", module, "--mode", mode, "--batch-size", "64", "--steps", str(steps),
           "--threads", "1", "--device", "cpu", "--sample-problems", str(sample_problems), "--json", *(extra or [])]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", type=Path, required=True)
    p.add_argument("--new", type=Path, default=HERE)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--modes", default="none,random,adversarial")
    p.add_argument("--sample-problems", type=int, default=1024)
    p.add_argument("--old-args", default="", help="extra bench arguments of the old side (e.g. --old . "
                   "--old-args=--no-aot: this checkout's eager step against its step compiled ahead of time)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    sides = {"before": a.old.resolve(), "after": a.new.resolve()}
    extra = {"before": a.old_args.split(), "after": []}
    for mode in a.modes.split(","):
        runs: dict[str, list[dict]] = {k: [] for k in sides}
        for _ in range(a.repeats):
            for name, checkout in sides.items():
                runs[name].append(bench(checkout, mode, a.steps, a.sample_problems, extra[name]))
        med = {name: {key: statistics.median(r[key] for r in rs) for key in
                      ("steps_per_s", "sample_ms_per_problem", "matmul_peak_gflops", "train_mflop_per_problem",
                       "sample_mflop_per_problem")} for name, rs in runs.items()}
        for name, rs in runs.items():
            med[name]["executed_mflop_per_problem"] = statistics.median(
                r.get("executed_mflop_per_problem", r["train_mflop_per_problem"]) for r in rs)
        record = {"mode": mode, "repeats": a.repeats, "torch": runs["after"][0]["torch"]}
        for name, m in med.items():
            step_gflops = m["executed_mflop_per_problem"] * 64 * m["steps_per_s"] / 1e3
            sample_gflops = m["sample_mflop_per_problem"] / m["sample_ms_per_problem"]
            record.update({f"{name}_steps_per_s": m["steps_per_s"], f"{name}_sample_ms_per_problem": m["sample_ms_per_problem"],
                           f"{name}_executed_mflop_per_problem": m["executed_mflop_per_problem"],
                           f"{name}_sample_mflop_per_problem": m["sample_mflop_per_problem"],
                           f"{name}_matmul_peak_gflops": m["matmul_peak_gflops"],
                           f"{name}_train_fraction_of_peak": step_gflops / m["matmul_peak_gflops"],
                           f"{name}_sample_fraction_of_peak": sample_gflops / m["matmul_peak_gflops"]})
        record["train_after_over_before"] = med["after"]["steps_per_s"] / med["before"]["steps_per_s"]
        record["sample_before_over_after"] = med["before"]["sample_ms_per_problem"] / med["after"]["sample_ms_per_problem"]
        record["reference_mflop_per_problem"] = med["after"]["train_mflop_per_problem"]
        print(json.dumps(record) if a.json else record, flush=True)


if __name__ == "__main__":
    main()
