"""Rule train: one (strategy, seed) (shim over diffusion_lib.pipeline.train_run)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.pipeline import logging_to, train_run

p = snakemake.params
with logging_to(snakemake.log[0]):
    train_run(val_path=snakemake.input.val, model_path=snakemake.output.model, curve_path=snakemake.output.curve,
              status_path=snakemake.output.status, resume_path=p.resume.format(**snakemake.wildcards),
              strategy=snakemake.wildcards.strategy, seed=int(snakemake.wildcards.seed), mining=p.mining,
              train=p.train, rank=p.rank, id_eps=p.id_eps, device=p.device, threads=snakemake.threads)
