"""Rules trunk, branch, train (and pack rules): their runs (shim over diffusion_lib.jobs.train.train_runs)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)

from diffusion_lib.plan.config import option
from diffusion_lib.jobs.gpus import gpu_slot
from diffusion_lib.jobs.train import train_runs
from diffusion_lib.plan.layout import NOT_SHAPING_TRAIN_KEYS
from diffusion_lib.plan.files import GPU_SLOTS, job_runs
from diffusion_lib.watch.mlflow_client import settings as mlflow_settings
from diffusion_lib.jobs.runtime import logging_to

p = snakemake.params
out = snakemake.output
# the runs (seed, budget, the trunk state each continues, output files) from the job's files: params
# hold only what shapes a run, so the same run packed or alone is the same job to Snakemake
outputs = out.state if hasattr(out, "state") else out.model
starts = getattr(snakemake.input, "start", [])
runs = job_runs([outputs] if isinstance(outputs, str) else list(outputs),
                [starts] if isinstance(starts, str) else list(starts), p.train["steps"])
device = option(snakemake.config, "device")
slot = gpu_slot(device, GPU_SLOTS, option(snakemake.config, "resources.jobs_per_gpu"))
with logging_to(list(snakemake.log)), slot:
    # the checkpoint cadence, compile, CUDA graphs, the pack size, the device and tracking do not shape a run:
    # read from the config, not params, so that changing them never retrains
    train_runs(val_path=snakemake.input.val, runs=runs, mining=p.mining, train=p.train, rank=p.rank, id_eps=p.id_eps,
               implementation={k: option(snakemake.config, f"train.{k}") for k in NOT_SHAPING_TRAIN_KEYS},
               device=device, threads=snakemake.threads, trunk_to=runs[0].get("trunk_to"),
               tensorboard=option(snakemake.config, "tracking.tensorboard"), mlflow=mlflow_settings(snakemake.config))
