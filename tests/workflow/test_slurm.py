"""The .test workflow end to end through a real single-node SLURM cluster (scripts/slurm-local-up.sh).

Skipped when no cluster answers, unless IRED_REQUIRE_SLURM=1 (as in CI), which turns that into a failure.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time

import pandas as pd
import pytest
import yaml

from tests.workflow_helpers import REPORT_FILES
from tests.workflow_helpers import ROOT, SNAKEMAKE, make_workdir, set_strategies, study_dir
from diffusion_lib.plan import files

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
TIMING_COLUMNS = {"train_seconds", "seconds_per_step", "cost_seconds_per_step", "infer_ms_per_problem"}


def _cluster_up() -> bool:
    if not shutil.which("sbatch"):
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    return ping.returncode == 0 and "UP" in ping.stdout


@pytest.fixture(scope="module")
def cluster():
    if not _cluster_up():
        if os.environ.get("IRED_REQUIRE_SLURM") == "1":
            pytest.fail("IRED_REQUIRE_SLURM=1 but no SLURM controller answers (run scripts/slurm-local-up.sh as root)")
        pytest.skip("no SLURM cluster (scripts/slurm-local-up.sh starts one, as root)")


def _jobcomp_lines() -> list[str]:
    path = os.path.join(os.environ.get("IRED_SLURM_DIR", "/tmp/ired-slurm"), "jobcomp.log")
    return open(path).read().splitlines() if os.path.exists(path) else []


def test_workflow_runs_through_slurm_like_locally(cluster, finished, tmp_path):
    """The finished local .test study loses two runs (seed 1 of the baseline and of the adversarial
    arm): every job that remakes them (trunk pieces, branches, the full budget, evaluations) goes
    through SLURM, asking for its rule's runtime, and the study's tables equal the local ones."""
    from tests.workflow_helpers import budgets_of, copy_workdir, lose_runs

    local, _ = finished
    workdir = copy_workdir(local, tmp_path / "slurm")
    budgets, lost = budgets_of(workdir), lose_runs(workdir)
    trunks = sum(len(budgets.branch_points(r)) for r in lost)
    models = sum(len(budgets.rungs(r)) for r in lost)  # each rung's branch, the full budget's job
    seen: set[str] = set()
    stop = threading.Event()

    def watch():  # squeue evidence that jobs really ran through SLURM
        while not stop.is_set():
            out = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True).stdout
            seen.update(line for line in out.splitlines() if line.strip())
            time.sleep(1)

    before = len(_jobcomp_lines())
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.time()
    cmd = ["timeout", "-s", "INT", "-k", "10", "1200", *SNAKEMAKE, "-s", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--workflow-profile", str(ROOT / "profiles" / "slurm-local")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    stop.set()
    watcher.join()
    elapsed = time.time() - start
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    print(f"\nSLURM end-to-end: {elapsed:.0f} s; squeue saw {len(seen)} job states, e.g. {sorted(seen)[:3]}")

    completed = [l for l in _jobcomp_lines()[before:] if "JobState=COMPLETED" in l]
    submitted = proc.stdout.count("submitted with SLURM jobid") + proc.stderr.count("submitted with SLURM jobid")
    # only training and evaluation go through SLURM (data, aggregation, figures and the report are
    # localrules on the submit host): per lost run, its trunk pieces, one job per budget, and each
    # budget's evaluation (the .test config: 4 + 6 training jobs, 2 + 3 evaluations)
    assert trunks + models == 10 and submitted == trunks + 2 * models and len(completed) >= submitted, (
        submitted, len(completed))
    # each job asked for the runtime its rule declares (.test: training 3 min, evaluate 4 min), not a profile's
    limits = sorted(re.search(r"TimeLimit=(\S+)", l).group(1) for l in completed)
    assert limits == ["3"] * (trunks + models) + ["4"] * models, limits
    assert seen, "squeue never showed a job"
    assert any((workdir / files.RESULTS / "slurm-logs").rglob("*.log"))

    for name in REPORT_FILES:
        assert (study_dir(workdir) / name).stat().st_size > 0, name
    a = pd.read_csv(study_dir(local) / "tables/runs.csv")
    b = pd.read_csv(study_dir(workdir) / "tables/runs.csv")
    assert list(a.columns) == list(b.columns)
    keep = [c for c in a.columns if c not in TIMING_COLUMNS]
    key = ["strategy", "seed", "set", "inner_steps"]
    pd.testing.assert_frame_equal(a[keep].sort_values(key).reset_index(drop=True),
                                  b[keep].sort_values(key).reset_index(drop=True))  # same machine, same numbers


def test_pack_jobs_run_through_slurm(cluster, tmp_path):
    """Pack jobs through SLURM: a finished packed study gains seed 3 while its seed-2 packs are forced
    to retrain; every pack job's process parses the Snakefile again and finds its rule (the plan
    file; the deterministic case is tests/workflow/test_pack_workflow.py), and the new seed trains alone."""
    import json

    from tests.workflow_helpers import job_counts, smk

    # two arms, one rung (a trunk piece to 16 steps and the full budget's branch): what packs need
    workdir = make_workdir(tmp_path / "packs", {"train": {"pack": 2}, "seeds": [0, 1, 2], "sweeps": [],
                                                "comparison": {"ladder": {"rungs": [1.0], "compute_matched": False}}})
    set_strategies(workdir, {"baseline": {"mode": "none"}, "adversarial": {"mode": "adversarial", "opt_steps": 2}})
    local = smk(workdir)
    seed2 = sorted(r for r in job_counts(local.stdout + local.stderr) if "_seeds_2_" in r)
    # per arm, seed 2's pack jobs: its trunk piece and its full budget
    assert len(seed2) == 4, seed2
    cmd = ["timeout", "-s", "INT", "-k", "10", "1200", *SNAKEMAKE, "-s", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--workflow-profile", str(ROOT / "profiles" / "slurm-local"),
           "--config", "seeds=[0,1,2,3]", "--forcerun", *seed2]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert out.count("submitted with SLURM jobid") == 12  # 4 + 4 training jobs, 2 + 2 evaluations
    for rule in seed2:
        assert f"rule {rule}:" in out
    statuses = [json.loads(p.read_text()) for p in (workdir / files.RUNS_DIR).glob("*-seed[23]-*/status.json")]
    assert sorted(s["seed"] for s in statuses) == [2, 2, 3, 3] and all(s["status"] == "completed" for s in statuses)


def test_until_stable_grows_the_ladder_through_slurm(cluster, tmp_path):
    """comparison.ladder.until_stable on the SLURM profile, turned on over a study finished locally:
    the look (a checkpoint) runs, the DAG is re-evaluated in the same invocation, the added rung's
    trunk piece, branch and evaluations are submitted to SLURM, and nothing is left afterwards."""
    import json

    from tests.workflow_helpers import smk

    workdir = make_workdir(tmp_path / "grow", {"sweeps": [], "comparison": {"ladder": {"rungs": [0.5, 1.0],
                                                                                          "compute_matched": False}}})
    set_strategies(workdir, {"baseline": {"mode": "none"}, "adversarial": {"mode": "adversarial"}})
    smk(workdir)  # the declared rungs, locally
    path = workdir / "config/config.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["comparison"]["ladder"]["until_stable"] = {"max_steps": 40}
    cfg["stability_margin"] = {"seen_stable": {"none": 80, "random": 80, "adversarial": 80}}  # trunk 32: within half
    path.write_text(yaml.safe_dump(cfg))
    cmd = ["timeout", "-s", "INT", "-k", "10", "1200", *SNAKEMAKE, "-s", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--workflow-profile", str(ROOT / "profiles" / "slurm-local")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    looks = (workdir / files.StudyFiles("test").look(0)).parent
    first, second = (json.loads((looks / f"look-{b}.json").read_text()) for b in (20, 40))
    assert first["grow"] and first["next"] == 40 and second["stopped"] == "maximum budget reached"
    # only the grown rung went through SLURM: per run (2 strategies x 2 seeds) its trunk piece to 32,
    # its branch to 40 and its evaluation; nothing finished was retrained
    submitted = re.findall(r"submitted with SLURM jobid \d+ \(log: \S*/rule_(\w+)/\S+?_(\d+|rung-\d+)[_/]", out)
    assert sorted(submitted) == sorted([("trunk", "32")] * 4 + [("branch", "40")] * 4
                                       + [("evaluate", "rung-40")] * 4), submitted
    assert out.count("submitted with SLURM jobid") == 12
    verdict = json.loads((study_dir(workdir) / "tables/verdict.json").read_text())
    assert verdict["budget"]["steps"] == 40 and verdict["growth"]["rungs_looked_at"] == 2
    again = smk(workdir, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
