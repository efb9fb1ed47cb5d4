"""The study's jobs table and the workflow's lookups in it (diffusion_lib.plan.study_plan,
.files, .packs, .resources): fast, on the .test study's config, without Snakemake."""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from types import SimpleNamespace

import pytest
import yaml

from diffusion_lib.plan import files, resources
from diffusion_lib.plan.config import load_config
from diffusion_lib.plan.files import ModelFiles, TrunkFiles, job_runs, trunk_state
from diffusion_lib.plan.packs import study_packs
from diffusion_lib.plan.study_plan import PlanError, StudyPlan, write_table
from tests.workflow_helpers import ROOT


@pytest.fixture(scope="module")
def test_cfg(tmp_path_factory):
    root = ROOT
    here, cache = os.getcwd(), tmp_path_factory.mktemp("flops")
    os.chdir(cache)  # the compute-matched rungs cache FLOP counts under results/.flops
    try:
        raw = yaml.safe_load((root / ".test/config/config.yaml").read_text())  # a whole config, as tests use it
        StudyPlan(load_config(copy.deepcopy(raw)), exists=lambda p: False)  # fills the cache
    finally:
        os.chdir(here)
    return raw, cache / files.FLOPS_CACHE


@pytest.fixture
def plan_of(test_cfg, tmp_path, monkeypatch):
    """A StudyPlan of the .test config (changed by ``changes``) over a fake set of existing files."""
    cfg, flops = test_cfg
    monkeypatch.chdir(tmp_path)
    (tmp_path / files.RESULTS).mkdir()
    (tmp_path / files.FLOPS_CACHE).symlink_to(flops)

    def make(files=(), json_of=None, **changes):
        c = copy.deepcopy(cfg)
        for dotted, value in changes.items():
            *path, last = dotted.split("__")
            target = c
            for part in path:
                target = target[part]
            target[last] = value
        files = set(files)
        listing = lambda d: [os.path.basename(f) for f in files if os.path.dirname(f) == d]  # noqa: E731
        return StudyPlan(load_config(c), exists=files.__contains__, listdir=listing,
                         read_json=lambda p: (json_of or {})[p])

    return make


def test_every_job_reads_back_its_runs_from_the_files_the_plan_gives_it(plan_of):
    """One description of where files live: what a job's outputs and start say, parsed by the job
    (files.job_runs), is exactly what the plan meant for it."""
    plan = plan_of()
    kinds = {job.kind for job in plan.jobs.values()}
    assert kinds == {"trunk", "branch", "train"}
    for job in plan.jobs.values():
        out = job.files.outputs["state" if job.kind == "trunk" else "model"]
        assert job_runs([out], [job.start] if job.start else [], plan.full) == [job.entry()]
    for pack_job in study_packs(plan_of(train__pack=2), main_process=False):
        outs = pack_job.outputs["state" if pack_job.kind == "trunk" else "model"]
        assert len(outs) == 2
        assert job_runs(outs, pack_job.starts, plan.full) == [m.entry() for m in pack_job.members]


def test_job_runs_refuses_what_is_not_a_run_file():
    run = "none-seed3-0123456789ab"
    with pytest.raises(ValueError, match="is neither a trunk state .* nor a model"):
        job_runs([f"{files.RUNS_DIR}/{run}/curve.csv"], [], 20)
    with pytest.raises(ValueError, match="2 start states"):
        job_runs([f"{files.RUNS_DIR}/{run}/model.pt"], [trunk_state(run, 8), trunk_state(run, 16)], 20)
    assert job_runs([f"{files.RUNS_DIR}/{run}/rung-10/model.pt"], [], 20)[0]["seed"] == 3


def test_the_table_lists_each_piece_of_each_run_once(plan_of):
    plan = plan_of()
    rows = plan.table()
    for spec in plan.layout.run_of.values():
        mine = [r for r in rows if r["run"] == spec.run]
        assert [r["to"] for r in mine if r["kind"] == "trunk"] == plan.budgets.branch_points(spec)
        assert sorted(r["to"] for r in mine if r["kind"] != "trunk") == [g.steps for g in plan.budgets.rungs(spec)]
        assert [r["to"] for r in mine if r["kind"] == "train"] == [plan.full]
    assert len(rows) == len(plan.jobs) == len({(r["kind"], r["run"], r["to"]) for r in rows})
    no_ladder = plan_of(train__lr_schedule={"kind": "cosine"}, comparison__ladder__rungs=[1.0])
    assert {r["kind"] for r in no_ladder.table()} == {"train"}
    assert all(not job.start for job in no_ladder.jobs.values())


