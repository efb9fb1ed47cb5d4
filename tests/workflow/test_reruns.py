"""What reruns, and what does not, after a finished study (issue 14): dry runs over the finished
.test study, one per scenario. Each of these failed before runs were keyed by what shapes them."""
from __future__ import annotations

import os
import re

import pytest

from diffusion_lib.plan import files, resources
from diffusion_lib.settings.lr_schedule import decay_start
from tests.workflow_helpers import (copy_repo, copy_workdir, job_counts, layout_of, make_workdir, overlay, planned, smk,
                              study_dir)

pytestmark = pytest.mark.slow
STUDY_RULES = {"aggregate": 1, "plot_main": 1, "plot_ablation": 1, "plot_stability": 1, "report_md": 1, "all": 1}
# and where the study's training jobs change (a rung, a seed, a study), its jobs table too
PLAN_RULES = {**STUDY_RULES, "jobs_table": 1}


def output_of(proc):
    return proc.stdout + proc.stderr


def test_checkpoint_cadence_compile_threads_and_device_retrain_nothing(finished, tmp_path):
    workdir, _ = finished
    assert planned(workdir, "--configfile", overlay(tmp_path, "train: {checkpoint_every: 4}\n")) == {}
    assert planned(workdir, "--configfile", overlay(tmp_path, "train: {compile: true, cuda_graphs: true}\n")) == {}
    assert planned(workdir, "--configfile", overlay(tmp_path, "threads: 2\ndevice: auto\n")) == {}
    # nor does how a study is watched
    watched = "tracking: {tensorboard: false, mlflow_uri: 'http://127.0.0.1:9', mlflow_experiment: other}\n"
    assert planned(workdir, "--configfile", overlay(tmp_path, watched)) == {}


def test_a_new_test_set_reevaluates_and_never_retrains(finished, tmp_path):
    workdir, _ = finished
    counts = planned(workdir, "--configfile", overlay(tmp_path, "data: {test_size: 30}\n"))
    # every model is re-scored: 10 runs, their 10 half-budget rungs, and the compute-matched rungs of
    # random (8 steps) and adversarial (7 steps), 2 seeds each
    assert counts == {"heldout": 2, "reference": 1, "evaluate": 24, **STUDY_RULES}


def test_adding_a_rung_trains_only_its_trunk_piece_and_branch(finished, tmp_path):
    workdir, _ = finished
    trunk_before = {p: p.stat().st_mtime for p in (workdir / files.RUNS_DIR).glob("*/trunk/step-*.ckpt")}
    # a rung at 15 steps branches at 12, between the saved trunk states at 8 and 16: one new trunk
    # piece (8 -> 12) per run, its branch and its evaluation; the finished piece to 16 keeps its input
    counts = planned(workdir, "--configfile", overlay(tmp_path, "comparison: {ladder: {rungs: [0.5, 0.75, 1.0]}}\n"))
    assert counts == {"trunk": 10, "branch": 10, "evaluate": 10, **PLAN_RULES}
    # a rung below every saved state: its trunk piece starts from scratch, nothing else trains
    counts = planned(workdir, "--configfile", overlay(tmp_path, "comparison: {ladder: {rungs: [0.25, 0.5, 1.0]}}\n"))
    assert counts == {"trunk": 10, "branch": 10, "evaluate": 10, **PLAN_RULES}
    # removing a rung retrains and re-evaluates nothing: only the study's tables and report
    counts = planned(workdir, "--configfile", overlay(tmp_path, "comparison: {ladder: {rungs: [1.0]}}\n"))
    assert counts == PLAN_RULES
    assert {p: p.stat().st_mtime for p in (workdir / files.RUNS_DIR).glob("*/trunk/step-*.ckpt")} == trunk_before


