"""End-to-end tests of the Snakemake workflow on the tiny .test configuration."""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pandas as pd
import pytest
import torch
import yaml

from diffusion_lib.plan.config import load_config
from tests.workflow_helpers import (REPORT_FILES, ROOT, SNAKEMAKE, budgets_of, copy_workdir, job_counts, layout_of,
                                    make_workdir, run_dir, smk, study_dir)
from diffusion_lib.plan import files

pytestmark = pytest.mark.slow

def output_of(proc):
    return proc.stdout + proc.stderr


def test_dry_run_of_default_config_plans_every_job(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((ROOT / "config" / "config.yaml").read_text())
    counts = job_counts(output_of(smk(tmp_path, "-n")))
    seeds = load_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))["strategy_seeds"]
    n = sum(len(k) for k in seeds.values())  # each strategy's own seeds
    assert (len(seeds["baseline"]), len(seeds["random"]), len(seeds["adversarial"])) == (3, 3, 8)
    # the ladder: rungs 4,350 / 5,800 (branch points 3,480, 4,640) for every run, and each mining arm's
    # compute-matched rung (random 2,900, branch point 2,320; adversarial 2,030, branch point 1,624)
    assert counts == {"heldout": 3, "reference": 1, "trunk": 3 * 2 + 3 * 3 + 8 * 3, "branch": 3 * 1 + 3 * 2 + 8 * 2,
                      "train": n, "evaluate": 3 * 2 + 3 * 3 + 8 * 3, "aggregate": 1, "plot_main": 1,
                      "report_md": 1, "jobs_table": 1, "all": 1}
    counts = job_counts(output_of(smk(tmp_path, "-n", "--configfile", str(ROOT / "config" / "ablation.yaml"))))
    # the overlay's top-level seeds [0, 1] apply to the baseline and the new grid points (grid points
    # equal to an existing strategy reuse its runs); random and adversarial keep their own seeds
    layout, budgets = (f(tmp_path, ROOT / "config" / "ablation.yaml") for f in (layout_of, budgets_of))
    runs = list({r.run: r for r in layout.runs}.values())
    assert counts["train"] == len(runs) == 41 and counts["plot_ablation"] == 5
    assert counts["trunk"] == sum(len(budgets.branch_points(r)) for r in runs)
    assert counts["evaluate"] == sum(len(budgets.rungs(r)) for r in runs) == counts["branch"] + counts["train"]
    # the stability study: stage 1 alone (five groups x seeds 100-104), then with stage 2's lr grid (stage 1's
    # runs reused: 60 more), each with its figure
    edge, grid = (str(ROOT / "config" / f"stability-{s}.yaml") for s in ("edge", "range"))
    counts = job_counts(output_of(smk(tmp_path, "-n", "--configfile", edge)))
    assert counts["train"] == counts["trunk"] == counts["evaluate"] == 25 and counts["plot_stability"] == 1
    counts = job_counts(output_of(smk(tmp_path, "-n", "--configfile", edge, grid)))
    assert counts["train"] == 85 and counts["plot_stability"] == 1


def _tree(folder):
    """Every file under ``folder`` but Snakemake's own records (.snakemake/), with its size and mtime."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file() and ".snakemake" not in p.relative_to(folder).parts}


def test_parsing_the_workflow_writes_nothing(tmp_path):
    """A dry run plans the .test study without writing a file (the jobs table is a job's output). The
    FLOP profiles that place the compute-matched rungs are a cache, made once per machine: warmed
    first, from another folder."""
    warm = make_workdir(tmp_path / "warm")
    smk(warm, "-n")
    work = make_workdir(tmp_path / "work")
    shutil.copytree(warm / files.FLOPS_CACHE, work / files.FLOPS_CACHE)
    before = _tree(work)
    assert "jobs_table" in job_counts(output_of(smk(work, "-n")))
    assert _tree(work) == before


def test_malformed_config_fails_before_any_job(tmp_path):
    make_workdir(tmp_path, {"train": {"batch_size": 0}})
    proc = smk(tmp_path, check=False)
    assert proc.returncode != 0
    assert "train.batch_size" in output_of(proc)
    assert not (tmp_path / files.RESULTS).exists()


def test_lint_is_clean(tmp_path):
    make_workdir(tmp_path)
    proc = smk(tmp_path, "--lint", check=False)
    assert proc.returncode == 0, output_of(proc)
    assert "Lints for" not in output_of(proc), output_of(proc)


def test_end_to_end_produces_every_report_file(finished):
    workdir, _ = finished
    study = study_dir(workdir)
    assert study == workdir / files.StudyFiles("test").dir
    for name in REPORT_FILES:
        path = study / name
        assert path.exists() and path.stat().st_size > 0, name
    runs = pd.read_csv(study / "tables/runs.csv")
    assert set(runs["strategy"]) == {"baseline", "random", "adversarial", "adversarial__opt_steps-1",
                                     "adversarial__opt_steps-3"}
    assert set(runs["seed"]) == {0, 1} and (runs["status"] == "completed").all()
    assert set(runs["inner_steps"]) == {0, 1, 2, 5}
    assert runs["run"].str.fullmatch(r"(none|random|adversarial)-seed[01]-[0-9a-f]{12}").all()
    verdict = json.loads((study / "tables/verdict.json").read_text())
    # 20 steps of training decide nothing, and the ladder shows it: no rung has left burn-in (skill < 5%)
    assert verdict["outcome"] == "not decided" and verdict["scenario"] is None and verdict["status"] is None
    assert "at 320 training samples (20 steps × batch 16" in verdict["sentence"]
    assert "the full-budget rung (20 steps)" in verdict["sentence"] and "uninformative" in verdict["sentence"]
    trajectory = " ".join(pd.read_csv(study / "tables/gap_stability.csv")["trajectory"])
    assert "at 160 (uninformative) →" in trajectory and "at 320 (uninformative) samples" in trajectory
    assert verdict["plateau_until"] == 16  # the plateau check read the trunk, up to the full budget's branch point
    report = (study / "report.md").read_text()
    assert report.splitlines()[2].startswith(f"**Verdict: {verdict['outcome']}.**")
    # numbers for people (issue 42): no e-notation in the report, its page or the LaTeX tables
    page = re.sub(r'src="data:[^"]*"', "", (study / "report.html").read_text())
    for text in (report, page, *(p.read_text() for p in (study / "tables").glob("*.tex"))):
        assert not re.findall(r"\d\.?\d*[eE][-+]\d+", text), re.findall(r".{30}\d[eE][-+]\d+.{10}", text)[:3]
    assert all(f"figures/{f}.png" in report for f in ("forest", "ladder", "mse", "stability"))
    # the stability study's tests (.test declares them): the primary pair, the control against both
    assert "## Training stability (the stability study)" in report and "`random`: " in report
    tests = pd.read_csv(study / "tables/stability_tests.csv")
    assert tests[["role", "a", "b"]].values.tolist() == [["primary", "baseline", "adversarial"],
                                                         ["secondary", "random", "adversarial"],
                                                         ["secondary", "random", "baseline"]]
    assert len(pd.read_csv(study / "tables/stability_runs.csv")) == 2 * 5  # every run of the study, once
    ladder = pd.read_csv(study / "tables/ladder_contrasts.csv")
    assert sorted(set(ladder["rung"])) == [10, 20] and set(ladder["strategy"]) >= {"random", "adversarial"}
    run = run_dir(workdir, "adversarial", 1)
    evaluation = next(run.glob("eval-*"))
    for log in (run / "train.log", evaluation / "evaluate.log", *(workdir / files.SPLIT_LOG).parent.glob("test_id-*.log")):
        assert log.stat().st_size > 0, log
    for bench in (run / "train.benchmark.tsv", evaluation / "evaluate.benchmark.tsv"):
        table = pd.read_csv(bench, sep="\t")
        assert {"s", "max_rss"} <= set(table.columns) and table["s"].iloc[0] > 0, bench
    # resume checkpoints are removed after completion (runs, rungs and trunks); trunk states are kept
    assert not [*(workdir / files.RUNS_DIR).glob("*/resume.ckpt*"), *(workdir / files.RUNS_DIR).glob("*/*/resume.ckpt*")]
    for state in (run / "trunk" / "step-8.ckpt", run / "trunk" / "step-16.ckpt", run / "rung-10" / "model.pt"):
        assert state.stat().st_size > 0, state


def test_rerun_after_completion_does_nothing(finished):
    workdir, _ = finished
    assert "Nothing to be done" in output_of(smk(workdir, "-n"))


def test_adding_a_seed_schedules_only_its_jobs(finished, tmp_path):
    workdir, _ = finished
    extra = tmp_path / "seeds.yaml"
    extra.write_text("seeds: [0, 1, 2]\n")
    counts = job_counts(output_of(smk(workdir, "-n", "--configfile", str(extra))))
    # seed 2 of the 5 strategies: each run's trunk pieces (8 and 16; 6 too for the compute-matched
    # rungs of random and adversarial), its smaller rungs, its full budget and their evaluations
    assert counts["train"] == 5 and counts["trunk"] == 12 and counts["branch"] == 7 and counts["evaluate"] == 12
    assert "heldout" not in counts and counts["aggregate"] == 1


def test_adding_a_grid_value_schedules_only_its_runs(finished, tmp_path):
    workdir, _ = finished
    extra = tmp_path / "more.yaml"
    extra.write_text("sweeps:\n  - base: adversarial\n    grid: {opt_steps: [3, 1, 4]}\n")
    counts = job_counts(output_of(smk(workdir, "-n", "--configfile", str(extra))))
    # only opt_steps-4, both seeds: trunk states at 8 and 16, the 10-step rung, the run, 2 evaluations each
    assert counts["train"] == 2 and counts["trunk"] == 4 and counts["branch"] == 2 and counts["evaluate"] == 4


def test_plot_option_change_reruns_only_plotting(finished, tmp_path):
    workdir, _ = finished
    extra = tmp_path / "plot.yaml"
    extra.write_text("report: {dpi: 61}\n")
    counts = job_counts(output_of(smk(workdir, "-n", "--configfile", str(extra))))
    assert set(counts) == {"plot_main", "plot_ablation", "plot_stability", "report_md", "all"}


def test_figures_target_redraws_from_cached_tables(finished):
    workdir, _ = finished
    fig = study_dir(workdir) / "figures/mse.png"
    fig.unlink()
    proc = smk(workdir, "figures")
    assert job_counts(output_of(proc)) == {"plot_main": 1, "figures": 1}
    assert fig.exists()
    # README's command redraws every figure although all are up to date, and trains nothing
    before = fig.stat().st_mtime_ns
    proc = smk(workdir, "figures", "--forcerun", "plot_main", "plot_ablation", "plot_stability")
    assert job_counts(output_of(proc)) == {"plot_main": 1, "plot_ablation": 1, "plot_stability": 1, "figures": 1}
    assert fig.stat().st_mtime_ns > before


def test_vector_formats_are_drawn_next_to_the_pngs(finished, tmp_path):
    """report.format [png, pdf]: the figures target draws a PDF next to every PNG (ablations too),
    from the cached tables, and nothing trains or is evaluated again."""
    workdir = copy_workdir(finished[0], tmp_path / "pdf")
    extra = tmp_path / "pdf.yaml"
    extra.write_text("report: {format: [png, pdf]}\n")
    proc = smk(workdir, "figures", "--configfile", str(extra))
    assert job_counts(output_of(proc)) == {"plot_main": 1, "plot_ablation": 1, "plot_stability": 1, "figures": 1}
    figures = study_dir(workdir) / "figures"
    pngs = sorted(p.stem for p in figures.glob("*.png"))
    assert len(pngs) == 10 and sorted(p.stem for p in figures.glob("*.pdf")) == pngs
    assert all(p.read_bytes()[:5] == b"%PDF-" for p in figures.glob("*.pdf"))


def test_html_report_shows_the_verdict_and_key_tables_on_its_own_page(finished):
    """Snakemake's report embeds report.html as a data: URI shown in an iframe; decode that page and
    check it leads with the verdict and carries the key tables and the forest plot inline."""
    workdir, _ = finished
    smk(workdir, "--report", "report.html")
    html = (workdir / "report.html").read_text(errors="ignore")
    verdict = json.loads((study_dir(workdir) / "tables/verdict.json").read_text())
    pages = [base64.b64decode(m).decode("utf-8", "ignore")
             for m in re.findall(r"data:text/html;charset=[^;]+;filename=[^;]+;base64,([A-Za-z0-9+/=]+)", html)]
    page = next(p for p in pages if "Verdict:" in p)
    assert page.index(f"Verdict: {verdict['outcome']}.") < page.index("<table>")
    assert page.count("<table>") >= 5 and "data:image/png;base64," in page
    for heading in ("Beside the verdict", "Secondary endpoints", "Convergence", "Diagnostics"):
        assert heading in page


def test_failed_job_leaves_others_and_partial_report_lists_it(finished, tmp_path):
    workdir = copy_workdir(finished[0], tmp_path / "partial")
    model = run_dir(workdir, "random", 1) / "model.pt"
    model.write_bytes(b"not a checkpoint")
    proc = smk(workdir, "--keep-going", check=False)
    assert proc.returncode != 0 and f"{model.parent.name}/model.pt is unreadable" in output_of(proc)
    proc = smk(workdir, "--config", "partial=true")
    verdict = json.loads((study_dir(workdir) / "tables/verdict.json").read_text())
    assert verdict["missing"] == ["random/seed1"]
    assert "random/seed1" in (study_dir(workdir) / "report.md").read_text()


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_sigkill_then_rerun_resumes_bitwise_identical(tmp_path):
    # the ladder's first trunk piece is killed after two checkpoints; the rerun resumes it, then
    # trains the rest of the trunk and the decay, and ends bitwise equal to an uninterrupted run
    cfg = {"seeds": [0], "strategies": {"baseline": {"mode": "none"}, "adversarial": {"mode": "adversarial"}},
           "sweeps": [], "train": {"steps": 400, "checkpoint_every": 40, "log_every": 20, "eval_every": 40}}
    straight = make_workdir(tmp_path / "straight", cfg)
    run = run_dir(straight, "adversarial", 0).relative_to(straight)
    target = str(run / "model.pt")
    smk(straight, target)
    killed = make_workdir(tmp_path / "killed", cfg)
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(killed), "--cores", "2", target]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    resume = killed / run / "trunk" / "resume.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and not resume.with_name(resume.name + ".prev").exists():
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / target).exists()
    smk(killed, "--unlock")  # a hard kill leaves Snakemake's directory lock behind
    smk(killed, target)
    # the piece killed is the first of the chain (to the compute-matched rung's branch point)
    logs = "".join(p.read_text() for p in sorted((killed / run / "trunk").glob("step-*.log")))
    assert re.search(r"resumed from \S*trunk/resume.ckpt at step [1-9]\d*", logs), logs[-2000:]
    a, b = _state(straight / target), _state(killed / target)
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs"
    ca = pd.read_csv(straight / run / "curve.csv")
    cb = pd.read_csv(killed / run / "curve.csv")
    assert ca[["step", "loss", "loss_mse", "loss_energy", "val_mse_ema"]].equals(
        cb[["step", "loss", "loss_mse", "loss_energy", "val_mse_ema"]])


def test_divergence_is_reported_as_unstable(tmp_path):
    cfg = {"seeds": [0], "sweeps": [], "train": {"lr": 1.0e6, "grad_clip": 1.0e12, "max_loss": 50.0, "steps": 60}}
    workdir = make_workdir(tmp_path, cfg)
    smk(workdir)
    runs = pd.read_csv(study_dir(workdir) / "tables/runs.csv")
    assert (runs.drop_duplicates("strategy")["status"] == "diverged").any()
    verdict = json.loads((study_dir(workdir) / "tables/verdict.json").read_text())
    assert verdict["outcome"] == "training unstable" and verdict["scenario"] == "training instability"
    status = json.loads((run_dir(workdir, "random", 0) / "status.json").read_text())
    assert status["status"] == "diverged" and status["diverged_at"] is not None
    assert "training unstable" in (study_dir(workdir) / "report.md").read_text()


def test_until_stable_grows_the_ladder_in_one_invocation_then_nothing_is_left(tmp_path):
    # a tiny study never has a flat trend on informative rungs: every look asks for more, so the
    # ladder grows once (20 → 40 steps, a trunk of 32 within half of the 80 declared stable) and stops
    # at max_steps
    cfg = {"sweeps": [], "strategies": {"baseline": {"mode": "none"}, "adversarial": {"mode": "adversarial"}},
           "stability_margin": {"seen_stable": {"none": 80, "random": 80, "adversarial": 80}},
           "comparison": {"ladder": {"rungs": [0.5, 1.0], "compute_matched": False,
                                     "until_stable": {"max_steps": 40}}}}
    workdir = make_workdir(tmp_path, cfg)
    assert "no look yet" in output_of(smk(workdir, "-n"))
    smk(workdir)
    looks = (workdir / files.StudyFiles("test").look(0)).parent
    first, second = (json.loads((looks / f"look-{b}.json").read_text()) for b in (20, 40))
    assert first["grow"] and first["next"] == 40 and not second["grow"] and second["stopped"] == "maximum budget reached"
    assert not (looks / "look-80.json").exists()
    run = run_dir(workdir, "adversarial", 0)
    # the trunk continued from its last saved state (16) to the new rung's branch point (32)
    assert json.loads((run / "trunk/step-32.json").read_text())["from"].endswith("trunk/step-16.ckpt")
    assert (run / "rung-40/model.pt").exists() and (run / "model.pt").exists()
    verdict = json.loads((study_dir(workdir) / "tables/verdict.json").read_text())
    assert verdict["budget"]["steps"] == 40 and verdict["growth"]["rungs_looked_at"] == 2
    assert "40 steps × batch 16" in verdict["sentence"]
    assert "2 looks at ladder tops 20, 40 steps" in (study_dir(workdir) / "report.md").read_text()
    again = smk(workdir, "-n")
    assert "Nothing to be done" in output_of(again), output_of(again)[-3000:]
    assert "look 1 at 20 steps" in output_of(again) and "added the rung of 40 steps" in output_of(again)
