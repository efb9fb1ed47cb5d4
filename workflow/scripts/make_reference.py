"""Rule reference: trivial-predictor MSEs (shim over diffusion_lib.jobs.data.make_reference)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.jobs.data import make_reference
from diffusion_lib.jobs.runtime import logging_to

with logging_to(snakemake.log[0]):
    make_reference(dict(snakemake.input.items()), snakemake.output[0], **snakemake.params.spec)