def test_a_new_rung_runs_for_real_from_the_saved_trunk(finished, tmp_path):
    workdir = copy_workdir(finished[0], tmp_path / "rung")
    proc = smk(workdir, "--configfile", overlay(tmp_path, "comparison: {ladder: {rungs: [0.5, 0.75, 1.0]}}\n"),
               "--until", "branch")
    counts = job_counts(output_of(proc))
    assert counts == {"trunk": 10, "branch": 10}
    for run in (workdir / files.RUNS_DIR).iterdir():
        sidecar = run / "trunk" / "step-12.json"
        assert sidecar.exists() and sidecar.read_text().count("step-8.ckpt") == 1
        log = (run / "rung-15" / "train.log").read_text()
        assert "from results/runs" in log and "trunk/step-12.ckpt" in log


def test_a_new_reference_size_reruns_only_the_report(finished, tmp_path):
    workdir, _ = finished
    assert planned(workdir, "--configfile", overlay(tmp_path, "data: {reference_size: 300}\n")) == {
        "reference": 1, **STUDY_RULES}


def test_library_edits_rerun_what_they_affect_and_prose_or_shims_nothing(finished, tmp_path):
    workdir, _ = finished
    repo = copy_repo(tmp_path / "repo")
    snakefile = repo / "Snakefile"
    assert planned(workdir, snakefile=snakefile) == {}

    diffusion = repo / "diffusion_lib/ired/diffusion.py"
    original = diffusion.read_text()
    assert "CLAMP = 2.0" in original and '"""The model for n x n' in original
    # prose only (a docstring and a comment): nothing reruns
    diffusion.write_text(original.replace('"""The model for n x n', '"""The n x n model') + "# a note\n")
    assert planned(workdir, snakefile=snakefile) == {}
    # a statement every run executes: every run retrains and is re-evaluated; the data stands
    diffusion.write_text(original.replace("CLAMP = 2.0", "CLAMP = 2.5"))
    # (with the ladder: every trunk piece, branch and run, and all 24 models' evaluations)
    assert planned(workdir, snakefile=snakefile) == {"trunk": 24, "branch": 14, "train": 10, "evaluate": 24,
                                                     **STUDY_RULES}
    diffusion.write_text(original)

    # evaluation-only code: re-evaluates, never retrains
    job = repo / "diffusion_lib/jobs/evaluate.py"
    job_text = job.read_text()
    job.write_text(job_text.replace('status.get("flops_per_step", math.nan)', 'status.get("flops_per_step", -1.0)'))
    assert planned(workdir, snakefile=snakefile) == {"evaluate": 24, **STUDY_RULES}
    job.write_text(job_text)

    # code that only watches a job (heartbeat, TensorBoard, MLflow): nothing
    for name in ("train/progress", "watch/job_tracking", "watch/tensorboard", "watch/mlflow_client",
                 "watch/mlflow_runs"):
        observer = repo / f"diffusion_lib/{name}.py"
        observer.write_text(observer.read_text() + f"\nUNUSED_{name.split('/')[1].upper()} = 1\n")
    assert planned(workdir, snakefile=snakefile) == {}

    # report code: only the study's own rules
    figures = repo / "diffusion_lib/report/figures.py"
    figures_text = figures.read_text()
    figures.write_text(figures_text + "\nUNUSED_CONSTANT = 1\n")
    assert planned(workdir, snakefile=snakefile) == STUDY_RULES
    figures.write_text(figures_text)

    # a comment in a rule script, and every script touched (as a git checkout does): nothing
    shim = repo / "workflow/scripts/train.py"
    shim.write_text(shim.read_text() + "# reviewed\n")
    for script in (repo / "workflow/scripts").glob("*.py"):
        os.utime(script)
    assert planned(workdir, snakefile=snakefile) == {}


def test_studies_never_overwrite_each_other(finished, tmp_path):
    workdir = copy_workdir(finished[0], tmp_path / "studies")
    report_a = study_dir(workdir) / "report.md"
    stamp = report_a.stat().st_mtime_ns
    study_b = overlay(tmp_path, "study: other\nseeds: [0]\nsweeps: []\ntrain: {steps: 30}\n")
    counts = job_counts(output_of(smk(workdir, "--configfile", study_b)))
    # baseline, random, adversarial, seed 0: each run, its smaller rungs and their evaluations
    assert counts["train"] == 3 and counts["evaluate"] == counts["train"] + counts["branch"] >= 6
    assert (workdir / files.StudyFiles("other").report_md).stat().st_size > 0
    assert report_a.stat().st_mtime_ns == stamp
    # A again, then B again: nothing to train, nothing to redo
    assert planned(workdir) == {}
    assert planned(workdir, "--configfile", study_b) == {}


