"""Which runs train together (packs).

Packs (``train.pack`` = N > 1, see :mod:`diffusion_lib.pack`): :func:`plan_packs` groups the
runs of one mining config into packs of at most N in seed order; a finished run is a pack of
its own. So adding seeds to a finished study puts only the new seeds into new packs, no finished
run is ever retrained to fill a pack, and changing N never reruns a finished run: its rules see
only its own files (runs trained apart finish in any order, and one pack rule over two of them
would find one member's input newer than another member's output).

"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from .layout import RunSpec
from ..settings.provenance import value_key


@dataclass(frozen=True)
class Pack:
    """Runs of one mining config and train block trained by one job (one run: trained alone, as
    without packs)."""

    runs: tuple[RunSpec, ...]

    @property
    def mode(self) -> str:
        return self.runs[0].mode

    @property
    def mining(self) -> dict[str, Any]:
        return self.runs[0].mining_config

    @property
    def rule(self) -> str:
        """A rule name that says what the pack holds: mode, mining-config key, seeds, and a hash of
        its run directories (two studies' packs with the same seeds may hold different runs)."""
        digest = hashlib.sha256(" ".join(r.run for r in self.runs).encode()).hexdigest()[:6]
        return f"train_{self.mode}_seeds_{'_'.join(str(r.seed) for r in self.runs)}_{digest}"


def plan_packs(runs: Iterable[RunSpec], size: int, finished: Callable[[RunSpec], bool],
               shape: Callable[[RunSpec], Any] = lambda spec: None) -> list[Pack]:
    """Packs of at most ``size`` runs covering every run once (see the module docstring); runs are
    packed together only when ``shape`` (e.g. their budgets) is equal too."""
    if size < 1:
        raise ValueError(f"train.pack must be >= 1, got {size}")
    groups: dict[tuple[str, bool], list[RunSpec]] = {}
    seen: set[str] = set()
    for spec in runs:  # strategies with the same mining config share runs: each run once
        if spec.run in seen:
            continue
        seen.add(spec.run)
        # one job trains with one mining config and one train block (a strategy's overrides differ)
        key = value_key({"mining": spec.mining_config, "train": spec.train, "shape": shape(spec)}, 12)
        groups.setdefault((key, finished(spec)), []).append(spec)
    packs = []
    for (_, done), members in groups.items():
        members, step = sorted(members, key=lambda r: r.seed), 1 if done else size
        packs += [Pack(tuple(members[i:i + step])) for i in range(0, len(members), step)]
    return packs


def write_pack_plan(packs: Iterable[Pack], path: str) -> None:
    """Save a plan (the run directories of each pack) atomically, for the job processes."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump([[r.run for r in pack.runs] for pack in packs], fh, indent=1)
    os.replace(tmp, path)


def read_pack_plan(path: str, run_of: Mapping[str, RunSpec]) -> list[Pack]:
    """The plan :func:`write_pack_plan` saved, with each run directory's spec from ``run_of``."""
    with open(path) as fh:
        return [Pack(tuple(run_of[run] for run in runs)) for runs in json.load(fh)]
