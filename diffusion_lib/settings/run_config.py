"""A run's training settings (method §4): :class:`TrainConfig`, what of it shapes the run's outputs
(:meth:`TrainConfig.identity`) and its resume checkpoints (:meth:`TrainConfig.fingerprint`), and
the config's ``train`` block mapped onto it (:func:`train_config`). Torch-free; the defaults are
the config schema's (:mod:`diffusion_lib.settings.train_fields`)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from .mining import MiningConfig
from .lr_schedule import SCHEDULES, lr_at
from .train_fields import DATA_DEFAULTS, NOT_SHAPING, flat_fields

LR_SCHEDULES = SCHEDULES
PRECISIONS = ("fp32", "tf32")
GRADIENTS = ("auto", "closed_form", "autograd")
#: the architecture's fields (``train.model``): in a run's key only where they differ from method §3's network
MODEL_KEYS = ("model_hidden", "model_layers", "model_activation")
#: method §3's network in ``train.model``'s terms: what ``gradients: closed_form`` needs (any width;
#: :func:`diffusion_lib.ired.closed_form.supports` checks the module itself)
CLOSED_FORM_NETWORK = {"layers": 2, "activation": "silu"}


def closed_form_mismatch(gradients: str, model: Mapping[str, Any]) -> str | None:
    """Why ``gradients: closed_form`` cannot train the network ``model`` (``train.model``) describes,
    or None (another ``gradients``, or method §3's network)."""
    layers = model.get("layers", CLOSED_FORM_NETWORK["layers"])
    activation = model.get("activation", CLOSED_FORM_NETWORK["activation"])
    if gradients != "closed_form" or {"layers": layers, "activation": activation} == CLOSED_FORM_NETWORK:
        return None
    return (f"closed_form applies only to SPEC §3's network ({CLOSED_FORM_NETWORK['activation']}, "
            f"{CLOSED_FORM_NETWORK['layers']} modulated layers), but the model has activation {activation!r} and "
            f"{layers} layers; use auto or autograd")
#: Settings that choose how a step is computed, not what it computes (proven equal in float64): the
#: schema's ``x-shapes-run: false`` fields of a run (``pack`` is the workflow's) and the FLOP bookkeeping
IMPLEMENTATION_KEYS = (*(k for k in NOT_SHAPING if k != "pack"), "measure_flops")


_D = flat_fields()


@dataclass(frozen=True)
class TrainConfig:
    """One run's training settings. The defaults are the config schema's (``train`` and, for
    ``rank`` and ``train_eps``, ``data.rank`` and ``data.id_eps``; :mod:`diffusion_lib.settings.train_fields`),
    so a run built here with defaults is the run the workflow trains by default (method §4's paper
    scale: 100,000 steps at batch 2,048). ``seed`` seeds init, noise and the data stream;
    ``measure_flops`` (bookkeeping) is the one setting that is not the config's."""

    steps: int = _D["steps"]
    batch_size: int = _D["batch_size"]
    lr: float = _D["lr"]
    betas: tuple[float, float] = _D["betas"]
    grad_clip: float = _D["grad_clip"]
    ema_decay: float = _D["ema_decay"]
    ema_update_every: int = _D["ema_update_every"]
    ema_update_after_step: int = _D["ema_update_after_step"]
    ema_power: float = _D["ema_power"]
    rank: int = DATA_DEFAULTS["rank"]
    train_eps: float = DATA_DEFAULTS["id_eps"]
    timesteps: int = _D["timesteps"]
    eval_every: int = _D["eval_every"]
    val_size: int = _D["val_size"]
    val_inner_steps: int = _D["val_inner_steps"]
    log_every: int = _D["log_every"]
    checkpoint_every: int = _D["checkpoint_every"]
    max_loss: float = _D["max_loss"]
    seed: int = 0
    lr_schedule: str = _D["lr_schedule"]
    warmup_steps: int = _D["warmup_steps"]
    min_lr_ratio: float = _D["min_lr_ratio"]
    decay_fraction: float = _D["decay_fraction"]
    measure_flops: bool = True
    validate_raw: bool = _D["validate_raw"]
    compile: bool = _D["compile"]
    cuda_graphs: str | bool = _D["cuda_graphs"]
    aot: str | bool = _D["aot"]
    precision: str = _D["precision"]
    gradients: str = _D["gradients"]
    model_hidden: int = _D["model_hidden"]
    model_layers: int = _D["model_layers"]
    model_activation: str = _D["model_activation"]

    @property
    def model(self) -> dict[str, Any]:
        """The energy network's architecture (``train.model``), as :class:`~diffusion_lib.ired.model.EBM` takes it."""
        return {"hidden": self.model_hidden, "layers": self.model_layers, "activation": self.model_activation}

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: {self.precision!r} is not one of {list(PRECISIONS)}")
        if self.gradients not in GRADIENTS:
            raise ValueError(f"gradients: {self.gradients!r} is not one of {list(GRADIENTS)}")
        if (why := closed_form_mismatch(self.gradients, self.model)) is not None:
            raise ValueError(f"train.gradients: {why}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule: {self.lr_schedule!r} is not one of {list(LR_SCHEDULES)}")
        if not 0 <= self.min_lr_ratio <= 1 or not 0 <= self.decay_fraction <= 1 or self.warmup_steps < 0:
            raise ValueError("lr schedule: need warmup_steps >= 0, 0 <= min_lr_ratio <= 1, 0 <= decay_fraction <= 1")

    def lr_at(self, step: int) -> float:
        """Learning rate of training step ``step`` (0-based): :func:`diffusion_lib.settings.lr_schedule.lr_at`."""
        return lr_at(self.lr_schedule, step, steps=self.steps, lr=self.lr, warmup_steps=self.warmup_steps,
                     floor=self.min_lr_ratio, decay_fraction=self.decay_fraction)

    def trunk(self, branch_point: int) -> "TrainConfig":
        """The constant-lr trunk of this warmup-stable-decay (or constant) run, to ``branch_point``:
        the same run up to the point where a decay branches off (:mod:`diffusion_lib.settings.ladder`)."""
        if self.lr_schedule not in ("constant", "wsd"):
            raise ValueError(f"lr_schedule {self.lr_schedule!r} has no constant trunk (wsd or constant only)")
        return replace(self, steps=branch_point, lr_schedule="constant")

    def identity(self, mining: MiningConfig) -> dict[str, Any]:
        """Every value that shapes a run's outputs (model, curve, status), with its mining config.

        Left out (:data:`IMPLEMENTATION_KEYS`): ``checkpoint_every`` (checkpoints only save state: a
        resumed run ends bitwise identical to an uninterrupted one), ``measure_flops`` (bookkeeping),
        ``compile``, ``cuda_graphs``, ``aot`` and ``gradients`` (the same step, computed another way:
        equal to the module path in float64, tests/ired/test_functional.py, tests/train/test_aot.py,
        tests/ired/test_closed_form.py). ``precision`` stays in: TF32 changes the numbers; so does the
        architecture (``model_*``), entered where it differs from method §3's network, so that the default
        network's runs keep the keys they had before ``train.model`` existed.
        """
        state = {k: v for k, v in asdict(self).items() if k not in IMPLEMENTATION_KEYS}
        for key in MODEL_KEYS:  # method §3's network keys as it did before train.model existed: absent
            if state[key] == _D[key]:
                del state[key]
        state["mining"] = asdict(mining)
        return state

    def fingerprint(self, mining: MiningConfig) -> str:
        """Hash of everything that shapes the training trajectory (a resume checkpoint's key).

        Narrower than :meth:`identity`: ``steps`` is left out for the constant schedule, so raising
        it extends a run from its checkpoint (a decaying schedule depends on the total, so there it
        counts), and ``validate_raw`` only adds a curve column.
        """
        skip = {"validate_raw"} | ({"steps"} if self.lr_schedule == "constant" else set())
        state = {k: v for k, v in self.identity(mining).items() if k not in skip}
        return hashlib.sha256(json.dumps(state, sort_keys=True, default=list).encode()).hexdigest()[:16]


def train_config(train: Mapping[str, Any], *, seed: int, rank: int, id_eps: float) -> TrainConfig:
    """The config's ``train`` block (schema-validated, or partial: the schema's defaults fill it)
    as the :class:`TrainConfig` of the run with ``seed`` on problems of size ``rank`` at ``id_eps``."""
    return TrainConfig(**flat_fields(train), rank=rank, train_eps=id_eps, seed=seed)
