"""Rule evaluate: SPEC §7 metrics of one run (shim over diffusion_lib.pipeline.evaluate_run)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.pipeline import logging_to, evaluate_run

p = snakemake.params
with logging_to(snakemake.log[0]):
    evaluate_run(model_path=snakemake.input.model,
                 test_paths={s: snakemake.input[s] for s in ("test_id", "test_ood")},
                 metrics_path=snakemake.output.metrics, per_problem_path=snakemake.output.per_problem,
                 settings=p.settings, rank=p.rank, strategy=snakemake.wildcards.strategy,
                 seed=int(snakemake.wildcards.seed), device=p.device, threads=snakemake.threads)
