"""Seed derivation and RNG state capture, so that runs are reproducible and resumable."""
from __future__ import annotations

import hashlib
from typing import Any

import torch


def derive_seed(seed: int, purpose: str) -> int:
    """A 62-bit seed for ``purpose`` derived from ``seed`` (independent streams from one number)."""
    digest = hashlib.sha256(f"{int(seed)}:{purpose}".encode()).hexdigest()
    return int(digest[:15], 16)


def rng_state() -> dict[str, Any]:
    """The global torch RNG states (CPU and every CUDA device)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' → CUDA when available, else CPU; otherwise the named device (checked to exist)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev
