"""diffusion_lib: IRED energy-diffusion for matrix inversion with configurable negative mining.

Modules (one idea each): ``data`` (problems and held-out files), ``model`` (EBM and the gradient
wrapper), ``mining`` (the mining config: modes, negatives or not, mining steps), ``diffusion``
(schedule, opt step, mining losses, sampling), ``run_config`` (TrainConfig: a run's settings, its identity and
fingerprint), ``training`` (seeding a run, results, validation), ``engine`` (the one training engine: N ≥ 1 runs of one strategy as stacked weights; a solo run is N = 1), ``adam`` (Adam on stacked weights), ``signals`` (SIGTERM as a checkpoint request), ``curve`` (learning-curve rows), ``functional`` (the loss and its gradient as a function of the weights), ``step`` (the engine's one update: gradients, clipping, Adam, EMA, frozen runs; eager, compiled or CUDA
graphs), ``ema`` (the EMA without host syncs), ``gpus`` (GPU slots per job), ``checkpoint`` (atomic resumable checkpoints), ``evaluation`` (SPEC §7 metrics),
``compute`` (FLOPs per step, curves read at a compute budget), ``statistics`` (seed-unit intervals,
relative-change CIs, Holm), ``convergence`` (the plateau gate), ``verdict`` (SPEC §8's six
outcomes), ``tables`` / ``figures`` / ``report`` (the study's tables, seaborn figures, and
report.md / report.html; ``figure_style``: one look per strategy and the layout check; ``latex``:
booktabs tables; ``report_browser``: the page in headless Chromium), ``config`` (schema validation, sweeps, per-strategy seeds, command-line
values), ``seeding`` (seeds, RNG state, device), ``provenance`` (code and value fingerprints),
``layout`` (where each result lives, keyed by what shapes it), ``scheduling`` (runtime and memory
a job asks for, which runs train together), ``runtime`` (logging, torch setup), ``jobs`` (one module per workflow rule),
``bench`` (speed), and what only watches a study: ``progress`` (heartbeats, ETAs), ``status`` (the
study status table), ``tracking`` (trackers; TensorBoard streams), ``mlflow_tracking`` (MLflow runs
of training runs and of the study), ``local_server`` (local TensorBoard/MLflow servers for scripts and tests).
``docs/method.md`` maps each SPEC section to the code.

Importing the package loads no module (nor torch): the names below load theirs on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"Heldout": "data", "inverse_problems": "data", "load_heldout": "data", "make_heldout": "data",
            "save_heldout": "data", "GaussianDiffusion1D": "diffusion", "build_diffusion": "diffusion",
            "cosine_schedule": "diffusion", "MiningConfig": "mining", "EBM": "model", "DiffusionWrapper": "model",
            "TrainConfig": "run_config", "Engine": "engine"}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
