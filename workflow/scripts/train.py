"""Rule train: one run (shim over diffusion_lib.jobs.train.train_run)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from pathlib import Path

from diffusion_lib.config import option
from diffusion_lib.gpus import gpu_slot
from diffusion_lib.jobs.train import train_run
from diffusion_lib.layout import NOT_SHAPING_TRAIN_KEYS
from diffusion_lib.runtime import logging_to

p, out = snakemake.params, snakemake.output
run_dir = Path(out.model).parent
device = option(snakemake.config, "device")
slot = gpu_slot(device, "results/.gpu-slots", option(snakemake.config, "resources.jobs_per_gpu"))
with logging_to(snakemake.log[0]), slot:
    # the checkpoint cadence, compile, CUDA graphs and the device do not shape a run: read from the
    # config, not params, so that changing them never retrains
    train_run(val_path=snakemake.input.val, model_path=out.model, curve_path=out.curve, status_path=out.status,
              resume_path=str(run_dir / "resume.ckpt"), run=run_dir.name, mining=p.mining, seed=p.seed,
              train=p.train, rank=p.rank, id_eps=p.id_eps,
              implementation={k: option(snakemake.config, f"train.{k}") for k in NOT_SHAPING_TRAIN_KEYS},
              device=device, threads=snakemake.threads)
