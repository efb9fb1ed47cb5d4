# Shared helpers: config validation (fails before any job is scheduled), the results layout,
# code fingerprints, resources and wildcard constraints.
import os
import re
import sys

sys.path.insert(0, workflow.basedir)  # rule scripts do the same through workflow/scripts/_repo.py

from diffusion_lib.plan import resources, run_files
from diffusion_lib.settings.ladder import PAPER_SAMPLES, uses_trunk
from diffusion_lib.plan.config import ConfigError, load_config
from diffusion_lib.jobs.study import TABLES
from diffusion_lib.report.latex import PAPER_TABLES
from diffusion_lib.plan.layout import EVAL_PATTERN, RUN_PATTERN, SPLITS, TEST_SETS, reference_params
from diffusion_lib.plan.pack_jobs import study_packs
from diffusion_lib.plan.study_plan import StudyPlan
from diffusion_lib.settings.provenance import code_fingerprint

try:
    CFG = load_config(config)  # also turns --config strings ("[0,1,2]", "true") into what the schema asks
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

# Every output is keyed by what shapes it (diffusion_lib/plan/layout.py): data by its values, runs by
# their training config and seed, evaluations by their settings and test sets; studies share runs
# and keep their reports apart under results/studies/<study>/. The study's training jobs form one
# table (diffusion_lib/plan/study_plan.py, written to the study's jobs.tsv); input functions are
# one-line lookups in it.
PLAN = StudyPlan(CFG)
LAYOUT = PLAN.layout
STRATEGIES = list(CFG["strategies"])
RUNS = LAYOUT.runs
SWEPT_PARAMETERS = sorted({p for pt in CFG["sweep_points"].values() for p in pt if p != "base"})
# partial=true (e.g. --config partial=true after a --keep-going run) reports only the runs that exist
PARTIAL = CFG["partial"]

RUN = run_files.RUN_DIR
RUNG = run_files.RUNG_DIR  # a budget-ladder rung below the full budget
TRUNK = run_files.TRUNK_STEM  # a saved trunk state (.ckpt) and its sidecar (.json)
EVAL = run_files.EVAL_DIR  # model: a run, or one of its rungs
# constant or wsd schedule: runs train as one trunk and a decay branch per budget (diffusion_lib/settings/ladder.py)
LADDER = uses_trunk(CFG["train"])
FULL = CFG["train"]["steps"]
STUDY = LAYOUT.study_dir
TABLE_FILES = {t: f"{STUDY}/tables/{t}.csv" for t in TABLES}
FIGURES = ("forest", "ladder", "mse", "curves", "compute", "diagnostics", "landscape", "test_time")
# the PNG of each figure (the HTML report embeds it) and its copies in the other report.format formats
FIGURE_FILES = {f: f"{STUDY}/figures/{f}.png" for f in FIGURES}
VECTOR_EXTS = [ext for ext in CFG["report"]["format"] if ext != "png"]
VECTOR_FILES = {f"{f}_{ext}": f"{STUDY}/figures/{f}.{ext}" for f in FIGURES for ext in VECTOR_EXTS}
LATEX_FILES = {t: f"{STUDY}/tables/{t}.tex" for t in PAPER_TABLES}
# tables the report reads (the rest are for users and figures)
REPORT_TABLES = tuple(
    "strategies contrasts test_time convergence compute_matched diagnostics cost landscape ablation ladder "
    "ladder_contrasts gap_stability skill instability failures failure_sensitivity".split()
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
ABLATION_FIGURES = {f"ablation_{p}": f"{STUDY}/figures/ablation_{p}.png" for p in SWEPT_PARAMETERS}
ABLATION_VECTORS = [f"{STUDY}/figures/ablation_{p}.{ext}" for p in SWEPT_PARAMETERS for ext in VECTOR_EXTS]
REPORT_TARGETS = [
    f"{STUDY}/report.md",
    f"{STUDY}/report.html",
    *FIGURE_FILES.values(),
    *VECTOR_FILES.values(),
    *LATEX_FILES.values(),
    *ABLATION_FIGURES.values(),
    *ABLATION_VECTORS,
]

# Library code each rule runs (its module in diffusion_lib/jobs and everything that imports),
# without comments and docstrings: a param, so editing a statement reruns exactly the affected
# jobs. Shims are not fingerprinted: profiles set rerun-triggers without `code`.
CODE = {job: code_fingerprint(f"diffusion_lib.jobs.{job}") for job in ("data", "train", "evaluate", "study")}

if any(os.path.isdir(f"results/{old}") for old in ("train", "eval", "report")):
    print(
        "note: results/train, results/eval and results/report are the layout before studies were kept apart; "
        "this workflow neither reads nor deletes them (see docs/operations.md, 'When things go wrong')",
        file=sys.stderr,
    )


GPU = resources.gpus_per_job(CFG["device"])
if workflow.is_main_process:
    PLAN.write_table(f"{STUDY}/jobs.tsv")


def runtime_of(job, members=1):
    """A training job's runtime function: minutes on attempt ``attempt`` (more on each retry)."""
    return lambda wildcards, attempt: PLAN.runtime(job(wildcards), attempt, members)


# Training params besides the run's train block (its strategy's overrides applied) and mining config,
# equal for the single-run and the pack rules so that changing train.pack never retrains. Only what
# shapes a run is here; the script reads the rest (checkpoint_every, compile, ...) from the config.
TRAIN_PARAMS = {
    "rank": CFG["data"]["rank"],
    "id_eps": CFG["data"]["id_eps"],
    "code": CODE["train"],
}

# train.pack > 1: which runs train together, one job per pack and piece (diffusion_lib/plan/pack_jobs.py)
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


# the study's (strategy, seed) entries and (strategy, seed, budget) entries up to a full budget, with
# their evaluation and curve files (only the evaluated ones when PARTIAL)
run_index, rung_index = PLAN.run_index, PLAN.rung_index
