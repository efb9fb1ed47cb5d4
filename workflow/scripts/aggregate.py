"""Rule aggregate: tables and verdict (shim over diffusion_lib.jobs.study.aggregate)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.jobs.study import TABLES, aggregate
from diffusion_lib.jobs.runtime import logging_to

p = snakemake.params
with logging_to(snakemake.log[0]):
    aggregate(runs=p.runs, expected=[tuple(r) for r in p.expected], reference_path=snakemake.input.reference,
              tables={t: snakemake.output[t] for t in TABLES}, verdict_path=snakemake.output.verdict,
              comparison=p.comparison, default_inner=p.default_inner, sweep_points=p.sweep_points,
              training=p.training, name=p.name, rungs=p.rungs, ladder=p.ladder, growth=p.growth,
              growth_path=snakemake.output.get("growth"))
