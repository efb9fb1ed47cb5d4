"""The training budgets a study reads its runs at (method §8.1): the budget ladder's rungs (the
declared ones, those ``until_stable`` may add and has added), each mining arm's compute-matched rung,
and the trunk's branch points they need. The arithmetic of one rung is :mod:`diffusion_lib.settings.ladder`;
which runs there are and where their files lie is :mod:`diffusion_lib.plan.layout`.
"""
from __future__ import annotations

from dataclasses import asdict
from functools import cached_property
from typing import Any, Callable, Mapping

from ..settings.ladder import Rung, compute_matched_steps, decay_fraction, grown_steps, ladder_steps, rungs_of, uses_trunk
from ..settings.mining import MiningConfig
from . import files
from .layout import RunSpec


class Budgets:
    """The budgets of study ``cfg`` (a validated config)."""

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = cfg
        self.files = files.StudyFiles(cfg["study"])

    @property
    def ladder_budgets(self) -> list[int]:
        """The ladder's budgets (training steps), ascending; the last is ``train.steps``."""
        train = self.cfg["train"]
        if not uses_trunk(train):
            return [train["steps"]]
        return ladder_steps(train["steps"], self.cfg["comparison"]["ladder"]["rungs"], decay_fraction(train),
                            train["log_every"])

    @property
    def growth(self) -> Mapping[str, Any] | None:
        """``comparison.ladder.until_stable`` (None when it is off, or without the ladder)."""
        return self.cfg["comparison"]["ladder"].get("until_stable") if uses_trunk(self.cfg["train"]) else None

    @property
    def grown_budgets(self) -> list[int]:
        """The budgets ``comparison.ladder.until_stable`` may add above ``train.steps``, in the order it
        would add them (each twice the last); whether it does is decided look by look in the workflow
        (:mod:`diffusion_lib.analysis.growth`)."""
        return grown_steps(self.cfg["train"]["steps"], self.growth["max_steps"] if self.growth else None)

    def looks(self, ask: Callable[[int], str] | None = None) -> list[Any]:
        """The ``until_stable`` looks taken so far, in order, each followed to the next once it grew
        (:class:`~diffusion_lib.analysis.growth.Look`): their files on disk, or with ``ask`` (the
        workflow's checkpoint: the file of the look at a ladder top, which Snakemake schedules when it
        is missing) each asked for in turn; none when until_stable is off."""
        from ..analysis.growth import walk_looks  # local: growth reads stability (pandas, numpy)

        return walk_looks(self.cfg["train"]["steps"], ask or self.files.look) if self.growth else []

    def grown_so_far(self) -> list[int]:
        """The rungs ``until_stable`` has added so far, from the looks on disk."""
        from ..analysis.growth import final_top

        top = final_top(self.cfg["train"]["steps"], self.looks())
        return [b for b in self.grown_budgets if b <= top]

    def budgets_up_to(self, top: int) -> list[int]:
        """The ladder's budgets when its largest rung is ``top`` (the declared ones, then the grown ones)."""
        return [b for b in [*self.ladder_budgets, *self.grown_budgets] if b <= top]

    @cached_property
    def compute_matched(self) -> dict[str, int]:
        """Each mining arm of the verdict (comparison.random / .adversarial) → the budget at which
        its cumulative training FLOPs equal the baseline's at the full budget (worked out once per
        study: every rung lookup reads it)."""
        cfg, train = self.cfg, self.cfg["train"]
        comparison = cfg["comparison"]
        if not (uses_trunk(train) and comparison["ladder"]["compute_matched"]):
            return {}
        from ..train.flops import training_flops_per_sample  # local: profiles a model (torch), only when asked

        def flops(strategy: str) -> float:
            mining = MiningConfig.from_mapping(cfg["strategies"][strategy])
            return training_flops_per_sample(asdict(mining), cfg["data"]["rank"], train["timesteps"],
                                             cache_dir=files.FLOPS_CACHE, model=train.get("model"))

        base = comparison["baseline"]
        arms = [comparison[r] for r in ("random", "adversarial") if comparison[r] in cfg["strategies"]]
        if base not in cfg["strategies"]:
            return {}
        return {s: compute_matched_steps(train["steps"], flops(base), flops(s), decay_fraction(train),
                                         train["log_every"]) for s in arms}

    def rungs(self, spec: RunSpec) -> list[Rung]:
        """Every budget run ``settings`` may be trained to (ladder, the rungs ``until_stable`` may add, and,
        for a mining arm, compute-matched), ascending by steps; a budget that is both is listed once, as
        a ladder rung."""
        train = self.cfg["train"]
        f = decay_fraction(train) if uses_trunk(train) else 0.0
        rungs = {b: r for r in rungs_of([*self.ladder_budgets, *self.grown_budgets], f) for b in [r.steps]}
        matched = self.compute_matched.get(spec.strategy)
        if matched is not None and matched not in rungs:
            rungs[matched] = rungs_of([matched], f, "compute_matched")[0]
        return [rungs[b] for b in sorted(rungs)]

    def branch_points(self, spec: RunSpec) -> list[int]:
        """The trunk steps at which run ``settings``'s trunk state is saved (its rungs' branch points)."""
        return sorted({r.branch_point for r in self.rungs(spec)})
