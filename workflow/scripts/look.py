"""Rule look (comparison.ladder.until_stable): shim over diffusion_lib.jobs.study.look."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.jobs.study import look
from diffusion_lib.jobs.runtime import logging_to

with logging_to(snakemake.log[0]):
    look(**snakemake.params.look, reference_path=snakemake.input.reference, top=int(snakemake.wildcards.budget),
         look_path=snakemake.output[0])
