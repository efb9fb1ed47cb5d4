"""Where every output lives: the one description of the files under the results root.

::

    results/                             RESULTS, the one root
      data/<split>-<key>.pt              one held-out split (SPLIT; its log in data/logs/)
      data/reference-<key>.json          the trivial predictors' MSEs (REFERENCE; its log in data/logs/)
      runs/<run>/                        a run at the study's budget train.steps
        model.pt curve.csv status.json   its model (raw + EMA), learning curve and status
        train.log train.benchmark.tsv    its job's log and benchmark
        resume.ckpt                      while it trains
        rung-<steps>/                    the same files for a rung of the budget ladder
        trunk/step-<k>.ckpt              the constant-lr trunk's state at step k, with
        trunk/step-<k>.json              its sidecar (which state it continued), .log, .benchmark.tsv
        trunk/resume.ckpt                while a trunk piece trains
        eval-<key>/                      an evaluation (also inside a rung folder)
      packs/                             with train.pack > 1: the pack plan and each pack job's benchmark
      studies/<study>/                   a study (StudyFiles): tables/, figures/, logs/, ladder/ (the
                                         until_stable looks), report.md, report.html, training_jobs.tsv
      .gpu-slots/ .flops/                GPU slot locks; the FLOP profiles the compute-matched rungs read

The templates below are Snakemake wildcard patterns as well as format strings: the rules name
their outputs with them, the planning code formats them, and a training job reads its runs back
from its output paths with :func:`job_runs`, which parses the same templates. The study's table and
figure names are declared here too (:data:`TABLES`, :data:`FIGURES`). Nothing else spells a path
under the results root.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from ..settings.names import RUN_PATTERN, seed_of

RESULTS = "results"
DATA_DIR = f"{RESULTS}/data"
#: one held-out split, and its job's log
SPLIT, SPLIT_LOG = DATA_DIR + "/{split}-{key}.pt", DATA_DIR + "/logs/{split}-{key}.log"
#: the trivial predictors' MSEs on the test sets, and its job's log
REFERENCE, REFERENCE_LOG = DATA_DIR + "/reference-{key}.json", DATA_DIR + "/logs/reference-{key}.log"
RUNS_DIR = f"{RESULTS}/runs"
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
#: the model file of any model folder (a run or a rung): what an evaluation reads
MODEL_FILE = RUNS_DIR + "/{model}/" + MODEL
PACKS_DIR = f"{RESULTS}/packs"
#: the pack plan of a study's runs and pack size (written by the main process, read by job processes)
PACK_PLAN = PACKS_DIR + "/plan-{key}.json"
#: a pack job's benchmark (its runs' train.log files each hold the pack's log)
PACK_BENCHMARK = PACKS_DIR + "/{rule}.benchmark.tsv"
#: the locks that share GPUs among jobs (resources.jobs_per_gpu)
GPU_SLOTS = f"{RESULTS}/.gpu-slots"
#: the FLOP profiles per mining config that place the compute-matched rungs
FLOPS_CACHE = f"{RESULTS}/.flops"
#: folders of the layout before studies were kept apart: neither read nor deleted, only pointed out
OLD_LAYOUT = tuple(f"{RESULTS}/{old}" for old in ("train", "eval", "report"))

#: the tables ``aggregate`` writes (``tables/<name>.csv``), in the order it writes them
TABLES = ("runs", "strategies", "endpoints", "contrasts", "landscape", "test_time", "curves", "convergence",
          "convergence_runs", "compute_matched", "diagnostics", "cost", "ablation", "ladder", "ladder_contrasts",
          "gap_stability", "skill", "instability", "failures", "failure_sensitivity", "stability_runs", "stability_shares",
          "stability_km", "stability_tests", "stability_range")
#: the main figures (``figures/<name>.png``) and their category in Snakemake's report; each has its
#: caption in ``workflow/report/<name>.rst``
FIGURES = {"forest": "0. Verdict", "ladder": "0. Verdict", "mse": "1. Comparison", "curves": "2. Training",
           "compute": "2. Training", "diagnostics": "2. Training", "landscape": "3. Energy landscape",
           "test_time": "4. Test-time compute"}


@dataclass(frozen=True)
class StudyFiles:
    """The files of study ``study`` (its report folder; runs and data are shared by studies)."""

    study: str

    @property
    def dir(self) -> str:
        return f"{RESULTS}/studies/{self.study}"

    def table(self, name: str, ext: str = "csv") -> str:
        """A table (``csv``), or a LaTeX table (``tex``)."""
        return f"{self.dir}/tables/{name}.{ext}"

    @property
    def verdict(self) -> str:
        return f"{self.dir}/tables/verdict.json"

    def growth(self, max_steps: int) -> str:
        """What ``until_stable`` did, named by its ``max_steps`` (raising it asks for a new file)."""
        return f"{self.dir}/tables/growth-max{max_steps}.json"

    def figure(self, name: str, ext: str = "png") -> str:
        """A figure: a main one (:data:`FIGURES`) or ``ablation_<parameter>``, in format ``ext``."""
        return f"{self.dir}/figures/{name}.{ext}"

    def log(self, name: str) -> str:
        """The log of the study's job ``name`` (a rule, or ``look-<top>``)."""
        return f"{self.dir}/logs/{name}.log"

    def look(self, top: int | str) -> str:
        """The ``until_stable`` look at ladder top ``top``."""
        return f"{self.dir}/ladder/look-{top}.json"

    @property
    def report_md(self) -> str:
        return f"{self.dir}/report.md"

    @property
    def report_html(self) -> str:
        return f"{self.dir}/report.html"

    @property
    def jobs(self) -> str:
        """Every training job of the study, its run and files (:meth:`StudyPlan.table`; the output of the
        ``jobs_table`` job, so Snakemake records it and rewrites it when the plan changes. Named apart
        from the ``jobs.tsv`` earlier versions wrote while the workflow was parsed, which Snakemake
        never recorded and would never rewrite)."""
        return f"{self.dir}/training_jobs.tsv"


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
