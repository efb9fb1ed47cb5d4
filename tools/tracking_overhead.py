"""What tracking costs a training job: the pilot's first trunk piece trained untracked, with its
TensorBoard stream, and with TensorBoard and MLflow (a local ``mlflow server``, SQLite store),
each block a fresh process as a workflow job is, the variants alternating, medians.

    python tools/tracking_overhead.py --mode none --steps 580 --blocks 5 [--json]

Each child process builds the run exactly as the workflow's job does (the pilot's training block
for the strategy with ``--mode``, seed 0) and trains it through :class:`diffusion_lib.watch.job_tracking.JobTracking`.
Reported per variant: the median wall and CPU seconds of the whole process (imports, the MLflow
client's start on its thread, training, the bounded wait for queued calls), and the ratio to the
untracked median. The server's own CPU time is not counted (it runs apart from the jobs).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VARIANTS = ("off", "tensorboard", "tensorboard+mlflow")


def child(variant: str, mode: str, steps: int, folder: str, uri: str) -> None:
    from diffusion_lib.ired.data import make_heldout
    from diffusion_lib.train.engine import Engine
    from diffusion_lib.plan.layout import Layout
    from diffusion_lib.watch.mlflow_client import MlflowSettings
    from diffusion_lib.settings.run_config import train_config
    from diffusion_lib.jobs.runtime import setup_torch
    from diffusion_lib.ired.seeding import derive_seed
    from diffusion_lib.watch.status import study_config
    from diffusion_lib.watch.job_tracking import JobTracking

    setup_torch(1, "cpu")  # as the workflow's jobs do
    cfg = study_config()
    spec = next(s for s in Layout(cfg).runs if s.mode == mode and s.seed == 0)
    rank, eps = cfg["data"]["rank"], cfg["data"]["id_eps"]
    val = make_heldout(cfg["data"]["val_size"], rank, eps, derive_seed(cfg["data"]["seed"], "val_id"), name="val_id")
    train = train_config({**spec.train, "steps": steps}, seed=0, rank=rank, id_eps=eps)
    run_dir = Path(folder) / spec.run
    runs = [{"run": spec.run, "seed": 0, "dir": str(run_dir), "resume_path": str(run_dir / "resume.ckpt")}]
    mlflow = MlflowSettings(uri, "overhead", "overhead", {spec.run: f"{spec.strategy}/seed0"}) if "mlflow" in variant else None
    with JobTracking(runs, full_steps=steps, tensorboard="tensorboard" in variant, mlflow=mlflow,
                     params=[{"train": spec.train}], tags={"mode": mode}) as tracking:
        engine = Engine.seeded([train], spec.mining_config, val, resume_paths=[runs[0]["resume_path"]], progress=False,
                               trackers=tracking.trackers)
        (result,) = engine.train()
        tracking.finish(0, result.curve, [], result.status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="none", choices=["none", "random", "adversarial"])
    parser.add_argument("--steps", type=int, default=580)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--uri", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.mode, args.steps, args.folder, args.uri)
    from tools.local_server import mlflow_server

    scratch = Path(tempfile.mkdtemp(prefix="tracking-overhead-"))
    times: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    with mlflow_server(f"sqlite:///{scratch / 'mlflow.db'}", scratch / "art") as (uri, _):
        for block in range(args.blocks):
            order = VARIANTS[block % 3:] + VARIANTS[:block % 3]
            for variant in order:
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                subprocess.run([sys.executable, __file__, "--child", variant, "--mode", args.mode, "--steps",
                                str(args.steps), "--folder", str(scratch / f"{variant}-{block}"), "--uri", uri],
                               check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
                wall = time.perf_counter() - start
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                times[variant].append((wall, cpu))
                print(f"block {block} {variant:>20}: {wall:6.1f} s wall, {cpu:6.1f} CPU-s", file=sys.stderr)
    med = {v: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for v, t in times.items()}
    out = {"mode": args.mode, "steps": args.steps, "blocks": args.blocks,
           "variants": {v: {"wall_s": w, "cpu_s": c, "wall_ratio": w / med["off"][0], "cpu_ratio": c / med["off"][1]}
                        for v, (w, c) in med.items()}}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for v, m in out["variants"].items():
            print(f"{v:>20}: median {m['wall_s']:.1f} s wall ({m['wall_ratio']:.3f}x), "
                  f"{m['cpu_s']:.1f} CPU-s ({m['cpu_ratio']:.3f}x)")


if __name__ == "__main__":
    main()
