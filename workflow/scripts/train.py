"""Rules trunk, branch, train (and pack rules): their runs (shim over diffusion_lib.jobs.train.train_runs)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)

from diffusion_lib.config import option
from diffusion_lib.gpus import gpu_slot
from diffusion_lib.jobs.train import train_runs
from diffusion_lib.layout import NOT_SHAPING_TRAIN_KEYS
from diffusion_lib.runtime import logging_to

p = snakemake.params
# each run: its seed, budget, the trunk state it starts from (an input too) and its output files
runs = [dict(r) for r in p.runs]
device = option(snakemake.config, "device")
slot = gpu_slot(device, "results/.gpu-slots", option(snakemake.config, "resources.jobs_per_gpu"))
with logging_to(list(snakemake.log)), slot:
    # the checkpoint cadence, compile, CUDA graphs, the pack size and the device do not shape a run:
    # read from the config, not params, so that changing them never retrains
    train_runs(val_path=snakemake.input.val, runs=runs, mining=p.mining, train=p.train, rank=p.rank, id_eps=p.id_eps,
               implementation={k: option(snakemake.config, f"train.{k}") for k in NOT_SHAPING_TRAIN_KEYS},
               device=device, threads=snakemake.threads, trunk_to=runs[0].get("trunk_to"))
