"""Rule heldout: one held-out split (shim over diffusion_lib.jobs.data.make_split)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.jobs.data import make_split
from diffusion_lib.jobs.runtime import logging_to

with logging_to(snakemake.log[0]):
    make_split(snakemake.output[0], **snakemake.params.spec)
