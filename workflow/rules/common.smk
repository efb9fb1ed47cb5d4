# Shared helpers: config validation (fails before any job is scheduled), the results layout,
# code fingerprints, resources and wildcard constraints.
import os
import re
import shutil
import sys

sys.path.insert(0, workflow.basedir)  # rule scripts do the same through workflow/scripts/_repo.py

from diffusion_lib import scheduling
from diffusion_lib.config import ConfigError, load_config
from diffusion_lib.jobs.study import TABLES
from diffusion_lib.layout import EVAL_PATTERN, RUN_PATTERN, SPLITS, TEST_SETS, Layout
from diffusion_lib.layout import reference_params, run_train_block, split_params
from diffusion_lib.provenance import code_fingerprint, value_key

try:
    CFG = load_config(config)  # also turns --config strings ("[0,1,2]", "true") into what the schema asks
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

# Every output is keyed by what shapes it (diffusion_lib/layout.py): data by its values, runs by
# their training config and seed, evaluations by their settings and test sets; studies share runs
# and keep their reports apart under results/studies/<study>/.
LAYOUT = Layout(CFG)
STRATEGIES = list(CFG["strategies"])
RUNS = LAYOUT.runs
SWEPT_PARAMETERS = sorted({p for pt in CFG["sweep_points"].values() for p in pt if p != "base"})
# partial=true (e.g. --config partial=true after a --keep-going run) reports only the runs that exist
PARTIAL = CFG["partial"]

RUN = "results/runs/{run}"
EVAL = "results/runs/{run}/eval-{ev}"
STUDY = LAYOUT.study_dir
TABLE_FILES = {t: f"{STUDY}/tables/{t}.csv" for t in TABLES}
FIG_EXT = CFG["report"]["format"]
FIGURES = ("forest", "mse", "curves", "compute", "diagnostics", "landscape", "test_time")
FIGURE_FILES = {f: f"{STUDY}/figures/{f}.{FIG_EXT}" for f in FIGURES}
# tables the report reads (the rest are for users and figures)
REPORT_TABLES = tuple(
    "strategies contrasts test_time convergence compute_matched diagnostics cost landscape ablation".split()
)
ABLATION_FIGURES = {f"ablation_{p}": f"{STUDY}/figures/ablation_{p}.{FIG_EXT}" for p in SWEPT_PARAMETERS}
REPORT_TARGETS = [f"{STUDY}/report.md", f"{STUDY}/report.html", *FIGURE_FILES.values(), *ABLATION_FIGURES.values()]

# Library code each rule runs (its module in diffusion_lib/jobs and everything that imports),
# without comments and docstrings: a param, so editing a statement reruns exactly the affected
# jobs. Shims are not fingerprinted: profiles set rerun-triggers without `code`.
CODE = {job: code_fingerprint(f"diffusion_lib.jobs.{job}") for job in ("data", "train", "evaluate", "study")}

if any(os.path.isdir(f"results/{old}") for old in ("train", "eval", "report")):
    print(
        "note: results/train, results/eval and results/report are the layout before studies were kept apart; "
        "this workflow neither reads nor deletes them (see README, 'Where results live')",
        file=sys.stderr,
    )


def _uses_gpu():
    device = CFG["device"]
    return device.startswith("cuda") or (device == "auto" and shutil.which("nvidia-smi") is not None)


GPU = 1 if _uses_gpu() else 0


def run_spec(wildcards):
    """The study's (strategy, seed) that a run directory holds."""
    try:
        return LAYOUT.run_of[wildcards.run]
    except KeyError:
        raise WorkflowError(
            f"results/runs/{wildcards.run} is not a run of study {CFG['study']!r}: "
            "ask for the study's report, or run with the config that declares it"
        ) from None


def split_spec(wildcards):
    """What shapes the requested held-out split; refuses a key the current config would not produce."""
    if LAYOUT.split_keys[wildcards.split] != wildcards.key:
        raise WorkflowError(
            f"results/data/{wildcards.split}-{wildcards.key}.pt is not a split of the current "
            f"config (it would be {LAYOUT.splits[wildcards.split]})"
        )
    return split_params(CFG, wildcards.split)


