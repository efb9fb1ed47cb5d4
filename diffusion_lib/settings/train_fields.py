"""The ``train`` block's fields, declared once: in the config schema (``config.schema.yaml``).

Each field of ``train`` has its type and default there, and a field that only chooses how runs are
computed, never what they compute, says so with ``x-shapes-run: false`` (checkpoint cadence,
compile, CUDA graphs, packing). Everything else derives from the schema:

* :data:`TRAIN_DEFAULTS`: the defaults, nested as in the config;
* :data:`NOT_SHAPING`: the fields left out of a run's key, its params and its fingerprint;
* :func:`flat_fields`: the block flattened onto :class:`~diffusion_lib.settings.run_config.TrainConfig`'s field
  names (``ema.decay`` → ``ema_decay``, ``lr_schedule.kind`` → ``lr_schedule``), the defaults
  filled in, so ``TrainConfig``'s own defaults are the schema's (tests/plan/test_config.py).

Torch-free (the workflow plans with it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

SCHEMA_PATH = Path(__file__).resolve().parent / "config.schema.yaml"
#: nested config field -> TrainConfig field, where the names differ
RENAMED = {("ema", "decay"): "ema_decay", ("ema", "update_every"): "ema_update_every",
           ("ema", "update_after_step"): "ema_update_after_step", ("ema", "power"): "ema_power",
           ("lr_schedule", "kind"): "lr_schedule", ("lr_schedule", "warmup_steps"): "warmup_steps",
           ("lr_schedule", "min_lr_ratio"): "min_lr_ratio", ("lr_schedule", "decay_fraction"): "decay_fraction"}


def _defaults(node: Mapping[str, Any]) -> Any:
    """The default of a schema node; an object's is its declared default completed by its properties'."""
    if "properties" not in node:
        return node.get("default")
    out = dict(node.get("default") or {})
    for name, child in node["properties"].items():
        value = _defaults(child)
        if value is not None and name not in out:
            out[name] = value
    return out


with open(SCHEMA_PATH) as _fh:
    _PROPERTIES = yaml.safe_load(_fh)["properties"]
_SCHEMA = _PROPERTIES["train"]
TRAIN_DEFAULTS: dict[str, Any] = _defaults(_SCHEMA)
#: the ``data`` block's defaults (a run's problem size ``rank`` and training difficulty ``id_eps``)
DATA_DEFAULTS: dict[str, Any] = _defaults(_PROPERTIES["data"])
NOT_SHAPING: tuple[str, ...] = tuple(k for k, v in _SCHEMA["properties"].items() if v.get("x-shapes-run") is False)


def flat_fields(train: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``train`` (default: none given) over :data:`TRAIN_DEFAULTS`, flattened onto TrainConfig's
    field names; ``pack`` (a workflow setting, not a run's) is left out and ``betas`` is a tuple."""
    train = train or {}
    out: dict[str, Any] = {}
    for key, default in TRAIN_DEFAULTS.items():
        if key == "pack":
            continue
        if isinstance(default, dict):
            given = train.get(key) or {}
            for sub, value in default.items():
                out[RENAMED.get((key, sub), f"{key}_{sub}")] = given.get(sub, value)
        else:
            out[key] = train.get(key, default)
    out["betas"] = tuple(out["betas"])
    return out
