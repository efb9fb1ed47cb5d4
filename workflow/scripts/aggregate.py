"""Rule aggregate: tables and verdict (shim over diffusion_lib.jobs.study.aggregate)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.jobs.study import aggregate
from diffusion_lib.jobs.runtime import logging_to
from diffusion_lib.plan.files import TABLES

study = {k: v for k, v in snakemake.params.study.items() if k != "reference_key"}
with logging_to(snakemake.log[0]):
    aggregate(**study, reference_path=snakemake.input.reference, tables={t: snakemake.output[t] for t in TABLES},
              verdict_path=snakemake.output.verdict, growth_path=snakemake.output.get("growth"))