def test_the_table_file_holds_one_line_per_job(plan_of, tmp_path):
    path = str(tmp_path / "jobs.tsv")
    plan = plan_of()
    write_table(plan.table(), path)
    lines = open(path).read().splitlines()
    assert lines[0].split("\t") == ["kind", "strategy", "seed", "run", "to", "start", "outputs", "log"]
    assert len(lines) == 1 + len(plan.jobs)


def test_lookups_refuse_what_the_config_does_not_produce_and_say_what_it_would(plan_of):
    plan = plan_of()
    spec = plan.layout.runs[0]
    with pytest.raises(PlanError, match="is not a run of study 'test'"):
        plan.run("none-seed9-0123456789ab")
    with pytest.raises(PlanError, match=r"3 is not a branch point of this run \(its branch points: \[8, 16\]\)"):
        plan.trunk_job(spec.run, "3")
    with pytest.raises(PlanError, match=r"11 steps is not a budget of this run in study 'test' \(its budgets"):
        plan.model_job(spec.run, "11")
    assert plan.model_job(spec.run).kind == "train" and plan.model_job(spec.run, "10").kind == "branch"
    split, key = "val_id", plan.layout.split_keys["val_id"]
    assert plan.split(split, key)["split"] == "val_id"
    with pytest.raises(PlanError, match="is not a split of the current config"):
        plan.split(split, "0" * 10)
    layout = plan.layout
    assert plan.eval_settings(spec.run, layout.eval_key) == plan.cfg["evaluation"]
    assert plan.eval_settings(f"{spec.run}/rung-10", layout.rung_eval_key) == layout.rung_eval_settings
    with pytest.raises(PlanError, match="is not an evaluation of the current config"):
        plan.eval_settings(f"{spec.run}/rung-10", layout.eval_key)  # a smaller rung is scored on its endpoints


def test_a_trunk_piece_keeps_the_start_it_was_trained_from(plan_of):
    plan = plan_of()
    run = plan.layout.runs[0].run
    assert plan.trunk_job(run, 8).start is None and plan.trunk_job(run, 16).start == trunk_state(run, 8)
    # a state saved at step 12 (a rung since removed from the config): the piece to 16 continues it
    assert plan_of({trunk_state(run, 12)}).trunk_job(run, 16).start == trunk_state(run, 12)
    # a finished piece keeps what its sidecar says, even though a state at 12 now exists
    done = TrunkFiles(run, 16).outputs
    finished = plan_of({trunk_state(run, 12), *done.values()}, {done["sidecar"]: {"from": trunk_state(run, 8)}})
    assert finished.trunk_job(run, 16).start == trunk_state(run, 8)
    scratch = plan_of({*done.values()}, {done["sidecar"]: {"from": None}})
    assert scratch.trunk_job(run, 16).inputs == {}


def test_runtime_follows_the_share_of_the_budget_a_job_trains(plan_of):
    plan = plan_of()
    run = next(r for r in plan.layout.runs if r.mode == "adversarial").run
    trunk, full = plan.trunk_job(run, 16), plan.model_job(run)
    assert trunk.share == 16 / plan.full and full.share == (plan.full - 16) / plan.full
    big = plan_of(train__steps=200_000)
    job = big.model_job(big.layout.runs[0].run)
    assert big.runtime(job, 2) == 2 * big.runtime(job, 1)
    assert big.runtime(job, 1, members=2) > big.runtime(job, 1)


def test_packs_group_unfinished_runs_and_job_processes_read_the_saved_plan(plan_of):
    fresh = study_packs(plan_of(train__pack=2), main_process=True)
    assert fresh and all(len(j.members) == 2 for j in fresh)
    assert {j.rule for j in fresh if j.kind == "train"} == {j.pack.rule for j in fresh}
    plan = plan_of(train__pack=2)
    done = {f for spec in plan.layout.runs for f in ModelFiles(spec.dir).outputs.values()}
    # a job process (a SLURM job) started while runs finish reads the main process's plan
    assert [j.rule for j in study_packs(plan_of(done, train__pack=2), main_process=False)] == [j.rule for j in fresh]
    # the main process plans again: finished runs are packs of their own, never retrained to fill a pack
    again = study_packs(plan_of(done, train__pack=2), main_process=True)
    assert again and all(len(j.members) == 1 for j in again)
    assert study_packs(plan_of(), main_process=True) == []


