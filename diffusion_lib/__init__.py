"""diffusion_lib: IRED energy-diffusion for matrix inversion with configurable negative mining.

Modules (one idea each): ``data`` (problems and held-out files), ``model`` (EBM and the gradient
wrapper), ``mining`` (the mining config: modes, negatives or not, mining steps), ``diffusion``
(schedule, opt step, mining losses, sampling), ``run_config`` (TrainConfig: a run's settings, its identity and
fingerprint), ``training`` (Trainer1D), ``signals`` (SIGTERM as a checkpoint request), ``curve`` (learning-curve rows), ``pack`` (several seeds of one strategy trained together: stacked weights, one vmapped
step), ``functional`` / ``step`` (the step as a function of the weights; eager, compiled or CUDA
graphs), ``ema`` (the EMA without host syncs), ``gpus`` (GPU slots per job), ``checkpoint`` (atomic resumable checkpoints), ``evaluation`` (SPEC §7 metrics),
``compute`` (FLOPs per step, curves read at a compute budget), ``statistics`` (seed-unit intervals,
relative-change CIs, Holm), ``convergence`` (the plateau gate), ``verdict`` (SPEC §8's six
outcomes), ``tables`` / ``figures`` / ``report`` (the study's tables, seaborn figures, and
report.md / report.html; ``figure_style``: one look per strategy and the layout check; ``latex``:
booktabs tables; ``report_browser``: the page in headless Chromium), ``config`` (schema validation, sweeps, per-strategy seeds, command-line
values), ``seeding`` (seeds, RNG state, device), ``provenance`` (code and value fingerprints),
``layout`` (where each result lives, keyed by what shapes it), ``scheduling`` (runtime and memory
a job asks for, which runs train together), ``runtime`` (logging, torch setup), ``jobs`` (one module per workflow rule),
``bench`` (speed).
``docs/method.md`` maps each SPEC section to the code.
"""
from .data import Heldout, inverse_problems, load_heldout, make_heldout, save_heldout
from .diffusion import GaussianDiffusion1D, MiningConfig, cosine_schedule
from .model import EBM, DiffusionWrapper
from .diffusion import build_diffusion
from .training import TrainConfig, Trainer1D

__all__ = ["EBM", "DiffusionWrapper", "GaussianDiffusion1D", "Heldout", "MiningConfig", "TrainConfig",
           "Trainer1D", "build_diffusion", "cosine_schedule", "inverse_problems", "load_heldout",
           "make_heldout", "save_heldout"]
__version__ = "0.1.0"
