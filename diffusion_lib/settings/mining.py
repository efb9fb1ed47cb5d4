"""How training negatives are made (method §5): the strategy's mining config, torch-free.

The one place that names the modes (:data:`MODES`) and answers the two questions every training
path asks: does this mode use negatives at all (:attr:`MiningConfig.uses_negatives`; mode
``none`` trains on L_mse alone), and is training step k a mining step
(:meth:`MiningConfig.mines_at`: mode ``adversarial`` on every ``mine_every``-th step; random
negatives on the others and in mode ``random``). Torch-free, so the workflow plans with it
without importing the model.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

MODES = ("none", "random", "adversarial")


@dataclass(frozen=True)
class MiningConfig:
    """How training negatives are made (method §5). See :meth:`from_mapping` for validation."""

    mode: str = "none"
    opt_steps: int = 2
    scale_factor: float = 1.0
    noise_scale: float = 3.0
    energy_loss_weight: float = 0.5
    mine_every: int = 1

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | "MiningConfig" | None) -> "MiningConfig":
        """Build from a mapping; unknown keys or bad values raise ``ValueError`` naming the key."""
        if cfg is None:
            return cls()
        if isinstance(cfg, MiningConfig):
            return cfg
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"mining_config: unknown key(s) {unknown}; allowed: {sorted(known)}")
        merged = {**asdict(cls()), **cfg}
        if merged["mode"] not in MODES:
            raise ValueError(f"mining_config.mode: {merged['mode']!r} is not one of {list(MODES)}")
        for key in ("opt_steps", "mine_every"):
            value = merged[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"mining_config.{key}: must be an integer, got {value!r}")
        if merged["opt_steps"] < 1:
            raise ValueError(f"mining_config.opt_steps: must be >= 1, got {merged['opt_steps']}")
        if merged["mine_every"] < 1:
            raise ValueError(f"mining_config.mine_every: must be >= 1, got {merged['mine_every']}")
        for key, positive in (("scale_factor", True), ("noise_scale", True), ("energy_loss_weight", False)):
            value = merged[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"mining_config.{key}: must be a finite number, got {value!r}")
            if (value <= 0) if positive else (value < 0):
                raise ValueError(f"mining_config.{key}: must be {'> 0' if positive else '>= 0'}, got {value}")
            merged[key] = float(value)
        return cls(**merged)

    @property
    def uses_negatives(self) -> bool:
        """Whether training builds contrastive negatives (modes ``random`` and ``adversarial``)."""
        return self.mode != "none"

    @property
    def mines(self) -> bool:
        """Whether any training step mines adversarial negatives (mode ``adversarial``)."""
        return self.mode == "adversarial"

    def mines_at(self, step: int) -> bool:
        """Whether training step ``step`` (0-based) mines: mode ``adversarial`` and ``step % mine_every == 0``."""
        return self.mines and step % self.mine_every == 0
