"""Rule report_md: report.md and report.html (shim over diffusion_lib.jobs.study.write_report)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.jobs.study import write_report
from diffusion_lib.runtime import logging_to

with logging_to(snakemake.log[0]):
    tables = {k: v for k, v in snakemake.input.items() if k not in ("verdict", "figures")}
    write_report(tables=tables, verdict_path=snakemake.input.verdict, figures=snakemake.params.figures,
                 report_path=snakemake.output.md, html_path=snakemake.output.html)
