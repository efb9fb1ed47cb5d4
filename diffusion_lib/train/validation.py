"""A run's validation score during training: the MSE of its (EMA) model on a fixed held-out subset."""
from __future__ import annotations

from ..ired.data import Heldout
from ..ired.diffusion import GaussianDiffusion1D
from ..ired.evaluation import predict


def heldout_mse(diffusion: GaussianDiffusion1D, heldout: Heldout, n_inner: int, seed: int = 0,
                batch_size: int = 1024) -> float:
    """MSE of ``diffusion.sample`` on ``heldout`` (fixed sampling noise from ``seed``)."""
    pred, _ = predict(diffusion, heldout, n_inner, batch_size=batch_size, seed=seed)
    return (pred - heldout.Y.cpu()).pow(2).mean().item()

