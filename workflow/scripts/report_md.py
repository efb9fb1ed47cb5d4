"""Rule report_md: report.md (shim over diffusion_lib.pipeline.write_report)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.pipeline import logging_to, write_report

with logging_to(snakemake.log[0]):
    write_report(tables={k: snakemake.input[k] for k in ("strategies", "pairwise", "test_time", "convergence",
                                                         "ablation")},
                 verdict_path=snakemake.input.verdict, figures=snakemake.params.figures, report_path=snakemake.output[0])
