"""Rule train (or a pack rule): its runs (shim over diffusion_lib.jobs.train.train_runs)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from pathlib import Path

from diffusion_lib.config import option
from diffusion_lib.gpus import gpu_slot
from diffusion_lib.jobs.train import train_runs
from diffusion_lib.layout import NOT_SHAPING_TRAIN_KEYS, seed_of
from diffusion_lib.runtime import logging_to

p, out = snakemake.params, snakemake.output
files = [[f] if isinstance(f, str) else list(f) for f in (out.model, out.curve, out.status)]
runs = [
    {"run": Path(model).parent.name, "seed": seed_of(Path(model).parent.name), "model_path": model,
     "curve_path": curve, "status_path": status, "resume_path": str(Path(model).parent / "resume.ckpt")}
    for model, curve, status in zip(*files)
]
device = option(snakemake.config, "device")
slot = gpu_slot(device, "results/.gpu-slots", option(snakemake.config, "resources.jobs_per_gpu"))
with logging_to(list(snakemake.log)), slot:
    # the seed is in each run's directory name (and key); the checkpoint cadence, compile, CUDA
    # graphs, the pack size and the device do not shape a run: read from the config, not params,
    # so that changing them never retrains
    train_runs(val_path=snakemake.input.val, runs=runs, mining=p.mining, train=p.train, rank=p.rank, id_eps=p.id_eps,
               implementation={k: option(snakemake.config, f"train.{k}") for k in NOT_SHAPING_TRAIN_KEYS},
               device=device, threads=snakemake.threads)
