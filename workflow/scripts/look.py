"""Rule look (comparison.ladder.until_stable): shim over diffusion_lib.jobs.study.look."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.jobs.study import look
from diffusion_lib.jobs.runtime import logging_to

p = snakemake.params
with logging_to(snakemake.log[0]):
    look(rungs=p.rungs, reference_path=snakemake.input.reference, comparison=p.comparison,
         top=int(snakemake.wildcards.budget), next_budget=p.next_budget, margin=p.margin,
         look_path=snakemake.output[0])
