"""Where a run's files live: the one description of a run folder, its rungs and its trunk states.

::

    results/runs/<run>/                  the run at the study's budget train.steps
        model.pt curve.csv status.json   its model (raw + EMA), learning curve and status
        train.log train.benchmark.tsv    its job's log and benchmark
        resume.ckpt                      while it trains
        rung-<steps>/                    the same files for a rung of the budget ladder
        trunk/step-<k>.ckpt              the constant-lr trunk's state at step k, with
        trunk/step-<k>.json              its sidecar (which state it continued), .log, .benchmark.tsv
        trunk/resume.ckpt                while a trunk piece trains
        eval-<key>/                      an evaluation (also inside a rung folder)

The templates below are Snakemake wildcard patterns as well as format strings: the rules name
their outputs with them, the planning code formats them, and a training job reads its runs back
from its output paths with :func:`job_runs`, which parses the same templates. Nothing else
spells these paths.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from ..settings.run_names import RUN_PATTERN, seed_of

RUNS_DIR = "results/runs"
#: the model folder of a rung, relative to RUNS_DIR (the ``{model}`` wildcard of a rung's evaluation)
RUNG = "{run}/rung-{steps}"
RUN_DIR = RUNS_DIR + "/{run}"
RUNG_DIR = RUNS_DIR + "/" + RUNG
#: a saved trunk state without its suffix: ``.ckpt`` (the state), ``.json`` (sidecar), ``.log``, ``.benchmark.tsv``
TRUNK_STEM = RUN_DIR + "/trunk/step-{step}"
#: an evaluation of a model folder (``{model}``: a run, or ``<run>/rung-<steps>``)
EVAL_DIR = RUNS_DIR + "/{model}/eval-{ev}"
MODEL, CURVE, STATUS, RESUME, LOG, BENCHMARK = (
    "model.pt", "curve.csv", "status.json", "resume.ckpt", "train.log", "train.benchmark.tsv")


def model_name(run: str, steps: int, full: int) -> str:
    """Run ``run``'s model at budget ``steps``, relative to RUNS_DIR: the run itself at the full
    budget ``full``, its rung otherwise."""
    return run if steps == full else RUNG.format(run=run, steps=steps)


def model_dir(run: str, steps: int, full: int) -> str:
    """The folder of run ``run``'s model at budget ``steps``."""
    return f"{RUNS_DIR}/{model_name(run, steps, full)}"


def eval_dir(model: str, key: str) -> str:
    """The evaluation ``key`` (a hash of its settings) of model ``model`` (:func:`model_name`)."""
    return EVAL_DIR.format(model=model, ev=key)


def trunk_state(run: str, step: int) -> str:
    """The saved trunk state of run ``run`` at trunk step ``step``."""
    return TRUNK_STEM.format(run=run, step=step) + ".ckpt"


@dataclass(frozen=True)
class ModelFiles:
    """The files of one model folder (a run at the full budget, or one of its rungs)."""

    folder: str

    @property
    def outputs(self) -> dict[str, str]:
        """What its training job writes, by output name."""
        return {"model": f"{self.folder}/{MODEL}", "curve": f"{self.folder}/{CURVE}",
                "status": f"{self.folder}/{STATUS}"}

    @property
    def log(self) -> str:
        return f"{self.folder}/{LOG}"

    @property
    def resume(self) -> str:
        return f"{self.folder}/{RESUME}"

    def entry(self) -> dict[str, str]:
        """The paths a training job is given for this model (:func:`diffusion_lib.jobs.train.train_runs`)."""
        out = self.outputs
        return {"model_path": out["model"], "curve_path": out["curve"], "status_path": out["status"],
                "resume_path": self.resume}


@dataclass(frozen=True)
class TrunkFiles:
    """The files of one saved trunk state of run ``run`` at step ``step``."""

    run: str
    step: int

    @property
    def stem(self) -> str:
        return TRUNK_STEM.format(run=self.run, step=self.step)

    @property
    def outputs(self) -> dict[str, str]:
        """What its trunk job writes, by output name."""
        return {"state": f"{self.stem}.ckpt", "sidecar": f"{self.stem}.json"}

    @property
    def log(self) -> str:
        return f"{self.stem}.log"

    @property
    def resume(self) -> str:
        """A run's trunk pieces share one resume checkpoint (one piece trains at a time)."""
        return RUN_DIR.format(run=self.run) + f"/trunk/{RESUME}"

    def entry(self) -> dict[str, str]:
        """The paths a trunk job is given (:func:`diffusion_lib.jobs.train.train_runs`)."""
        out = self.outputs
        return {"state_path": out["state"], "sidecar_path": out["sidecar"], "resume_path": self.resume}


def _regex(template: str) -> re.Pattern[str]:
    """``template`` as a regular expression, each of its wildcards a named group."""
    groups = {"run": RUN_PATTERN, "steps": r"\d+", "step": r"\d+"}
    pattern = re.escape(template)
    for name, sub in groups.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{sub})")
    return re.compile(pattern)


_TRUNK_STATE = _regex(TRUNK_STEM + ".ckpt")
_RUNG_MODEL = _regex(f"{RUNG_DIR}/{MODEL}")
_RUN_MODEL = _regex(f"{RUN_DIR}/{MODEL}")


def _run_of_path(path: str) -> str:
    """The run of a trunk state ``path`` (a job's start input)."""
    match = _TRUNK_STATE.fullmatch(path)
    if match is None:
        raise ValueError(f"{path} is not a trunk state ({TRUNK_STEM}.ckpt)")
    return match["run"]


def job_runs(outputs: Sequence[str], starts: Sequence[str], full: int) -> list[dict[str, Any]]:
    """The runs a training job trains, read back from its declared files (its params hold only
    what shapes a run, so that packing runs differently never reruns them): for each output (a
    trunk state, or a model at the full budget ``full`` or at a rung), the run, its seed, its
    folder, the trunk state it starts from (one of ``starts``, if any) and the paths it writes."""
    runs = []
    for out in outputs:
        if (m := _TRUNK_STATE.fullmatch(out)) is not None:
            trunk = TrunkFiles(m["run"], int(m["step"]))
            spec: dict[str, Any] = {"trunk_to": trunk.step, **trunk.entry()}
        elif (m := _RUNG_MODEL.fullmatch(out) or _RUN_MODEL.fullmatch(out)) is not None:
            steps = int(m.groupdict().get("steps") or full)
            spec = {"steps": steps, **ModelFiles(model_dir(m["run"], steps, full)).entry()}
        else:
            raise ValueError(f"{out} is neither a trunk state ({TRUNK_STEM}.ckpt) nor a model "
                             f"({RUN_DIR}/{MODEL}, {RUNG_DIR}/{MODEL})")
        run = m["run"]
        start = [s for s in starts if _run_of_path(s) == run]
        if len(start) > 1:
            raise ValueError(f"job inputs hold {len(start)} start states for run {run}: {start}")
        runs.append({"run": run, "seed": seed_of(run), "dir": RUN_DIR.format(run=run), **spec,
                     **({"start": start[0]} if start else {})})
    return runs
