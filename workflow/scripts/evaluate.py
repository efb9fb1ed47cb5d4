"""Rule evaluate: method §7 metrics of one run (shim over diffusion_lib.jobs.evaluate.evaluate_run)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.plan.config import option
from diffusion_lib.jobs.gpus import gpu_slot
from diffusion_lib.plan.files import GPU_SLOTS
from diffusion_lib.jobs.evaluate import evaluate_run
from diffusion_lib.jobs.runtime import logging_to

i, p = snakemake.input, snakemake.params
device = option(snakemake.config, "device")
slot = gpu_slot(device, GPU_SLOTS, option(snakemake.config, "resources.jobs_per_gpu"))
with logging_to(snakemake.log[0]), slot:
    evaluate_run(model_path=i.model, test_paths={s: i[s] for s in ("test_id", "test_ood")},
                 metrics_path=snakemake.output.metrics, per_problem_path=snakemake.output.per_problem,
                 settings=p.settings, rank=p.rank, device=device,
                 threads=snakemake.threads)
