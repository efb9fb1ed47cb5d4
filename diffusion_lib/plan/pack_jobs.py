"""The jobs of packs (``train.pack`` > 1): one rule per pack and piece of its runs.

A pack job trains the same piece (:class:`~diffusion_lib.plan.study_plan.TrainJob`: a trunk piece,
a smaller rung, or the full budget) of each run of its pack (:mod:`diffusion_lib.plan.packs`). Its
outputs are the runs' own files and its params equal a solo job's, so changing the pack size or
adding seeds never retrains a finished run or piece. Which runs form packs depends on what is
finished when the workflow is planned: the main process plans and saves the plan; job processes
(SLURM jobs, subprocesses) read it instead of re-planning while other jobs finish, so every pack
rule they are asked to run exists.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..settings.provenance import value_key
from .packs import Pack, plan_packs, read_pack_plan, write_pack_plan
from .files import PACK_PLAN, ModelFiles
from .study_plan import StudyPlan, TrainJob


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
    if size == 1:
        return []
    runs = plan.layout.runs
    path = PACK_PLAN.format(key=value_key({"runs": [r.run for r in runs], "pack": size}, 12))
    if not main_process and os.path.exists(path):
        packs = read_pack_plan(path, plan.layout.run_of)
    else:
        def finished(spec) -> bool:
            return all(map(plan.exists, ModelFiles(spec.dir).outputs.values()))

        packs = plan_packs(runs, size, finished,
                           lambda r: [g.steps for g in plan.layout.rungs(r)] if plan.ladder else [])
        if main_process:
            write_pack_plan(packs, path)
    return [PackJob(pack, tuple(plan.jobs[first.kind, r.run, first.to] for r in pack.runs))
            for pack in packs for first in plan.jobs_of(pack.runs[0].run)]
