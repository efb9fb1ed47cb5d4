"""Rule plot_main: main figures from cached tables (shim over diffusion_lib.jobs.study.draw_figures)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.jobs.study import draw_figures
from diffusion_lib.jobs.runtime import logging_to

with logging_to(snakemake.log[0]):
    draw_figures(tables={k: snakemake.input[k] for k in snakemake.params.tables},
                 verdict_path=snakemake.input.verdict,
                 figures={k: snakemake.output[k] for k in snakemake.params.figures},
                 latex={k: snakemake.output[k] for k in snakemake.params.latex},
                 options=snakemake.params.options)
