"""Seed packs in the workflow (train.pack): a packed .test study gives the unpacked study's test
MSEs, adding seeds trains only the new ones, and the pack size never retrains a finished run."""
from __future__ import annotations

import json
import re

import pytest

from tests.workflow_helpers import copy_workdir, job_counts, make_workdir, overlay, planned, smk
from diffusion_lib.plan import files

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    workdir = make_workdir(tmp_path_factory.mktemp("packed"), {"train": {"pack": 2}})
    return workdir, smk(workdir)


def _full_budget(counts: dict[str, int]) -> dict[str, int]:
    """The pack rules that train runs to the full budget (not a trunk piece or a smaller rung)."""
    return {r: n for r, n in counts.items() if r.startswith("train") and not re.search(r"_(trunk|rung)\d+$", r)}


def _test_mses(metrics: dict) -> dict[str, float]:
    return {f"{split}/{inner}": float(v["mse"]) for split, by_inner in metrics["sets"].items()
            for inner, v in by_inner.items()}


def test_a_packed_study_gives_the_unpacked_test_mses(packed, finished):
    counts = job_counts(packed[1].stdout + packed[1].stderr)
    trains = _full_budget(counts)
    # 10 runs in 5 packs of 2 (baseline, random, and the three adversarial opt_steps), no single-run jobs
    assert len(trains) == 5 and set(trains.values()) == {1} and all("_seeds_0_1_" in r for r in trains)
    assert not {"train", "trunk", "branch"} & set(counts)
    # the ladder's pieces are packed too: trunk states at 8 and 16 for every pack (and the
    # compute-matched branch points 6 of adversarial, 6 of random), the half-budget rung of each
    assert sum(1 for r in counts if re.search(r"_trunk(8|16)$", r)) == 10
    assert sum(1 for r in counts if r.endswith("_rung10")) == 5
    solo_runs = sorted((finished[0] / files.RUNS_DIR).iterdir())
    assert len(solo_runs) == 10
    compared = 0
    for solo in solo_runs:
        pack = packed[0] / files.RUNS_DIR / solo.name
        status = json.loads((pack / "status.json").read_text())
        assert status["status"] == "completed" and len(status["pack"]) == 2 and solo.name in status["pack"]
        assert "training a pack of 2 runs" in (pack / "train.log").read_text()
        for folder in [solo, *sorted(solo.glob("rung-*"))]:  # the run and each of its smaller rungs
            ev = next(folder.glob("eval-*")).name
            mine = pack / folder.relative_to(solo)
            ours = _test_mses(json.loads((mine / ev / "metrics.json").read_text()))
            theirs = _test_mses(json.loads((folder / ev / "metrics.json").read_text()))
            assert ours.keys() == theirs.keys() and len(ours) >= 4
            for key, value in theirs.items():
                assert ours[key] == pytest.approx(value, rel=1e-3), (folder, key)
            compared += 1
    assert compared == 24


def test_adding_seeds_to_a_packed_study_trains_only_the_new_seeds(packed, tmp_path):
    workdir = copy_workdir(packed[0], tmp_path / "more")
    counts = planned(workdir, "--config", "seeds=[0,1,2,3,4]")
    trains = _full_budget(counts)
    # seeds 2 and 3 in one pack per mining config, seed 4 alone; seeds 0 and 1 untouched
    assert sorted(r.split("_seeds_")[1].rsplit("_", 1)[0] for r in trains) == ["2_3"] * 5 + ["4"] * 5
    # per new seed: 5 runs and 5 half-budget rungs, and the compute-matched rungs of random and adversarial
    assert counts["evaluate"] == 3 * 12


def test_a_pack_size_per_mode_packs_each_modes_new_seeds_to_its_size(packed, tmp_path):
    """train.pack as a mapping, planned over the finished packed study: the adversarial runs' new seeds
    in one pack of 3 per mining config, the other modes' new seeds alone (left out of the mapping)."""
    workdir = copy_workdir(packed[0], tmp_path / "per-mode")
    counts = planned(workdir, "--config", "seeds=[0,1,2,3,4]", "--configfile",
                     overlay(tmp_path, "train: {pack: {adversarial: 3}}\n"))
    seeds = sorted((r.split("_")[1], r.split("_seeds_")[1].rsplit("_", 1)[0]) for r in _full_budget(counts))
    assert seeds == sorted([("adversarial", "2_3_4")] * 3 + [(m, s) for m in ("none", "random") for s in "234"])


