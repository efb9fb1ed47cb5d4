"""Rule data: held-out sets and trivial-predictor reference (shim over diffusion_lib.pipeline.make_data)."""
import _repo  # noqa: F401  (diffusion_lib from this checkout)
from diffusion_lib.pipeline import SPLITS, logging_to, make_data

with logging_to(snakemake.log[0]):
    make_data({s: snakemake.output[s] for s in SPLITS}, reference_path=snakemake.output.reference,
              **dict(snakemake.params.items()))
