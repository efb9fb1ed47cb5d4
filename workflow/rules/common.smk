# Shared helpers: config validation (fails before any job is scheduled), the results layout,
# code fingerprints, resources and wildcard constraints.
import os
import re
import shutil
import sys

sys.path.insert(0, workflow.basedir)  # rule scripts do the same through workflow/scripts/_repo.py

import json
from types import SimpleNamespace

from diffusion_lib.plan import packs, resources
from diffusion_lib.settings.ladder import PAPER_SAMPLES, decay_fraction, uses_trunk
from diffusion_lib.settings.lr_schedule import decay_start
from diffusion_lib.plan.config import ConfigError, load_config
from diffusion_lib.jobs.study import TABLES
from diffusion_lib.report.latex import PAPER_TABLES
from diffusion_lib.plan.layout import EVAL_PATTERN, RUN_PATTERN, SPLITS, TEST_SETS, Layout
from diffusion_lib.plan.layout import reference_params, run_train_block, split_params
from diffusion_lib.settings.provenance import code_fingerprint, value_key

try:
    CFG = load_config(config)  # also turns --config strings ("[0,1,2]", "true") into what the schema asks
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

# Every output is keyed by what shapes it (diffusion_lib/plan/layout.py): data by its values, runs by
# their training config and seed, evaluations by their settings and test sets; studies share runs
# and keep their reports apart under results/studies/<study>/.
LAYOUT = Layout(CFG)
STRATEGIES = list(CFG["strategies"])
RUNS = LAYOUT.runs
SWEPT_PARAMETERS = sorted({p for pt in CFG["sweep_points"].values() for p in pt if p != "base"})
# partial=true (e.g. --config partial=true after a --keep-going run) reports only the runs that exist
PARTIAL = CFG["partial"]

RUN = "results/runs/{run}"
RUNG = "results/runs/{run}/rung-{steps}"  # a budget-ladder rung below the full budget
TRUNK = "results/runs/{run}/trunk/step-{step}"  # a saved trunk state (.ckpt) and its sidecar (.json)
EVAL = "results/runs/{model}/eval-{ev}"  # model: a run, or one of its rungs
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
    "ladder_contrasts gap_stability skill instability".split()
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
    """The evaluation settings of the current config (a run's and a grown rung's, or a smaller rung's
    endpoints-only settings); refuses another config's evaluation folder."""
    rung = re.search(r"rung-(\d+)$", wildcards.model)
    if wildcards.ev == LAYOUT.eval_key and (rung is None or int(rung.group(1)) > FULL):
        return CFG["evaluation"]
    if wildcards.ev == LAYOUT.rung_eval_key and rung is not None:
        return LAYOUT.rung_eval_settings
    raise WorkflowError(
        f"results/runs/{wildcards.model}/eval-{wildcards.ev} is not an evaluation of the current config "
        f"(eval-{LAYOUT.eval_key} for a run, eval-{LAYOUT.rung_eval_key} for a rung)"
    )


def _rung(wildcards):
    """The rung of the requested run at budget ``wildcards.steps`` (the full budget if absent)."""
    spec = run_spec(wildcards)
    steps = int(getattr(wildcards, "steps", FULL))
    for rung in LAYOUT.rungs(spec) if LADDER else []:
        if rung.steps == steps:
            return spec, rung
    if LADDER or steps != FULL:
        raise WorkflowError(
            f"results/runs/{wildcards.run}: {steps} steps is not a budget of this run in study {CFG['study']!r} "
            f"(its budgets: {[r.steps for r in LAYOUT.rungs(spec)] if LADDER else [FULL]})"
        )
    return spec, None


def _existing_trunk_steps(run):
    folder = f"results/runs/{run}/trunk"
    if not os.path.isdir(folder):
        return set()
    found = (re.fullmatch(r"step-(\d+)\.ckpt", name) for name in os.listdir(folder))
    return {int(m.group(1)) for m in found if m}


def trunk_start(wildcards):
    """The trunk state a trunk piece continues from: for an existing state the one it was trained
    from (its sidecar), so that adding a rung never changes a finished piece's inputs; otherwise
    the latest configured or saved state before it (none: from scratch)."""
    spec, step = run_spec(wildcards), int(wildcards.step)
    if step not in LAYOUT.branch_points(spec):
        raise WorkflowError(
            f"{LAYOUT.trunk_state(spec.run, step)}: {step} is not a branch point of this run "
            f"(its branch points: {LAYOUT.branch_points(spec)})"
        )
    sidecar = LAYOUT.trunk_state(spec.run, step).removesuffix(".ckpt") + ".json"
    if os.path.exists(sidecar) and os.path.exists(LAYOUT.trunk_state(spec.run, step)):
        with open(sidecar) as fh:
            start = json.load(fh).get("from")
        return {"start": start} if start else {}
    before = [s for s in {*LAYOUT.branch_points(spec), *_existing_trunk_steps(spec.run)} if s < step]
    return {"start": LAYOUT.trunk_state(spec.run, max(before))} if before else {}