def test_the_pack_size_never_retrains_a_finished_run(packed, finished, tmp_path):
    assert planned(packed[0]) == {}
    assert planned(packed[0], "--configfile", overlay(tmp_path, "train: {pack: 1}\n")) == {}
    assert planned(packed[0], "--configfile", overlay(tmp_path, "train: {pack: 3}\n")) == {}
    assert planned(finished[0], "--configfile", overlay(tmp_path, "train: {pack: 2}\n")) == {}


def test_pack_rules_take_the_profile_settings_of_rule_train(packed):
    """A SLURM profile's set-resources/set-threads for `train` (GPU partition, gpu=1) reach pack jobs."""
    # the rules of the finished study as it is planned now (each finished run a pack of its own)
    rule = next(r for r in planned(packed[0], "--forceall") if r.startswith("train_none"))
    proc = smk(packed[0], "-n", "--forcerun", rule, "--set-resources", "train:slurm_partition=gpuq", "train:gpu=1",
               "--set-threads", "train=2")
    block = proc.stdout.split(f"rule {rule}:")[1].split("\n\n")[0]
    assert "slurm_partition=gpuq" in block and "gpu=1" in block and "threads: 2" in block, block


def test_job_processes_use_the_main_process_plan(packed, tmp_path):
    """A SLURM job (or subprocess) parses the Snakefile again, while other jobs write their outputs.
    Re-planning then could miss its own pack rule (a run half written counts as unfinished): job
    processes read the plan the main process wrote instead."""
    workdir = copy_workdir(packed[0], tmp_path / "job")
    rule = next(r for r in _full_budget(job_counts(packed[1].stdout + packed[1].stderr)) if r.startswith("train_none"))
    seed0, seed1 = (sorted((workdir / files.RUNS_DIR).glob(f"none-seed{k}-*"))[0] / "model.pt" for k in (0, 1))
    model1 = seed1.read_bytes()
    seed0.unlink()
    seed1.unlink()
    # the main process plans while neither run is finished: one pack of both, written to the plan
    targets = [str(p.relative_to(workdir)) for p in (seed0, seed1)]
    assert f"rule {rule}:" in smk(workdir, "-n", *targets).stdout
    seed1.write_bytes(model1)  # then seed 1 finishes while its pack's job starts
    job = ["--mode", "remote", "--target-jobs", f"{rule}:", "--allowed-rules", rule, "-n"]
    proc = smk(workdir, *job, check=False)
    assert proc.returncode == 0 and f"rule {rule}:" in proc.stdout, (proc.stdout + proc.stderr)[-3000:]
    # without the plan the job process would re-plan: seed 0 and seed 1 apart, and no such rule
    for plan in (workdir / files.PACKS_DIR).glob("plan-*.json"):
        plan.unlink()
    proc = smk(workdir, *job, check=False)
    assert proc.returncode != 0 and f"There is no rule named {rule}" in proc.stdout + proc.stderr


def test_until_stable_grows_a_packed_study_from_its_finished_trunks(packed, tmp_path):
    # turning until_stable on over a finished packed study retrains nothing: the first look reads the
    # existing rungs; the rung it adds continues each run's trunk from its saved state at step 16.
    # The runs are finished, so each is a pack of its own (scheduling.plan_packs): one job per run.
    workdir = copy_workdir(packed[0], tmp_path / "grown")
    grow = overlay(tmp_path, "comparison: {ladder: {until_stable: {max_steps: 40}}}\n"
                             "stability_margin: {seen_stable: {none: 80, random: 80, adversarial: 80}}\n")
    first = planned(workdir, "--configfile", grow)
    assert first.get("look") == 1 and not any(r.startswith("train") for r in first), first
    proc = smk(workdir, "--configfile", grow)
    # the jobs the look added after the checkpoint are not in the first 'Job stats' table: read the
    # jobs snakemake started
    ran = re.findall(r"^(?:local)?rule (\w+):", proc.stdout + proc.stderr, re.M)
    trained = sorted(r for r in ran if r.startswith("train"))
    assert len(trained) == 2 * 10 and all(re.search(r"_seeds_[01]_\w+_(trunk32|rung40)$", r) for r in trained), ran
    looks = sorted((workdir / files.StudyFiles("test").look(0)).parent.glob("look-*.json"))
    assert [p.name for p in looks] == ["look-20.json", "look-40.json"]
    assert json.loads(looks[0].read_text())["grow"]
    assert planned(workdir, "--configfile", grow) == {}
