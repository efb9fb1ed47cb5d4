"""How far each update moves a run's weights, and how much its contrastive loss still teaches.

Two measurements of a short training run, taken on the engine's own update (nothing about the step
is re-implemented here), that size the stability study's controls (issue 44, docs/stability-design.md):

* the **update size** of step t: ‖θ_{t+1} − θ_t‖₂ over all the energy network's weights, the
  distance the clipped, Adam-normalised update actually moved the run. An extra loss term that
  shares Adam's normaliser and the clipping threshold can shrink the part of this step that serves
  the denoising loss; a baseline trained at ``lr × (adversarial update size / baseline update
  size)`` moves its weights as far per step as the adversarial arm does (the *matched-step* control);
* the **contrastive loss** ``loss_energy`` (softplus(E⁺ − E⁻), 0 for mode ``none``) of each step:
  near 0 once negatives are separated (saturated), so that term no longer contributes a gradient.

:func:`measure_steps` records both for one run; :func:`summarise` takes their medians over a window.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd
import torch

from ..settings.mining import MiningConfig
from ..settings.run_config import TrainConfig
from .engine import Engine


@torch.no_grad()
def _distance(after: Sequence[torch.Tensor], before: Sequence[torch.Tensor]) -> float:
    return math.sqrt(sum(float(((a - b).double() ** 2).sum()) for a, b in zip(after, before)))


def measure_steps(cfg: TrainConfig, mining: MiningConfig | dict, measure_from: int, every: int = 1,
                  device: str = "cpu") -> pd.DataFrame:
    """Train one run of ``cfg`` (solo, seeded as the workflow seeds it) for ``cfg.steps`` steps and,
    at every ``every``-th step from ``measure_from`` on, record its update size and loss parts:
    one row per measured step (``step``, ``update_norm``, ``lr``, ``loss``, ``loss_mse``,
    ``loss_energy``)."""
    if not 0 <= measure_from < cfg.steps or every < 1:
        raise ValueError(f"measure_from must lie in [0, steps={cfg.steps}) and every >= 1; got {measure_from}, {every}")
    engine = Engine.seeded([cfg], MiningConfig.from_mapping(mining), val_set=None, device=device, progress=False)
    rows = []
    for step in range(cfg.steps):
        measured = step >= measure_from and (step - measure_from) % every == 0
        before = [p.detach().clone() for p in engine.stack.params] if measured else None
        parts = engine.step_once(step, [True])
        if before is not None:
            rows.append({"step": step, "update_norm": _distance(engine.stack.params, before), "lr": cfg.lr_at(step),
                         **{k: float(v[0]) for k, v in parts.items()}})
    return pd.DataFrame(rows)


def summarise(steps: pd.DataFrame) -> dict[str, Any]:
    """Medians over the measured steps: ``update_norm``, ``loss_energy`` and ``loss_mse``, with the
    number of steps and the window (first and last step)."""
    return {"update_norm": float(steps["update_norm"].median()), "loss_energy": float(steps["loss_energy"].median()),
            "loss_mse": float(steps["loss_mse"].median()), "n_steps": int(len(steps)),
            "first": int(steps["step"].min()), "last": int(steps["step"].max())}
