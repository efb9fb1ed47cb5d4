"""Rules ``heldout`` and ``reference``: one held-out split per file, and the trivial-predictor MSEs.

Each split is its own output, generated from its own seed (derived from ``data.seed`` and the
split's name), so resizing the test sets regenerates only them and re-evaluates, never retrains.
"""
from __future__ import annotations

from typing import Mapping

from ..ired.data import load_heldout, make_heldout, reference_mean_target, save_heldout, trivial_predictor_mse
from .runtime import log, write_json
from ..ired.seeding import derive_seed


def make_split(path: str, *, split: str, rank: int, seed: int, eps: float, size: int) -> None:
    """Write held-out split ``split`` (``val_id``, ``test_ood``, ...): ``size`` problems at ``eps``."""
    heldout = make_heldout(size, rank, eps, derive_seed(seed, split), name=split)
    save_heldout(heldout, path)
    log.info("%s: %d problems, eps %.3g, max |AY-I| %.2e", split, size, eps, heldout.meta["max_abs_residual"])


def make_reference(test_paths: Mapping[str, str], path: str, *, rank: int, seed: int, id_eps: float,
                   ood_eps: float, reference_size: int) -> None:
    """MSE of the trivial predictors (zeros; per-entry mean of ``reference_size`` fresh problems from
    the split's distribution) on each test set, written as ``{"trivial_mse": {split: {...}}}``."""
    eps = {"id": id_eps, "ood": ood_eps}
    reference: dict = {"trivial_mse": {}}
    for split, split_path in test_paths.items():
        kind = split.split("_")[1]
        mean = reference_mean_target(rank, eps[kind], derive_seed(seed, f"reference-{kind}"), reference_size)
        reference["trivial_mse"][split] = trivial_predictor_mse(load_heldout(split_path, rank=rank), mean)
        log.info("%s: trivial MSE %s", split, reference["trivial_mse"][split])
    write_json(reference, path)
