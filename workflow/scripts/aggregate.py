"""Rule aggregate: tables and verdict (shim over diffusion_lib.pipeline.aggregate)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.pipeline import TABLES, aggregate, logging_to

i, p = snakemake.input, snakemake.params
with logging_to(snakemake.log[0]):
    aggregate(runs=[{"metrics": m, "curve": c} for m, c in zip(i.metrics, i.curves)],
              expected=[tuple(r) for r in p.expected], reference_path=i.reference,
              tables={t: snakemake.output[t] for t in TABLES}, verdict_path=snakemake.output.verdict,
              roles=p.roles, default_inner=p.default_inner, primary=p.primary, delta=p.delta, alpha=p.alpha,
              convergence=p.convergence, sweep_points=p.sweep_points, training=p.training, name=p.name)
