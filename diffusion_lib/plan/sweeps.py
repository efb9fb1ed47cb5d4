"""Sweeps (issue 7): a grid over a base strategy's mining config and training overrides, one strategy per grid point, named canonically (:mod:`diffusion_lib.settings.names`)."""
from __future__ import annotations

import itertools
from typing import Any, Iterator, Mapping, NamedTuple

from ..settings.names import SWEEP_TRAIN_PREFIX, sweep_name


class GridPoint(NamedTuple):
    """One point of a sweep: the strategy it becomes."""

    name: str
    mining: dict[str, Any]  #: the base's mining config with the point's mining values
    train: dict[str, Any]  #: the base's training overrides with the point's ``train.*`` values
    point: dict[str, Any]  #: the swept values, keyed as in the grid (``opt_steps``, ``train.lr``)


def expand_sweep(base: str, base_mining: Mapping[str, Any], grid: Mapping[str, list],
                 base_train: Mapping[str, Any] | None = None) -> Iterator[GridPoint]:
    """Every point of ``grid`` over the base strategy's mining config and training overrides."""
    keys = sorted(grid)
    values = [sorted(set(grid[k])) for k in keys]
    for combo in itertools.product(*values):
        point = dict(zip(keys, combo))
        mining = {k: v for k, v in point.items() if not k.startswith(SWEEP_TRAIN_PREFIX)}
        train = {k[len(SWEEP_TRAIN_PREFIX):]: v for k, v in point.items() if k.startswith(SWEEP_TRAIN_PREFIX)}
        yield GridPoint(sweep_name(base, point), {**base_mining, **mining}, {**(base_train or {}), **train}, point)


def effective_overrides(train: Mapping[str, Any], override: Mapping[str, Any], keys: tuple[str, ...]
                        ) -> dict[str, Any]:
    """Every overridable key's value for a strategy with ``override`` (the top-level ``train``
    block's where it declares none): with its mining config, what tells its runs apart."""
    values = {k: override.get(k, train[k]) for k in keys}
    return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()}
