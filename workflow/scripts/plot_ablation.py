"""Rule plot_ablation: one swept parameter's figure (shim over diffusion_lib.jobs.study.draw_ablation)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.jobs.study import draw_ablation
from diffusion_lib.jobs.runtime import logging_to

with logging_to(snakemake.log[0]):
    draw_ablation(tables={k: snakemake.input[k] for k in ("runs", "ablation")}, verdict_path=snakemake.input.verdict,
                  parameter=snakemake.wildcards.parameter, figure=snakemake.output[0],
                  options=snakemake.params.options)
