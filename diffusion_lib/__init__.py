"""diffusion_lib: IRED energy-diffusion for matrix inversion with configurable negative mining.

Subpackages by concern, each importing only those listed before it:

* ``settings``: what a study, a run and a budget are (torch-free): mining and training settings, the
  learning-rate schedule, the budget ladder, run and sweep names, fingerprints;
* ``analysis``: what finished runs say (torch-free): statistics, convergence, stability, the
  verdict, the tables;
* ``ired``: the method: data, the energy network and its closed form, the diffusion, evaluation;
* ``train``: the training engine, its step, checkpoints, curves, FLOPs and heartbeats;
* ``plan``: the validated config, where results live, what jobs ask of a scheduler, packs;
* ``watch``: a study's status, TensorBoard and MLflow;
* ``report``: figures, tables and the report document;
* ``jobs``: one module per workflow rule.

``docs/architecture.md`` draws the map; ``docs/method.md`` maps each the method section to the code.
Importing the package loads no module (nor torch): the names below load theirs on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"Heldout": "ired.data", "inverse_problems": "ired.data", "load_heldout": "ired.data", "make_heldout": "ired.data",
            "save_heldout": "ired.data", "GaussianDiffusion1D": "ired.diffusion", "build_diffusion": "ired.diffusion",
            "cosine_schedule": "ired.diffusion", "MiningConfig": "settings.mining", "EBM": "ired.model", "DiffusionWrapper": "ired.model",
            "TrainConfig": "settings.run_config", "Engine": "train.engine"}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
