"""Atomic checkpoint files with a fallback to the previous good one (never lose work).

:func:`atomic_save` writes to ``<path>.tmp`` then renames; the file it replaces becomes
``<path>.prev``. :func:`load_latest` tries ``path`` then ``path.prev`` and explains (through the
``log`` callback) why a candidate was skipped: missing, truncated/corrupt, or written by a
different configuration. It never raises for a bad checkpoint; it returns ``None`` instead.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch


def _prev(path: Path) -> Path:
    return path.with_name(path.name + ".prev")


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` with ``torch.save`` atomically; keep the replaced file as ``<path>.prev``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if path.exists():
        os.replace(path, _prev(path))
    os.replace(tmp, path)


def load_latest(path: str | os.PathLike, fingerprint: str, log: Callable[[str], None] = print,
                format: str | None = None) -> dict[str, Any] | None:
    """The newest readable checkpoint at ``path`` (or its ``.prev``) whose fingerprint (and
    ``format``, when given) matches."""
    path = Path(path)
    for candidate in (path, _prev(path)):
        if not candidate.exists():
            continue
        try:
            blob = torch.load(candidate, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated, zero-length, garbage
            log(f"checkpoint {candidate} is unreadable ({type(exc).__name__}); ignoring it")
            continue
        if not isinstance(blob, dict) or "step" not in blob:
            log(f"checkpoint {candidate} is not a training checkpoint; ignoring it")
            continue
        if format is not None and blob.get("format") != format:
            log(f"checkpoint {candidate} has format {blob.get('format')!r}, not {format!r}; ignoring it")
            continue
        if blob.get("fingerprint") != fingerprint:
            log(f"checkpoint {candidate} was written by a different configuration; ignoring it")
            continue
        return blob
    return None


def remove(path: str | os.PathLike) -> None:
    """Delete a checkpoint and its ``.prev``/``.tmp`` companions (after a run completed)."""
    path = Path(path)
    for p in (path, _prev(path), path.with_name(path.name + ".tmp")):
        p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- finished model files
MODEL_FORMAT = "ired-model-v1"


def save_model(path: str | os.PathLike, *, rank: int, timesteps: int, mining: dict[str, Any], model: Any, ema: Any,
               status: dict[str, Any]) -> None:
    """Write a finished run's model file: raw and EMA weights, what builds them, and the run status."""
    atomic_save({"format": MODEL_FORMAT, "rank": rank, "timesteps": timesteps, "mining": mining,
                 "architecture": dict(getattr(model.model.ebm, "spec", {})), "model": model.state_dict(),
                 "ema": ema.state_dict(), "status": status}, path)
    _prev(Path(path)).unlink(missing_ok=True)


def load_model(path: str | os.PathLike, device: torch.device) -> tuple[Any, Any, dict[str, Any]]:
    """(EMA diffusion, raw diffusion, status) from a model file written by :func:`save_model`."""
    from ..ired.diffusion import build_diffusion  # local: the resume-checkpoint helpers above need no model code

    try:
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"model file {path} is unreadable or truncated ({type(exc).__name__}); "
                         "rerun its training job") from None
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise ValueError(f"model file {path} is not a {MODEL_FORMAT} file")
    models = []
    for key in ("ema", "model"):
        d = build_diffusion(blob["rank"], blob["timesteps"], blob["mining"], blob.get("architecture"))
        d.load_state_dict(blob[key])
        models.append(d.to(device).eval())
    return models[0], models[1], blob["status"]
