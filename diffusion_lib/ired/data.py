"""Inverse-problem data (method §2): generation on any device, held-out files, trivial predictors.

One problem: U ~ Uniform(-1, 1)^{n x n}, S = U Uᵀ, A = S + Sᵀ + εI (= 2UUᵀ + εI, symmetric positive
definite with smallest eigenvalue ≥ ε), target Y = A⁻¹. The model sees vec(A) and predicts vec(Y),
both of length n². Everything is computed in float64 and stored as float32.

Held-out file format (``.pt``, written by :func:`save_heldout`, read by :func:`load_heldout`): a
``torch.save`` dict with

* ``"A"``: float32 tensor (N, n²), the flattened matrices;
* ``"Y"``: float32 tensor (N, n²), their inverses (computed in float64);
* ``"meta"``: a dict of plain values: ``format`` (= ``FORMAT``), ``rank`` (n), ``eps`` (ε),
  ``seed`` (the generator seed), ``num_problems`` (N), ``max_abs_residual`` (max |AY - I| in
  float64 before the cast) and ``name``.

Files are loaded with ``weights_only=True`` (no arbitrary pickle execution) and validated: a missing,
truncated or mis-shaped file raises :class:`HeldoutError` naming the file.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

FORMAT = "ired-inverse-heldout-v1"
#: Largest |A Y - I| (float64) accepted for a generated problem.
RESIDUAL_TOLERANCE = 1e-8


class HeldoutError(ValueError):
    """A held-out file is missing, unreadable, truncated or of the wrong shape."""


def inverse_problems(
    n: int,
    rank: int,
    eps: float,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` matrix-inversion problems of size ``rank`` x ``rank`` with diagonal shift ``eps``.

    Returns ``(A, Y)``, both float32 of shape ``(n, rank * rank)``, with ``Y = A⁻¹`` computed in
    float64 (Cholesky: A is SPD). Fully vectorised; ``generator`` (on ``device``) makes it
    reproducible. Raises ``ValueError`` if any problem's residual |AY - I| exceeds
    :data:`RESIDUAL_TOLERANCE`.
    """
    A, Y, _ = _draw(n, rank, eps, generator, device)
    return A, Y


def _solve(
    n: int, rank: int, eps: float, generator: torch.Generator | None, device: str | torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, Y) as float32 (n, rank²) and the largest |AY - I| as a 0-d float64 device tensor (inf
    if a factorisation failed). Nothing here waits for the device: ``cholesky_ex`` does not check
    its ``info`` on the host as ``cholesky`` does."""
    if n < 1 or rank < 1:
        raise ValueError(f"need n >= 1 and rank >= 1, got n={n}, rank={rank}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (A must be positive definite), got {eps}")
    U = torch.rand(n, rank, rank, generator=generator, device=device, dtype=torch.float64)
    U = U.mul_(2.0).sub_(1.0)
    S = U @ U.transpose(-1, -2)
    eye = torch.eye(rank, device=device, dtype=torch.float64)
    A = S + S.transpose(-1, -2) + eps * eye
    L, info = torch.linalg.cholesky_ex(A)
    Y = torch.cholesky_inverse(L)
    residual = (A @ Y - eye).abs().amax()
    residual = torch.where((info != 0).any(), torch.full_like(residual, math.inf), residual)
    return A.reshape(n, -1).float(), Y.reshape(n, -1).float(), residual


def _draw(
    n: int, rank: int, eps: float, generator: torch.Generator | None, device: str | torch.device
) -> tuple[torch.Tensor, torch.Tensor, float]:
    A, Y, residual_t = _solve(n, rank, eps, generator, device)
    residual = residual_t.item()
    if not residual <= RESIDUAL_TOLERANCE:
        raise ValueError(f"generated inverse is inaccurate: max |AY - I| = {residual:.3e}")
    return A, Y, residual


class ProblemStream:
    """Infinite seeded stream of training batches, drawn on the training device (method §2).

    Drawing a batch never waits for the device: the accuracy of its inverses is folded into
    ``max_residual`` (a device tensor), which the trainer reads when it logs and hands to
    :meth:`check` (a batch with |AY - I| above :data:`RESIDUAL_TOLERANCE` then stops training with
    an error). Its whole state is the generator's; :meth:`state_dict` / :meth:`load_state_dict`
    let a resumed run continue the exact same sequence.
    """

    def __init__(self, batch_size: int, rank: int, eps: float, seed: int, device: str | torch.device):
        self.batch_size, self.rank, self.eps = batch_size, rank, eps
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.max_residual = torch.zeros((), dtype=torch.float64, device=self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        A, Y, residual = _solve(self.batch_size, self.rank, self.eps, self.generator, self.device)
        self.max_residual = torch.maximum(self.max_residual, residual)
        return A, Y

    @staticmethod
    def check(max_residual: float) -> None:
        """Raise if a batch since the last check had an inaccurate inverse (``max_residual`` read
        from :attr:`max_residual` by the caller, together with its other logged values)."""
        if not max_residual <= RESIDUAL_TOLERANCE:
            raise ValueError(f"a training batch's inverse is inaccurate: max |AY - I| = {max_residual:.3e}")

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].cpu())


@dataclass(frozen=True)
class Heldout:
    """A fixed held-out set: inputs ``A``, targets ``Y`` (both (N, n²) float32) and its metadata."""

    A: torch.Tensor
    Y: torch.Tensor
    meta: dict[str, Any]

    @property
    def rank(self) -> int:
        return int(self.meta["rank"])

    def __len__(self) -> int:
        return self.A.shape[0]

    def subset(self, count: int | None) -> "Heldout":
        """The first ``count`` problems (all of them when ``count`` is None or too large)."""
        if count is None or count >= len(self):
            return self
        return Heldout(self.A[:count], self.Y[:count], {**self.meta, "num_problems": count})

    def to(self, device: str | torch.device) -> "Heldout":
        return Heldout(self.A.to(device), self.Y.to(device), self.meta)


def make_heldout(num_problems: int, rank: int, eps: float, seed: int, name: str = "") -> Heldout:
    """Generate a held-out set on the CPU from ``seed`` (CPU generation is identical everywhere)."""
    gen = torch.Generator().manual_seed(seed)
    A, Y, residual = _draw(num_problems, rank, eps, gen, "cpu")
    meta = {"format": FORMAT, "rank": rank, "eps": float(eps), "seed": int(seed),
            "num_problems": int(num_problems), "max_abs_residual": residual, "name": name}
    return Heldout(A, Y, meta)


def save_heldout(heldout: Heldout, path: str | os.PathLike) -> None:
    """Write ``heldout`` atomically (temporary file, then rename) in the documented format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"A": heldout.A.contiguous(), "Y": heldout.Y.contiguous(), "meta": heldout.meta}, tmp)
    os.replace(tmp, path)


def load_heldout(path: str | os.PathLike, rank: int | None = None) -> Heldout:
    """Load and validate a held-out file; ``rank`` (n), when given, must match the file's."""
    path = Path(path)
    if not path.is_file():
        raise HeldoutError(f"held-out file {path} does not exist (run the data rule first)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated / not a torch file / tampered
        raise HeldoutError(f"held-out file {path} is unreadable or truncated ({type(exc).__name__}: "
                           f"{exc}); delete it and rerun the data rule") from None
    if not isinstance(blob, dict) or not {"A", "Y", "meta"} <= set(blob):
        raise HeldoutError(f"held-out file {path} lacks the keys 'A', 'Y', 'meta'")
    A, Y, meta = blob["A"], blob["Y"], blob["meta"]
    if meta.get("format") != FORMAT:
        raise HeldoutError(f"held-out file {path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    n = int(meta["rank"])
    want = (int(meta["num_problems"]), n * n)
    for key, tensor in (("A", A), ("Y", Y)):
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != want or tensor.dtype != torch.float32:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise HeldoutError(f"held-out file {path}: '{key}' has shape {got}, expected float32 {want}")
        if not torch.isfinite(tensor).all():
            raise HeldoutError(f"held-out file {path}: '{key}' contains NaN or inf")
    if rank is not None and n != rank:
        raise HeldoutError(f"held-out file {path} holds {n}x{n} problems but the config asks for rank {rank}")
    return Heldout(A, Y, dict(meta))


def trivial_predictor_mse(heldout: Heldout, reference_mean: torch.Tensor) -> dict[str, float]:
    """MSE of the two trivial predictors on ``heldout``: all zeros, and a per-entry mean of Y.

    ``reference_mean`` (n²,) should come from problems independent of ``heldout`` (see
    :func:`reference_mean_target`), so the mean predictor is not fitted to the set it is scored on.
    """
    Y = heldout.Y.double()
    return {"zeros": Y.pow(2).mean().item(),
            "entry_mean": (Y - reference_mean.double()).pow(2).mean().item()}


def reference_mean_target(rank: int, eps: float, seed: int, num_problems: int = 20000) -> torch.Tensor:
    """Per-entry mean of Y over ``num_problems`` fresh problems (the 'mean predictor')."""
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(rank * rank, dtype=torch.float64)
    done = 0
    while done < num_problems:
        chunk = min(4096, num_problems - done)
        _, Y, _ = _draw(chunk, rank, eps, gen, "cpu")
        total += Y.double().sum(0)
        done += chunk
    return (total / num_problems).float()
