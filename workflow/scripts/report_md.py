"""Rule report_md: report.md and report.html (shim over diffusion_lib.jobs.study.write_report), and
the study's MLflow parent run when a tracking URI is set (diffusion_lib.watch.mlflow_runs.log_study)."""
from pathlib import Path

import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.jobs.study import write_report
from diffusion_lib.watch.mlflow_runs import log_study
from diffusion_lib.watch.mlflow_client import settings
from diffusion_lib.jobs.runtime import logging_to

with logging_to(snakemake.log[0]):
    tables = {k: v for k, v in snakemake.input.items() if k not in ("verdict", "figures")}
    write_report(tables=tables, verdict_path=snakemake.input.verdict, figures=snakemake.params.figures,
                 report_path=snakemake.output.md, html_path=snakemake.output.html)
    # tracking never shapes the report: read from the config, not params, so that it reruns nothing
    if (mlflow := settings(snakemake.config)) is not None:
        log_study(mlflow, Path(snakemake.output.html).parent, snakemake.input.verdict, tables["contrasts"],
                  [snakemake.output.html, snakemake.output.md, snakemake.input.verdict, tables["contrasts"],
                   tables["ladder_contrasts"]])