def test_an_ablation_overlay_reuses_the_study_runs(finished, tmp_path):
    workdir, _ = finished
    ablation = overlay(tmp_path, "study: ablation\nsweeps:\n  - base: adversarial\n    grid: {opt_steps: [1, 2, 3, 4]}\n")
    # opt_steps 1 and 3 are the finished study's runs, 2 is `adversarial`: only opt_steps-4 trains
    assert planned(workdir, "--configfile", ablation) == {"trunk": 4, "branch": 2, "train": 2, "evaluate": 4,
                                                          **PLAN_RULES}


def test_integer_lists_and_booleans_from_the_command_line(finished):
    workdir, _ = finished
    counts = planned(workdir, "--config", "seeds=[0,1,2]")
    assert counts == {"trunk": 12, "branch": 7, "train": 5, "evaluate": 12, **PLAN_RULES}
    assert planned(workdir, "--config", "seeds=[0, 1]", "partial=true") == {}


def _jobs(dry_run: str) -> list[dict[str, str]]:
    """(rule, wildcards, resources) of every job in a dry run's output."""
    jobs = []
    for block in re.split(r"\n(?=\[\w{3} \w{3} )", dry_run):
        m = re.search(r"^(local)?rule (\w+):", block, flags=re.M)
        if not m:
            continue
        res = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        wc = re.search(r"^\s+wildcards: (.*)$", block, flags=re.M)
        jobs.append({"rule": m.group(2),
                     "wildcards": dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {},
                     "resources": dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {}})
    return jobs


def test_rules_declare_runtime_memory_and_gpu(tmp_path):
    """Runtime from steps and measured steps/s, memory and GPU, for every training and evaluation job
    (that the light rules run on the submit host, never through SLURM, tests/workflow/test_slurm.py shows)."""
    workdir = make_workdir(tmp_path)
    jobs = _jobs(output_of(smk(workdir, "-n")))
    layout = layout_of(workdir)
    cfg = layout.cfg
    assert {j["rule"] for j in jobs} == {"heldout", "reference", "trunk", "branch", "train", "evaluate", "aggregate",
                                         "plot_main", "plot_ablation", "plot_stability", "report_md", "jobs_table",
                                         "all"}
    full, f = cfg["train"]["steps"], cfg["train"]["lr_schedule"]["decay_fraction"]
    for job in jobs:
        if job["rule"] in ("trunk", "branch", "train"):
            wc = job["wildcards"]
            mode = layout.run_of[wc["run"]].mode
            # each asks for its share of the steps: a trunk piece up to its step, a branch its decay
            steps = int(wc.get("steps", full))
            share = int(wc["step"]) / full if job["rule"] == "trunk" else (steps - decay_start(steps, f)) / full
            assert int(job["resources"]["runtime"]) == resources.train_runtime(cfg, mode, 1, share=share)
            assert int(job["resources"]["mem_mb"]) == cfg["resources"]["train_mem_mb"]
            assert job["resources"]["gpu"] == "0"  # device: cpu
        if job["rule"] == "evaluate":
            assert int(job["resources"]["runtime"]) == resources.evaluate_runtime(cfg, 1)
            assert int(job["resources"]["mem_mb"]) == cfg["resources"]["evaluate_mem_mb"]


def test_an_old_results_layout_is_named_and_left_alone(tmp_path):
    workdir = make_workdir(tmp_path)
    old = workdir / files.OLD_LAYOUT[0] / "baseline/seed0"
    old.mkdir(parents=True)
    (old / "model.pt").write_bytes(b"old")
    out = output_of(smk(workdir, "-n"))
    assert f"{', '.join(files.OLD_LAYOUT)} are the layout before" in out
    assert (old / "model.pt").read_bytes() == b"old"
