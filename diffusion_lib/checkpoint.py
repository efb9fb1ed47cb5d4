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


def load_latest(path: str | os.PathLike, fingerprint: str, log: Callable[[str], None] = print
                ) -> dict[str, Any] | None:
    """The newest readable checkpoint at ``path`` (or its ``.prev``) whose fingerprint matches."""
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
