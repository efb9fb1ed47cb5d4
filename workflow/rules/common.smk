# Shared helpers: config validation (fails before any job is scheduled), the results layout,
# code fingerprints, resources and wildcard constraints.
import os
import re
import sys

sys.path.insert(0, workflow.basedir)  # rule scripts do the same through workflow/scripts/_repo.py

from diffusion_lib.plan import files, resources
from diffusion_lib.plan.config import ConfigError, load_config
from diffusion_lib.report.latex import PAPER_TABLES
from diffusion_lib.plan.layout import EVAL_PATTERN, RUN_PATTERN, SPLITS, TEST_SETS, reference_params
from diffusion_lib.plan.packs import study_packs
from diffusion_lib.plan.study_plan import StudyPlan
from diffusion_lib.settings.provenance import code_fingerprint

try:
    CFG = load_config(config)  # also turns --config strings ("[0,1,2]", "true") into what the schema asks
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

# Every output is keyed by what shapes it (diffusion_lib/plan/layout.py) and lies where
# diffusion_lib/plan/files.py says: data by its values, runs by their training config and seed,
# evaluations by their settings and test sets; studies share runs and keep their reports apart. The
# study's training jobs form one table (diffusion_lib/plan/study_plan.py, the study's training_jobs.tsv);
# input functions and params are one-line lookups in it.
PLAN = StudyPlan(CFG)
LAYOUT = PLAN.layout
STUDY = LAYOUT.files  # the study's files: tables, figures, logs, report
RUNS = LAYOUT.runs
LADDER = PLAN.ladder  # constant or wsd schedule: runs train as one trunk and a decay branch per budget
SWEPT_PARAMETERS = sorted({p for pt in CFG["sweep_points"].values() for p in pt if p != "base"})

RUN = files.RUN_DIR
RUNG = files.RUNG_DIR  # a budget-ladder rung below the full budget
TRUNK = files.TRUNK_STEM  # a saved trunk state (.ckpt) and its sidecar (.json)
EVAL = files.EVAL_DIR  # model: a run, or one of its rungs
TABLE_FILES = {t: STUDY.table(t) for t in files.TABLES}
# the PNG of each figure (the HTML report embeds it) and its copies in the other report.format formats
FIGURE_FILES = {f: STUDY.figure(f) for f in files.FIGURES}
VECTOR_EXTS = [ext for ext in CFG["report"]["format"] if ext != "png"]
VECTOR_FILES = {f"{f}_{ext}": STUDY.figure(f, ext) for f in files.FIGURES for ext in VECTOR_EXTS}
LATEX_FILES = {t: STUDY.table(t, "tex") for t in PAPER_TABLES}
# tables the report reads (the rest are for users and figures)
REPORT_TABLES = tuple(
    "strategies contrasts test_time convergence compute_matched diagnostics cost landscape ablation ladder "
    "ladder_contrasts gap_stability skill instability failures failure_sensitivity stability_tests "
    "stability_shares".split()
)
PLOT_TABLES = (
    "runs",
    "curves",
    "landscape",
    "contrasts",
    "ladder_contrasts",
    "compute_matched",
    "endpoints",
)  # what plot_main reads
ABLATION_FIGURES = {f"ablation_{p}": STUDY.figure(f"ablation_{p}") for p in SWEPT_PARAMETERS}
ABLATION_VECTORS = [STUDY.figure(f"ablation_{p}", ext) for p in SWEPT_PARAMETERS for ext in VECTOR_EXTS]
# the stability study's figure, where the config declares its tests (comparison.stability)
STABILITY_FIGURES = {"stability": STUDY.figure("stability")} if CFG["comparison"].get("stability") else {}
STABILITY_VECTORS = [STUDY.figure(f, ext) for f in STABILITY_FIGURES for ext in VECTOR_EXTS]
REPORT_TARGETS = [
    STUDY.report_md,
    STUDY.report_html,
    STUDY.jobs,
    *PLAN.growth_files.values(),
    *FIGURE_FILES.values(),
    *VECTOR_FILES.values(),
    *LATEX_FILES.values(),
    *ABLATION_FIGURES.values(),
    *ABLATION_VECTORS,
    *STABILITY_FIGURES.values(),
    *STABILITY_VECTORS,
]

# Library code each rule runs (its module in diffusion_lib/jobs and everything that imports),
# without comments and docstrings: a param, so editing a statement reruns exactly the affected
# jobs. Shims are not fingerprinted: profiles set rerun-triggers without `code`.
CODE = {job: code_fingerprint(f"diffusion_lib.jobs.{job}") for job in ("data", "train", "evaluate", "study")}

if any(os.path.isdir(old) for old in files.OLD_LAYOUT):
    print(
        f"note: {', '.join(files.OLD_LAYOUT)} are the layout before studies were kept apart; "
        "this workflow neither reads nor deletes them (see docs/operations.md, 'When things go wrong')",
        file=sys.stderr,
    )


GPU = resources.gpus_per_job(CFG["device"])


def train_resources(job, members=1):
    """A training job's resources; ``job`` maps its wildcards to its TrainJob (a pack's: its first
    member's), whose share of the budget sets the runtime asked for on each attempt."""
    return {
        "gpu": GPU,
        "runtime": lambda wildcards, attempt: PLAN.runtime(job(wildcards), attempt, members),
        "mem_mb": resources.train_mem_mb(CFG, members),
    }


# Training params besides the run's train block (its strategy's overrides applied) and mining config,
# equal for the single-run and the pack rules so that changing train.pack never retrains. Only what
# shapes a run is here; the script reads the rest (checkpoint_every, compile, ...) from the config.
TRAIN_PARAMS = {
    "rank": CFG["data"]["rank"],
    "id_eps": CFG["data"]["id_eps"],
    "code": CODE["train"],
}

# train.pack > 1: which runs train together, one job per pack and piece (diffusion_lib/plan/packs.py)
PACK_JOBS = study_packs(PLAN, workflow.is_main_process)
PACKS = sorted({job.pack.rule for job in PACK_JOBS})
if not resources.inherit_profile_settings(workflow.resource_settings, [(j.rule, j.kind) for j in PACK_JOBS]):
    print(
        "warning: this Snakemake does not expose its set-resources/set-threads; pack rules do not "
        "inherit the train rule's profile settings; set them per pack rule",
        file=sys.stderr,
    )


def evaluate_runtime(wildcards, attempt):
    return resources.evaluate_runtime(CFG, attempt)


def train_priority(wildcards):
    """Longest jobs first (adversarial > random > none): with more jobs than cores, starting the
    expensive runs early keeps short ones for the tail (measured: about a minute off the pilot)."""
    return resources.PRIORITY[PLAN.run(wildcards.run).mode]


wildcard_constraints:
    run=RUN_PATTERN,
    model=rf"{RUN_PATTERN}(/rung-\d+)?",
    steps=r"\d+",
    step=r"\d+",
    ev=EVAL_PATTERN,
    split="|".join(SPLITS),
    key=r"[0-9a-f]{10}",
    parameter="|".join(SWEPT_PARAMETERS) or "NO_SWEEPS",
