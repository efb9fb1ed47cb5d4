"""A study's training jobs as one table, and the lookups the workflow's rules make in it.

Each run of a study (:class:`~diffusion_lib.plan.layout.RunSpec`) is trained by one job per piece:
with the budget ladder (:mod:`diffusion_lib.settings.ladder`), a ``trunk`` job per branch point
(the constant-lr trunk to that step, continued from the previous saved state), a ``branch`` job per
rung below the full budget (its decay from the trunk state at its branch point) and the ``train``
job (the full budget's decay); without the ladder, only the ``train`` job (from scratch).
:class:`StudyPlan` lists them all (:meth:`StudyPlan.table`, written to the study's ``training_jobs.tsv``),
and the rules' input functions are one-line lookups in it by wildcard value; a value the current
config does not produce raises :class:`PlanError`, which says what it would produce.

The trunk state a trunk piece continues from depends on what is on disk: an existing state keeps
the one it was trained from (its sidecar), so adding a rung never changes a finished piece's
inputs; otherwise it is the latest configured or saved state before it.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..analysis.growth import Look, describe_looks, final_top
from ..settings.ladder import PAPER_SAMPLES, decay_fraction, uses_trunk
from ..settings.lr_schedule import decay_start
from .budgets import Budgets
from .config import strategy_arms
from .layout import Layout, RunSpec, split_params
from .resources import train_runtime
from .files import RUN_DIR, SPLIT, ModelFiles, TrunkFiles, eval_dir, model_dir, trunk_state

KINDS = ("trunk", "branch", "train")


class PlanError(ValueError):
    """A file the workflow was asked for that the current study config does not produce."""


@dataclass(frozen=True)
class TrainJob:
    """One training job of one run: ``kind`` ``trunk`` trains the trunk to step ``to``; ``branch``
    (a rung below the full budget) and ``train`` (the full budget) train a model of budget ``to``.
    ``share`` is the fraction of ``train.steps`` it trains, ``start`` the trunk state it continues."""

    kind: str
    spec: RunSpec
    to: int
    share: float
    start: str | None
    full: int

    @property
    def files(self) -> TrunkFiles | ModelFiles:
        if self.kind == "trunk":
            return TrunkFiles(self.spec.run, self.to)
        return ModelFiles(model_dir(self.spec.run, self.to, self.full))

    @property
    def inputs(self) -> dict[str, str]:
        """Its input besides the validation split: the state it starts from, if any."""
        return {"start": self.start} if self.start else {}

    def entry(self) -> dict[str, Any]:
        """What :func:`diffusion_lib.jobs.train.train_runs` is given for this run."""
        what = {"trunk_to": self.to} if self.kind == "trunk" else {"steps": self.to}
        return {"run": self.spec.run, "seed": self.spec.seed, "dir": self.spec.dir, **what,
                **self.files.entry(), **self.inputs}

    def row(self) -> dict[str, Any]:
        """Its line of the jobs table."""
        return {"kind": self.kind, "strategy": self.spec.strategy, "seed": self.spec.seed, "run": self.spec.run,
                "to": self.to, "start": self.start or "", "outputs": " ".join(self.files.outputs.values()),
                "log": self.files.log}


class StudyPlan:
    """Every training job of study ``cfg`` (a validated config) and the rules' lookups.
    ``exists``, ``listdir`` and ``read_json`` look at the results (tests give their own)."""

    def __init__(self, cfg: Mapping[str, Any], exists: Callable[[str], bool] = os.path.exists,
                 listdir: Callable[[str], list[str]] | None = None,
                 read_json: Callable[[str], Any] | None = None):
        self.cfg, self.layout, self.budgets = cfg, Layout(cfg), Budgets(cfg)
        self.exists = exists
        self._listdir = listdir or (lambda d: os.listdir(d) if os.path.isdir(d) else [])
        self._read_json = read_json or _read_json
        self.full, self.ladder = cfg["train"]["steps"], uses_trunk(cfg["train"])
        self.jobs: dict[tuple[str, str, int], TrainJob] = {}
        for spec in self.layout.run_of.values():
            for job in self._jobs_of(spec):
                self.jobs[job.kind, spec.run, job.to] = job

    # ---------------------------------------------------------------- the table
    def _jobs_of(self, spec: RunSpec) -> list[TrainJob]:
        if not self.ladder:
            return [TrainJob("train", spec, self.full, 1.0, None, self.full)]
        jobs = [TrainJob("trunk", spec, k, k / self.full, self._trunk_start(spec, k), self.full)
                for k in self.budgets.branch_points(spec)]
        for rung in self.budgets.rungs(spec):
            jobs.append(TrainJob("train" if rung.steps == self.full else "branch", spec, rung.steps,
                                 (rung.steps - rung.branch_point) / self.full,
                                 trunk_state(spec.run, rung.branch_point), self.full))
        return jobs

    def _trunk_start(self, spec: RunSpec, step: int) -> str | None:
        state = TrunkFiles(spec.run, step).outputs
        if self.exists(state["sidecar"]) and self.exists(state["state"]):
            return self._read_json(state["sidecar"]).get("from") or None
        saved = (re.fullmatch(r"step-(\d+)\.ckpt", n) for n in self._listdir(RUN_DIR.format(run=spec.run) + "/trunk"))
        before = [s for s in {*self.budgets.branch_points(spec), *(int(m[1]) for m in saved if m)} if s < step]
        return trunk_state(spec.run, max(before)) if before else None

    def table(self) -> list[dict[str, Any]]:
        """One row per training job: kind, strategy, seed, run, steps it trains to, the state it
        starts from, its outputs and log (a run two strategies share is listed once, as the first)."""
        return [job.row() for job in self.jobs.values()]

    def jobs_of(self, run: str) -> list[TrainJob]:
        """Run ``run``'s training jobs, in table order (trunk pieces, then its budgets ascending)."""
        return [job for (_, name, _), job in self.jobs.items() if name == run]

    # ---------------------------------------------------------------- lookups by wildcard value
    def run(self, run: str) -> RunSpec:
        """The (first) strategy and seed of the study that run folder ``run`` holds."""
        try:
            return self.layout.run_of[run]
        except KeyError:
            raise PlanError(f"{RUN_DIR.format(run=run)} is not a run of study {self.cfg['study']!r}: ask for the "
                            "study's report, or run with the config that declares it") from None

    def trunk_job(self, run: str, step: int | str) -> TrainJob:
        """The trunk piece of run ``run`` that trains to step ``step``."""
        spec, step = self.run(run), int(step)
        if ("trunk", run, step) not in self.jobs:
            raise PlanError(f"{trunk_state(run, step)}: {step} is not a branch point of this run "
                            f"(its branch points: {self.budgets.branch_points(spec) if self.ladder else []})")
        return self.jobs["trunk", run, step]

    def model_job(self, run: str, steps: int | str | None = None) -> TrainJob:
        """The job that trains run ``run``'s model of budget ``steps`` (default: the full budget)."""
        spec, steps = self.run(run), self.full if steps is None else int(steps)
        job = self.jobs.get(("train" if steps == self.full else "branch", run, steps))
        if job is None:
            budgets = [r.steps for r in self.budgets.rungs(spec)] if self.ladder else [self.full]
            raise PlanError(f"{RUN_DIR.format(run=run)}: {steps} steps is not a budget of this run in study "
                            f"{self.cfg['study']!r} (its budgets: {budgets})")
        return job

    def runtime(self, job: TrainJob, attempt: int, members: int = 1) -> int:
        """Minutes to ask for ``job`` (with ``members`` runs in its pack) on attempt ``attempt``."""
        return train_runtime(self.cfg, job.spec.mode, attempt, members, share=job.share)

    def split(self, split: str, key: str) -> dict[str, Any]:
        """What shapes held-out split ``split``; refuses a key the current config would not produce."""
        if self.layout.split_keys[split] != key:
            raise PlanError(f"{SPLIT.format(split=split, key=key)} is not a split of the current config "
                            f"(it would be {self.layout.splits[split]})")
        return split_params(self.cfg, split)

    def eval_settings(self, model: str, ev: str) -> dict[str, Any]:
        """The evaluation settings of model folder ``model`` (a run, or ``<run>/rung-<steps>``):
        the config's for a run and a grown rung, endpoints only for a smaller rung; refuses an
        evaluation folder the current config would not produce."""
        rung = re.search(r"rung-(\d+)$", model)
        if ev == self.layout.eval_key and (rung is None or int(rung[1]) > self.full):
            return self.cfg["evaluation"]
        if ev == self.layout.rung_eval_key and rung is not None:
            return self.layout.rung_eval_settings
        raise PlanError(f"{eval_dir(model, ev)} is not an evaluation of the current config "
                        f"(eval-{self.layout.eval_key} for a run, eval-{self.layout.rung_eval_key} for a rung)")

    # ---------------------------------------------------------------- what the study reads
    def _evaluated(self, index: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``index``, or with ``partial`` only its evaluated entries."""
        return [e for e in index if self.exists(e["metrics"])] if self.cfg["partial"] else index

    def run_index(self, top: int | None = None) -> list[dict[str, Any]]:
        """One entry per (strategy, seed) with its evaluation and curve files at the study's full
        budget ``top`` (train.steps, or the largest rung until_stable added)."""
        top = self.full if top is None else top
        return self._evaluated([{"strategy": r.strategy, "seed": r.seed, "run": r.run,
                                 "metrics": f"{self.layout.rung_eval_dir(r.run, top)}/metrics.json",
                                 "per_problem": f"{self.layout.rung_eval_dir(r.run, top)}/per_problem.csv",
                                 "curve": ModelFiles(model_dir(r.run, top, self.full)).outputs["curve"]}
                                for r in self.layout.runs])

    def look_margin(self, top: int, next_budget: int | None) -> dict[str, Any]:
        """What an ``until_stable`` look at ladder top ``top`` reads besides its rungs: the trunk's end
        at ``top`` (``trunk_until``), the trunk the rung of ``next_budget`` would need
        (``next_trunk``), and the shortest of the longest constant-lr trunks seen stable per compared
        mode (``seen_stable``; None when one is not measured)."""
        f = decay_fraction(self.cfg["train"])
        modes = {m.mode for m in self.layout.runs}
        seen = [(self.cfg.get("stability_margin") or {}).get("seen_stable", {}).get(m) for m in sorted(modes)]
        return {"trunk_until": decay_start(top, f), "next_trunk": decay_start(next_budget, f) if next_budget else None,
                "seen_stable": None if any(v is None for v in seen) or not seen else min(seen)}

    def rung_index(self, top: int | None = None, compute_matched: bool = True) -> list[dict[str, Any]]:
        """One entry per (strategy, seed, budget): the ladder's rungs up to ``top`` (above
        train.steps: those until_stable added) and each mining arm's compute-matched rung, with
        their evaluation and curve files."""
        top = self.full if top is None else top
        budgets, batch = self.budgets.budgets_up_to(top), self.cfg["train"]["batch_size"]
        index = []
        for r in self.layout.runs:
            rungs = self.budgets.rungs(r) if self.ladder else []
            matched = self.budgets.compute_matched.get(r.strategy) if compute_matched else None
            entries = [(g.steps, "ladder") for g in rungs if g.steps in budgets] or [(self.full, "ladder")]
            entries += [(matched, "compute_matched")] if matched is not None else []
            index += [{"strategy": r.strategy, "seed": r.seed, "run": r.run, "rung": steps, "kind": kind,
                       "samples": steps * batch, "metrics": f"{self.layout.rung_eval_dir(r.run, steps)}/metrics.json",
                       "curve": ModelFiles(model_dir(r.run, steps, self.full)).outputs["curve"]}
                      for steps, kind in entries]
        return self._evaluated(index)


    # ---------------------------------------------------------------- until_stable's looks (method §8.1)
    @property
    def growth(self) -> Mapping[str, Any] | None:
        """``comparison.ladder.until_stable`` (:attr:`Budgets.growth <diffusion_lib.plan.budgets.Budgets.growth>`)."""
        return self.budgets.growth

    def looks(self, ask: Callable[[int], str] | None = None) -> list[Look]:
        """The looks taken so far (:meth:`Budgets.looks <diffusion_lib.plan.budgets.Budgets.looks>`)."""
        return self.budgets.looks(ask)

    def describe_looks(self) -> str:
        """What until_stable has done so far (the looks on disk), for the workflow's start."""
        return describe_looks(self.looks(), self.full, self.growth["max_steps"])

    def top(self, looks: list[Look]) -> int:
        """The study's full budget after ``looks``: train.steps, or the largest rung they added."""
        return final_top(self.full, looks)

    def next_budget(self, top: int) -> int | None:
        """The rung a look at ladder top ``top`` would add (None above ``max_steps``)."""
        return next((b for b in self.budgets.grown_budgets if b > top), None)

    def longest_trunk(self, top: int) -> int | None:
        """The study's longest constant-lr trunk when its largest rung is ``top``: that rung's branch
        point (None without the ladder)."""
        if not self.ladder:
            return None
        return max(r.branch_point for r in self.budgets.rungs(self.layout.runs[0]) if r.steps <= top)

    @property
    def growth_files(self) -> dict[str, str]:
        """The study's record of what until_stable did, by output name (none when it is off)."""
        return {"growth": self.layout.files.growth(self.growth["max_steps"])} if self.growth else {}

    def study_inputs(self, looks: list[Look]) -> dict[str, Any]:
        """The files the ``aggregate`` job reads after ``looks``, by input name."""
        top = self.top(looks)
        runs, rungs = self.run_index(top), self.rung_index(top)
        return {"metrics": [e["metrics"] for e in runs], "curves": [e["curve"] for e in runs],
                "per_problem": [e["per_problem"] for e in runs],
                "rung_metrics": sorted({e["metrics"] for e in rungs}), "rung_curves": sorted({e["curve"] for e in rungs}),
                "looks": [self.layout.files.look(look.top) for look in looks], "reference": self.layout.reference}

    def study_params(self, looks: list[Look]) -> dict[str, Any]:
        """What the ``aggregate`` job is given (:func:`diffusion_lib.jobs.study.aggregate`) after
        ``looks``: the runs and rungs it reads, the study's comparison, ladder and training settings."""
        cfg, train, top = self.cfg, self.cfg["train"], self.top(looks)
        return {
            "runs": self.run_index(top), "rungs": self.rung_index(top),
            "expected": [(r.strategy, r.seed) for r in self.layout.runs],
            # the reference's values stand in its file name's key: a param, since rerun triggers leave out input
            "reference_key": self.layout.reference_key,
            "ladder": {"rungs": self.budgets.budgets_up_to(top),
                       "decay_fraction": train["lr_schedule"].get("decay_fraction") if self.ladder else None,
                       "schedule": train["lr_schedule"]["kind"], "batch_size": train["batch_size"],
                       "paper_samples": PAPER_SAMPLES, "compute_matched": self.budgets.compute_matched},
            "comparison": cfg["comparison"], "default_inner": cfg["evaluation"]["default_inner"],
            "sweep_points": cfg["sweep_points"], "arms": strategy_arms(cfg),
            # the study's full budget: train.steps, or the largest rung until_stable added
            "training": {**{k: train[k] for k in ("batch_size", "lr", "timesteps", "lr_schedule")},
                         "steps": top, "longest_trunk": self.longest_trunk(top),
                         "stability_margin": cfg["stability_margin"], "rank": cfg["data"]["rank"],
                         "seeds": {s: len(cfg["strategy_seeds"][s]) for s in cfg["strategies"]},
                         "ema_update_every": train["ema"]["update_every"]},
            "growth": ({"first": self.full, "max_steps": self.growth["max_steps"],
                        "looks": [look.as_dict() for look in looks]} if self.growth else None),
            "name": cfg["name"],
        }

    def look_params(self, top: int) -> dict[str, Any]:
        """What the ``until_stable`` look at ladder top ``top`` is given (:func:`diffusion_lib.jobs.study.look`)."""
        following = self.next_budget(top)
        return {"rungs": self.rung_index(top, compute_matched=False), "next_budget": following,
                "margin": self.look_margin(top, following), "comparison": self.cfg["comparison"]}


def write_table(rows: list[dict[str, Any]], path: str) -> None:
    """The jobs table ``rows`` (:meth:`StudyPlan.table`) as tab-separated values at ``path``."""
    text = "\t".join(rows[0]) + "\n" + "".join("\t".join(map(str, r.values())) + "\n" for r in rows)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _read_json(path: str) -> Any:
    with open(path) as fh:
        return json.load(fh)
