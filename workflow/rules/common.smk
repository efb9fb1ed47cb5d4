# Shared helpers: config validation (fails before any job is scheduled), paths, wildcard constraints.
import os
import re
import shutil
import sys

sys.path.insert(0, workflow.basedir)  # rule scripts do the same through workflow/scripts/_repo.py

from diffusion_lib.config import ConfigError, load_config

# --config partial=true arrives as a string; accept exactly true/false for this flag
if isinstance(config.get("partial"), str) and config["partial"].lower() in ("true", "false"):
    config["partial"] = config["partial"].lower() == "true"

try:
    CFG = load_config(config)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

STRATEGIES = list(CFG["strategies"])
SEEDS_OF = CFG["strategy_seeds"]  # a strategy's own `seeds`, else the top-level ones
RUNS = [(s, k) for s in STRATEGIES for k in SEEDS_OF[s]]
SPLITS = ["val_id", "val_ood", "test_id", "test_ood"]
TEST_SETS = ["test_id", "test_ood"]
SWEPT_PARAMETERS = sorted({p for pt in CFG["sweep_points"].values() for p in pt if p != "base"})
# partial=true (e.g. --config partial=true after a --keep-going run) reports only the runs that exist
PARTIAL = CFG["partial"]

DATA = "results/data"
TRAIN = "results/train/{strategy}/seed{seed}"
EVAL = "results/eval/{strategy}/seed{seed}"
RESUME = "results/resume/{strategy}/seed{seed}.ckpt"  # deliberately not a declared output
REPORT = "results/report"
TABLE_FILES = {t: f"{REPORT}/tables/{t}.csv" for t in
               ("runs", "strategies", "endpoints", "contrasts", "landscape", "test_time", "curves", "convergence",
                "convergence_runs", "compute_matched", "diagnostics", "cost", "ablation")}
FIG_EXT = CFG["report"]["format"]
FIGURES = ("forest", "mse", "curves", "compute", "diagnostics", "landscape", "test_time")
FIGURE_FILES = {f: f"{REPORT}/figures/{f}.{FIG_EXT}" for f in FIGURES}
# tables the report reads (the rest are for users and figures)
REPORT_TABLES = ("strategies", "contrasts", "test_time", "convergence", "compute_matched", "diagnostics", "cost",
                 "landscape", "ablation")
ABLATION_FIGURES = {f"ablation_{p}": f"{REPORT}/figures/ablation_{p}.{FIG_EXT}" for p in SWEPT_PARAMETERS}
REPORT_TARGETS = [f"{REPORT}/report.md", f"{REPORT}/report.html", *FIGURE_FILES.values(),
                  *ABLATION_FIGURES.values()]


def _uses_gpu():
    device = CFG["device"]
    return device.startswith("cuda") or (device == "auto" and shutil.which("nvidia-smi") is not None)


GPU = 1 if _uses_gpu() else 0


def train_priority(wildcards):
    """Longest jobs first (adversarial > random > none): with more jobs than cores, starting the
    expensive runs early keeps short ones for the tail (measured: about a minute off the pilot)."""
    return {"adversarial": 2, "random": 1}.get(CFG["strategies"][wildcards.strategy]["mode"], 0)


wildcard_constraints:
    strategy="|".join(re.escape(s) for s in STRATEGIES),
    seed=r"\d+",
    split="|".join(SPLITS),
    parameter="|".join(SWEPT_PARAMETERS) or "NO_SWEEPS",


def run_files(kind):
    """Per-run files of one kind for every (strategy, seed), or only existing ones when PARTIAL."""
    pattern = {"metrics": f"{EVAL}/metrics.json", "curve": f"{TRAIN}/curve.csv"}[kind]
    files = [pattern.format(strategy=s, seed=k) for s, k in RUNS]
    if PARTIAL:
        files = [f for f, (s, k) in zip(files, RUNS)
                 if os.path.exists(f"{EVAL}/metrics.json".format(strategy=s, seed=k))]
    return files