def eval_settings(wildcards):
    """The evaluation settings of the current config; refuses another config's evaluation folder."""
    if wildcards.ev != LAYOUT.eval_key:
        raise WorkflowError(f"eval-{wildcards.ev} is not the current config's evaluation (eval-{LAYOUT.eval_key})")
    return CFG["evaluation"]


def train_runtime(wildcards, attempt):
    return scheduling.train_runtime(CFG, run_spec(wildcards).mode, attempt)


# Training params besides the mining config, equal for the single-run and the pack rules so that
# changing train.pack never retrains. Only what shapes a run is here; the script reads the rest
# (checkpoint_every, compile, ...) from the config.
TRAIN_PARAMS = {
    "train": run_train_block(CFG),
    "rank": CFG["data"]["rank"],
    "id_eps": CFG["data"]["id_eps"],
    "code": CODE["train"],
}


def pack_runtime(pack):
    """A pack rule's runtime function (minutes on attempt ``attempt``)."""
    return lambda wildcards, attempt: scheduling.train_runtime(CFG, pack.mode, attempt, len(pack.runs))


def _finished(spec):
    return all(os.path.exists(f"{spec.dir}/{name}") for name in ("model.pt", "curve.csv", "status.json"))


def _packs():
    """train.pack > 1: which runs train together (finished runs and runs to train are never mixed).
    The main process plans from what is finished now and writes the plan; job processes (SLURM
    jobs, subprocesses) parse this file again while other jobs finish, so they read the plan
    instead of re-planning, and every pack rule they are asked to run exists."""
    size = CFG["train"]["pack"]
    if size == 1:
        return []
    path = f"results/packs/plan-{value_key({'runs': [r.run for r in RUNS], 'pack': size}, 12)}.json"
    if not workflow.is_main_process and os.path.exists(path):
        return scheduling.read_pack_plan(path, LAYOUT.run_of)
    packs = scheduling.plan_packs(RUNS, size, _finished)
    if workflow.is_main_process:
        scheduling.write_pack_plan(packs, path)
    return packs


PACKS = _packs()


def _pack_rules_take_the_train_rules_profile_settings():
    """Profiles give the `train` rule its threads, GPU partition and gpu request (set-threads,
    set-resources: profiles/slurm). A pack rule is the same kind of job under another name, so it
    gets the same settings (the pack rules' own values stay where the profile sets none).
    Snakemake has no rule-name patterns for these, hence its resource settings are extended here."""
    settings = workflow.resource_settings
    try:
        resources, threads = settings._parsed_overwrite_resources, settings._parsed_overwrite_threads
    except AttributeError:
        print(
            "warning: this Snakemake does not expose its set-resources/set-threads; pack rules do not "
            "inherit the train rule's profile settings; set them per pack rule",
            file=sys.stderr,
        )
        return
    for pack in PACKS:
        if "train" in resources:
            resources.setdefault(pack.rule, resources["train"])
        if "train" in threads:
            threads.setdefault(pack.rule, threads["train"])


_pack_rules_take_the_train_rules_profile_settings()


def evaluate_runtime(wildcards, attempt):
    return scheduling.evaluate_runtime(CFG, attempt)


def train_priority(wildcards):
    """Longest jobs first (adversarial > random > none): with more jobs than cores, starting the
    expensive runs early keeps short ones for the tail (measured: about a minute off the pilot)."""
    return scheduling.PRIORITY[run_spec(wildcards).mode]


wildcard_constraints:
    run=RUN_PATTERN,
    ev=EVAL_PATTERN,
    split="|".join(SPLITS),
    key=r"[0-9a-f]{10}",
    parameter="|".join(SWEPT_PARAMETERS) or "NO_SWEEPS",


def run_index():
    """One entry per (strategy, seed) of the study, with its run and its evaluation files; only
    the evaluated ones when PARTIAL."""
    index = [
        {
            "strategy": r.strategy,
            "seed": r.seed,
            "run": r.run,
            "metrics": f"{LAYOUT.eval_dir(r.run)}/metrics.json",
            "curve": f"{r.dir}/curve.csv",
        }
        for r in RUNS
    ]
    return [e for e in index if os.path.exists(e["metrics"])] if PARTIAL else index


RUN_INDEX = run_index()