def branch_start(wildcards):
    """The trunk state a rung's decay branch starts from (nothing without a ladder: from scratch)."""
    spec, rung = _rung(wildcards)
    return {"start": LAYOUT.trunk_state(spec.run, rung.branch_point)} if rung else {}


def _paths(folder):
    return {
        "model_path": f"{folder}/model.pt",
        "curve_path": f"{folder}/curve.csv",
        "status_path": f"{folder}/status.json",
        "resume_path": f"{folder}/resume.ckpt",
    }


def branch_runs(wildcards):
    """What the train/branch job trains: its run, seed, budget, the trunk state it starts from and
    its output files (a param)."""
    spec, rung = _rung(wildcards)
    steps = rung.steps if rung else FULL
    return [
        {"run": spec.run, "seed": spec.seed, "steps": steps, **_paths(LAYOUT.rung_dir(spec.run, steps))}
        | branch_start(wildcards)
    ]


def trunk_runs(wildcards):
    """What a trunk job trains: its run, seed, the step it trains to and where its state goes (a param)."""
    spec, step = run_spec(wildcards), int(wildcards.step)
    return [
        {
            "run": spec.run,
            "seed": spec.seed,
            "trunk_to": step,
            "state_path": LAYOUT.trunk_state(spec.run, step),
            "resume_path": f"{spec.dir}/trunk/resume.ckpt",
        }
        | trunk_start(wildcards)
    ]


def trunk_runtime(wildcards, attempt):
    """A trunk piece trains at most to its branch point (from the previous one, when there is one)."""
    share = int(wildcards.step) / FULL
    return resources.train_runtime(CFG, run_spec(wildcards).mode, attempt, share=share)


def branch_runtime(wildcards, attempt):
    """A branch trains its decay (the whole run without a ladder)."""
    spec, rung = _rung(wildcards)
    share = (rung.steps - rung.branch_point) / FULL if rung else 1.0
    return resources.train_runtime(CFG, spec.mode, attempt, share=share)


# Training params besides the run's train block (its strategy's overrides applied) and mining config, equal for the single-run and the pack rules so that
# changing train.pack never retrains. Only what shapes a run is here; the script reads the rest
# (checkpoint_every, compile, ...) from the config.
TRAIN_PARAMS = {
    "rank": CFG["data"]["rank"],
    "id_eps": CFG["data"]["id_eps"],
    "code": CODE["train"],
}


def pack_runtime(pack, kind, steps):
    """A pack rule's runtime function (minutes on attempt ``attempt``): a trunk piece trains at most
    to its step, a branch its decay, the full budget's job its decay (or all of it without a ladder)."""
    f = decay_fraction(CFG["train"]) if LADDER else 1.0
    share = steps / FULL if kind == "trunk" else (steps - decay_start(steps, f)) / FULL if LADDER else 1.0
    return lambda wildcards, attempt: resources.train_runtime(CFG, pack.mode, attempt, len(pack.runs), share=share)


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
        return packs.read_pack_plan(path, LAYOUT.run_of)
    # with the ladder, a pack's runs also share their budgets (a compute-matched rung is a strategy's)
    planned = packs.plan_packs(RUNS, size, _finished, lambda r: [g.steps for g in LAYOUT.rungs(r)] if LADDER else [])
    if workflow.is_main_process:
        packs.write_pack_plan(planned, path)
    return planned


PACKS = _packs()


def pack_pieces(pack):
    """The jobs of a pack: ``(rule name, kind, budget or trunk step, runs param)`` for each trunk
    piece and each rung below the full budget (with the ladder), and the full budget's job."""
    first = pack.runs[0]
    pieces = []
    if LADDER:
        for step in LAYOUT.branch_points(first):
            wcs = [SimpleNamespace(run=r.run, step=str(step)) for r in pack.runs]
            pieces.append((f"{pack.rule}_trunk{step}", "trunk", step, [trunk_runs(w)[0] for w in wcs]))
        for rung in LAYOUT.rungs(first):
            if rung.steps != FULL:
                wcs = [SimpleNamespace(run=r.run, steps=str(rung.steps)) for r in pack.runs]
                pieces.append((f"{pack.rule}_rung{rung.steps}", "branch", rung.steps, [branch_runs(w)[0] for w in wcs]))
    wcs = [SimpleNamespace(run=r.run) for r in pack.runs]  # the helpers read wildcards by attribute
    pieces.append((pack.rule, "train", FULL, [branch_runs(w)[0] for w in wcs]))
    return pieces


