"""diffusion_lib: IRED energy-diffusion for matrix inversion with configurable negative mining.

Modules (one idea each): ``data`` (problems and held-out files), ``model`` (EBM and the gradient
wrapper), ``diffusion`` (schedule, opt step, mining losses, sampling), ``training`` (Trainer1D),
``checkpoint`` (atomic resumable checkpoints), ``evaluation`` (SPEC §7 metrics), ``statistics``
(SPEC §8 tests and verdict), ``report`` (tables, figures, report.md), ``config`` (schema
validation, sweeps), ``seeding`` (seeds, RNG state, device), ``bench`` (speed benchmark).
``docs/method.md`` maps each SPEC section to the code.
"""
from .data import Heldout, inverse_problems, load_heldout, make_heldout, save_heldout
from .diffusion import GaussianDiffusion1D, MiningConfig, cosine_schedule
from .model import EBM, DiffusionWrapper
from .training import TrainConfig, Trainer1D, build_diffusion

__all__ = ["EBM", "DiffusionWrapper", "GaussianDiffusion1D", "Heldout", "MiningConfig", "TrainConfig",
           "Trainer1D", "build_diffusion", "cosine_schedule", "inverse_problems", "load_heldout",
           "make_heldout", "save_heldout"]
__version__ = "0.1.0"
