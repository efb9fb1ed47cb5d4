"""Rule jobs_table: the study's training jobs as tab-separated values (shim over diffusion_lib.plan.study_plan.write_table)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.jobs.runtime import logging_to
from diffusion_lib.plan.study_plan import write_table

with logging_to(snakemake.log[0]):
    write_table(snakemake.params.rows, snakemake.output[0])
