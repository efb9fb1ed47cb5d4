"""Which runs train together (packs).

Packs (``train.pack`` = N > 1, one size or one per mining mode, see :mod:`diffusion_lib.train.engine`):
:func:`plan_packs` groups the runs of one mining config into packs of at most N in seed order; a
finished run is a pack of its own. So adding seeds to a finished study puts only the new seeds into new packs, no finished
run is ever retrained to fill a pack, and changing N never reruns a finished run: its rules see
only its own files (runs trained apart finish in any order, and one pack rule over two of them
would find one member's input newer than another member's output).

The jobs of packs (:func:`study_packs`): one rule per pack and piece of its runs. A pack job trains
the same piece (:class:`~diffusion_lib.plan.study_plan.TrainJob`: a trunk piece, a smaller rung, or
the full budget) of each run of its pack. Its outputs are the runs' own files and its params equal a
solo job's, so changing the pack size or adding seeds never retrains a finished run or piece. Which
runs form packs depends on what is finished when the workflow is planned: the main process plans and
saves the plan (the one file the workflow writes while it is parsed, and only with ``train.pack`` >
1); job processes (SLURM jobs, subprocesses) read it instead of re-planning while other jobs finish,
so every pack rule they are asked to run exists.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from ..settings.mining import MODES
from ..settings.provenance import value_key
from .files import PACK_PLAN, ModelFiles
from .layout import RunSpec
from .study_plan import StudyPlan, TrainJob


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


def pack_size(pack: int | Mapping[str, int], mode: str) -> int:
    """The pack size ``train.pack`` gives the runs of a mining mode: one size for all, or a size per
    mode (a mode it leaves out: 1, runs trained alone)."""
    if isinstance(pack, Mapping) and (unknown := set(pack) - set(MODES)):
        raise ValueError(f"train.pack names no mining mode {sorted(unknown)} (modes: {', '.join(MODES)})")
    size = pack.get(mode, 1) if isinstance(pack, Mapping) else pack
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"train.pack must be >= 1 for mode {mode!r}, got {size!r}")
    return size


def plan_packs(runs: Iterable[RunSpec], size: int | Mapping[str, int], finished: Callable[[RunSpec], bool],
               shape: Callable[[RunSpec], Any] = lambda spec: None) -> list[Pack]:
    """Packs of at most ``size`` runs (``train.pack``: one size, or one per mode, :func:`pack_size`)
    covering every run once (see the module docstring); runs are packed together only when ``shape``
    (e.g. their budgets) is equal too."""
    for mode in MODES:
        pack_size(size, mode)
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
        members = sorted(members, key=lambda r: r.seed)
        step = 1 if done else pack_size(size, members[0].mode)
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


@dataclass(frozen=True)
class PackJob:
    """One job of pack ``pack``: the same piece of each of its runs (``members``, in pack order)."""

    pack: Pack
    members: tuple[TrainJob, ...]

    @property
    def kind(self) -> str:
        return self.members[0].kind

    @property
    def to(self) -> int:
        return self.members[0].to

    @property
    def rule(self) -> str:
        """The rule's name: the pack's for the full budget, with ``_trunk<k>`` or ``_rung<steps>`` added."""
        suffix = {"trunk": f"_trunk{self.to}", "branch": f"_rung{self.to}", "train": ""}[self.kind]
        return self.pack.rule + suffix

    @property
    def outputs(self) -> dict[str, list[str]]:
        """Its runs' trunk states and sidecars, or their models, curves and statuses, by output name."""
        names = self.members[0].files.outputs
        return {name: [m.files.outputs[name] for m in self.members] for name in names}

    @property
    def logs(self) -> list[str]:
        """One log per run, next to its outputs (each holds the pack's log)."""
        return [m.files.log for m in self.members]

    @property
    def starts(self) -> list[str]:
        """The trunk states its runs continue from."""
        return [m.start for m in self.members if m.start]


def study_packs(plan: StudyPlan, main_process: bool) -> list[PackJob]:
    """Every pack job of the study (none with ``train.pack`` 1): packs planned from what is
    finished now (a finished run is a pack of its own), saved by the main process and read back by
    job processes; with the ladder a pack's runs also share their budgets."""
    size = plan.cfg["train"]["pack"]
    if all(pack_size(size, run.mode) == 1 for run in plan.layout.runs):
        return []
    runs = plan.layout.runs
    path = PACK_PLAN.format(key=value_key({"runs": [r.run for r in runs], "pack": size}, 12))
    if not main_process and os.path.exists(path):
        packs = read_pack_plan(path, plan.layout.run_of)
    else:
        def finished(spec) -> bool:
            return all(map(plan.exists, ModelFiles(spec.dir).outputs.values()))

        packs = plan_packs(runs, size, finished,
                           lambda r: [g.steps for g in plan.budgets.rungs(r)] if plan.ladder else [])
        if main_process:
            write_pack_plan(packs, path)
    return [PackJob(pack, tuple(plan.jobs[first.kind, r.run, first.to] for r in pack.runs))
            for pack in packs for first in plan.jobs_of(pack.runs[0].run)]
