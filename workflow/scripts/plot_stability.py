"""Rule plot_stability: the stability study's figure (shim over diffusion_lib.jobs.study.draw_stability)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.jobs.study import draw_stability
from diffusion_lib.jobs.runtime import logging_to

with logging_to(snakemake.log[0]):
    draw_stability(tables={k: snakemake.input[k] for k in ("stability_km", "stability_shares", "stability_runs")},
                   verdict_path=snakemake.input.verdict, figure=snakemake.output[0], options=snakemake.params.options)