def pack_outputs(kind, runs):
    """A pack job's outputs: its runs' trunk states and sidecars, or their models, curves and statuses."""
    if kind == "trunk":
        return {
            "state": [r["state_path"] for r in runs],
            "sidecar": [r["state_path"].removesuffix(".ckpt") + ".json" for r in runs],
        }
    return {
        "model": [r["model_path"] for r in runs],
        "curve": [r["curve_path"] for r in runs],
        "status": [r["status_path"] for r in runs],
    }


def pack_logs(kind, runs):
    """A pack job's log: one file per run, next to its outputs (each holds the pack's log)."""
    if kind == "trunk":
        return [r["state_path"].removesuffix(".ckpt") + ".log" for r in runs]
    return [r["model_path"].removesuffix("model.pt") + "train.log" for r in runs]


PACK_JOBS = [(pack, *piece) for pack in PACKS for piece in pack_pieces(pack)]
PACK_RULES = [(rule, kind) for _, rule, kind, _, _ in PACK_JOBS]


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
    for rule, kind in PACK_RULES:
        for source in dict.fromkeys((kind, "train")):  # a trunk pack takes trunk's settings, else train's
            if source in resources:
                resources.setdefault(rule, resources[source])
            if source in threads:
                threads.setdefault(rule, threads[source])


_pack_rules_take_the_train_rules_profile_settings()


def evaluate_runtime(wildcards, attempt):
    return resources.evaluate_runtime(CFG, attempt)


def train_priority(wildcards):
    """Longest jobs first (adversarial > random > none): with more jobs than cores, starting the
    expensive runs early keeps short ones for the tail (measured: about a minute off the pilot)."""
    return resources.PRIORITY[run_spec(wildcards).mode]


wildcard_constraints:
    run=RUN_PATTERN,
    model=rf"{RUN_PATTERN}(/rung-\d+)?",
    steps=r"\d+",
    step=r"\d+",
    ev=EVAL_PATTERN,
    split="|".join(SPLITS),
    key=r"[0-9a-f]{10}",
    parameter="|".join(SWEPT_PARAMETERS) or "NO_SWEEPS",


def run_index(top=FULL):
    """One entry per (strategy, seed) of the study, with its evaluation and curve files at the study's
    full budget ``top`` (train.steps, or the largest rung until_stable added); only the evaluated ones
    when PARTIAL."""
    index = [
        {
            "strategy": r.strategy,
            "seed": r.seed,
            "run": r.run,
            "metrics": f"{LAYOUT.rung_eval_dir(r.run, top)}/metrics.json",
            "curve": f"{LAYOUT.rung_dir(r.run, top)}/curve.csv",
        }
        for r in RUNS
    ]
    return [e for e in index if os.path.exists(e["metrics"])] if PARTIAL else index


def rung_index(top=FULL, compute_matched=True):
    """One entry per (strategy, seed, budget): the ladder's rungs up to ``top`` (train.steps is the run
    itself; above it, the rungs until_stable added) and each mining arm's compute-matched rung, with
    their evaluation and curve files; only the evaluated ones when PARTIAL."""
    batch = CFG["train"]["batch_size"]
    budgets = LAYOUT.budgets_up_to(top)
    index = []
    for r in RUNS:
        rungs = LAYOUT.rungs(r) if LADDER else []
        matched = LAYOUT.compute_matched.get(r.strategy) if compute_matched else None
        entries = [(g.steps, "ladder") for g in rungs if g.steps in budgets] or [(FULL, "ladder")]
        entries += [(matched, "compute_matched")] if matched is not None else []
        for steps, kind in entries:
            index.append(
                {
                    "strategy": r.strategy,
                    "seed": r.seed,
                    "run": r.run,
                    "rung": steps,
                    "kind": kind,
                    "samples": steps * batch,
                    "metrics": f"{LAYOUT.rung_eval_dir(r.run, steps)}/metrics.json",
                    "curve": f"{LAYOUT.rung_dir(r.run, steps)}/curve.csv",
                }
            )
    return [e for e in index if os.path.exists(e["metrics"])] if PARTIAL else index