def test_a_pack_size_per_mode_packs_each_modes_runs_to_its_own_size(plan_of):
    """train.pack as a mapping: the adversarial runs in pairs, the other modes' runs alone (left out: 1)."""
    jobs = study_packs(plan_of(train__pack={"adversarial": 2}), main_process=True)
    sizes = {(j.pack.mode, len(j.members)) for j in jobs}
    assert sizes == {("adversarial", 2), ("none", 1), ("random", 1)}, sizes
    # a size for every mode equal to one number packs as that number does
    same = study_packs(plan_of(train__pack={"none": 2, "random": 2, "adversarial": 2}), main_process=True)
    assert [j.rule for j in same] == [j.rule for j in study_packs(plan_of(train__pack=2), main_process=True)]
    assert study_packs(plan_of(train__pack={"adversarial": 1}), main_process=True) == []


@pytest.mark.parametrize("pack", [{"adversaria": 2}, {"adversarial": 0}, {}, 0])
def test_a_pack_size_that_is_not_a_positive_size_per_known_mode_is_refused(plan_of, pack):
    from diffusion_lib.plan.config import ConfigError

    with pytest.raises(ConfigError, match="pack"):
        plan_of(train__pack=pack)


def test_pack_rules_take_the_profile_settings_of_their_kind_of_job():
    settings = SimpleNamespace(_parsed_overwrite_resources={"train": {"gpu": 1}, "trunk": {"gpu": 2},
                                                            "p_own": {"gpu": 7}},
                               _parsed_overwrite_threads={"train": 4})
    assert resources.inherit_profile_settings(settings, [("p", "train"), ("p_trunk8", "trunk"), ("p_rung10", "branch"),
                                                         ("p_own", "train")])
    res, threads = settings._parsed_overwrite_resources, settings._parsed_overwrite_threads
    assert res["p"] == {"gpu": 1} and res["p_trunk8"] == {"gpu": 2} and res["p_rung10"] == {"gpu": 1}
    assert res["p_own"] == {"gpu": 7}  # what the profile sets for the pack rule itself stays
    assert threads == {"train": 4, "p": 4, "p_trunk8": 4, "p_rung10": 4, "p_own": 4}
    assert not resources.inherit_profile_settings(SimpleNamespace(), [("p", "train")])


def test_gpu_jobs_hold_a_gpu_only_on_a_cuda_device():
    assert resources.gpus_per_job("cuda:1") == 1 and resources.gpus_per_job("cpu") == 0
    assert resources.gpus_per_job("auto", which=lambda name: "/usr/bin/nvidia-smi") == 1
    assert resources.gpus_per_job("auto", which=lambda name: None) == 0


def test_sidecar_json_is_read_from_disk_by_default(plan_of, tmp_path):
    cfg = plan_of().cfg
    run = StudyPlan(cfg, exists=lambda p: False).layout.runs[0].run
    files = TrunkFiles(run, 16).outputs
    os.makedirs(os.path.dirname(files["state"]))
    open(files["state"], "w").close()
    with open(files["sidecar"], "w") as fh:
        json.dump({"from": None}, fh)
    plan = StudyPlan(cfg)
    assert plan.trunk_job(run, 16).start is None
    assert plan.trunk_job(run, 8).start is None  # nothing saved before step 8


def test_every_output_path_is_spelled_in_one_module(root):
    """plan/files.py is the one description of where outputs lie: no other code file (library, rules,
    scripts, tools, tests) writes a path under the results root as a literal."""
    tracked = subprocess.run(["git", "ls-files", "*.py", "*.smk", "Snakefile"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.split()
    literal = re.compile(r"""[fbr]?["']results/""")
    found = [f"{name}:{i}" for name in tracked if name != "diffusion_lib/plan/files.py"
             for i, line in enumerate((root / name).read_text().splitlines(), 1) if literal.search(line)]
    assert found == [], f"paths under results/ written outside diffusion_lib/plan/files.py: {found}"
    assert literal.search('x = f"' + files.RUNS_DIR) and not literal.search('RESULTS = "results"')  # what it sees
