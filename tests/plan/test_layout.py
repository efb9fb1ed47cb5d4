"""Keys and fingerprints behind the results layout (diffusion_lib.plan.layout, .provenance, .scheduling)
and command-line values in configs: fast unit tests of what decides reruns."""
from __future__ import annotations

import copy

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from diffusion_lib.plan import packs as scheduling, resources
from diffusion_lib.plan.config import coerce_cli_values, load_config, load_schema, option
from diffusion_lib.ired.data import make_heldout
from diffusion_lib.ired.diffusion import MiningConfig, build_diffusion
from diffusion_lib.plan.config import merge_config
from diffusion_lib.plan.layout import NOT_SHAPING_TRAIN_KEYS, Layout, run_train_block
from diffusion_lib.settings.provenance import module_closure, normalized_source, value_key
from diffusion_lib.train.engine import Engine
from diffusion_lib.settings.run_config import TrainConfig
from diffusion_lib.plan import files


@pytest.fixture
def pilot(root):
    return yaml.safe_load((root / "config/config.yaml").read_text())


def _layout(cfg, **changes):
    cfg = copy.deepcopy(cfg)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        target = cfg
        for part in path:
            target = target.setdefault(part, {})
        target[last] = value
    return Layout(load_config(cfg))


def _runs(layout):
    return {(r.strategy, r.seed): r.run for r in layout.runs}


def test_value_key_ignores_key_order_and_sees_every_value():
    assert value_key({"a": 1, "b": [1, 2]}) == value_key({"b": [1, 2], "a": 1})
    assert value_key({"a": 1.0}) != value_key({"a": 1.0000001})


def test_run_keys_follow_what_shapes_a_run(pilot):
    base = _layout(pilot)
    assert _runs(_layout(pilot, train__checkpoint_every=58)) == _runs(base)
    assert _runs(_layout(pilot, train__compile=True, train__cuda_graphs=True)) == _runs(base)
    assert _runs(_layout(pilot, threads=2, device="cpu", name="x", study="other")) == _runs(base)
    # the budget ladder's rungs never shape a run (adding one trains only its piece and branch)
    assert _runs(_layout(pilot, comparison__ladder__rungs=[0.5, 1.0])) == _runs(base)
    for change in ({"train__steps": 3625}, {"train__lr": 1e-3}, {"data__val_size": 512}, {"data__id_eps": 0.4},
                   {"train__validate_raw": True}, {"train__log_every": 58}, {"train__precision": "tf32"},
                   {"train__lr_schedule": {"kind": "wsd", "warmup_steps": 100, "min_lr_ratio": 0.05,
                                           "decay_fraction": 0.4}}):
        changed = _runs(_layout(pilot, **change))
        assert all(changed[k] != v for k, v in _runs(base).items()), change
    # test sets and the reference shape evaluations and the report, never a run
    resized = _layout(pilot, data__test_size=1024, data__reference_size=5000)
    assert _runs(resized) == _runs(base)
    assert resized.eval_key != base.eval_key and resized.reference != base.reference
    assert resized.splits["val_id"] == base.splits["val_id"] and resized.splits["test_id"] != base.splits["test_id"]
    # a mining parameter changes only the strategy that uses it
    tuned = _runs(_layout(pilot, strategies__adversarial__opt_steps=3))
    assert all((tuned[k] == v) == (k[0] != "adversarial") for k, v in _runs(base).items())


def test_strategy_names_do_not_enter_run_keys_and_overlays_share_runs(pilot, root):
    renamed = copy.deepcopy(pilot)
    renamed["strategies"] = {"plain": pilot["strategies"]["baseline"], **pilot["strategies"]}
    shared = _runs(Layout(load_config(renamed)))
    assert [shared[("plain", k)] for k in pilot["seeds"]] == [shared[("baseline", k)] for k in pilot["seeds"]]
    ablation = merge_config(copy.deepcopy(pilot), yaml.safe_load((root / "config/ablation.yaml").read_text()))
    a, b = _runs(_layout(pilot)), _runs(Layout(load_config(ablation)))
    common = set(a) & set(b)
    assert {("baseline", 0), ("adversarial", 5), ("random", 2)} <= common
    assert all(a[k] == b[k] for k in common)
    assert Layout(load_config(ablation)).files == files.StudyFiles("ablation")


def test_checkpoint_cadence_does_not_change_what_a_run_computes():
    """The claim behind leaving checkpoint_every out of a run's key: two cadences, identical runs."""
    val = make_heldout(16, 3, 0.5, seed=7)
    curves = []
    for every in (4, 12):
        cfg = TrainConfig(steps=12, batch_size=8, lr=1e-3, rank=3, eval_every=4, val_size=8, log_every=4,
                          checkpoint_every=every, ema_update_every=1, ema_update_after_step=0, measure_flops=False)
        (result,) = Engine.seeded([cfg], MiningConfig(mode="adversarial"), val, progress=False).train()
        curve = pd.DataFrame(result.curve)
        curves.append(curve.drop(columns=[c for c in curve.columns if "seconds" in c or "per_s" in c]))
    pd.testing.assert_frame_equal(curves[0], curves[1])
    mining = MiningConfig(mode="none")
    assert TrainConfig(checkpoint_every=4).identity(mining) == TrainConfig(checkpoint_every=8).identity(mining)


def test_rule_code_closures_hold_what_each_rule_runs():
    train = module_closure("diffusion_lib.jobs.train")
    evaluate = module_closure("diffusion_lib.jobs.evaluate")
    study = module_closure("diffusion_lib.jobs.study")
    assert {"diffusion_lib.ired.diffusion", "diffusion_lib.ired.model", "diffusion_lib.train.engine", "diffusion_lib.ired.data"} <= set(train)
    assert not {"diffusion_lib.report.document", "diffusion_lib.report.figures", "diffusion_lib.analysis.verdict"} & set(train)
    # what only watches a job (heartbeats, TensorBoard, MLflow) does not rerun it when it changes
    assert not {"diffusion_lib.train.progress", "diffusion_lib.watch.job_tracking", "diffusion_lib.watch.mlflow_client"} & set(train)
    assert "diffusion_lib.watch.job_tracking" in module_closure("diffusion_lib.watch.job_tracking")
    # the code that keys outputs shapes none (aot imports it to key its compiled packages)
    assert "diffusion_lib.train.aot" in train and "diffusion_lib.settings.provenance" not in train
    assert "diffusion_lib.ired.diffusion" in evaluate and "diffusion_lib.train.engine" not in evaluate
    assert {"diffusion_lib.report.figures", "diffusion_lib.analysis.verdict", "diffusion_lib.report.document"} <= set(study)
    assert not {"diffusion_lib.ired.diffusion", "diffusion_lib.train.engine"} & set(study)


def test_normalized_source_drops_prose_and_keeps_code(tmp_path):
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text('"""Module doc."""\nX = 1  # one\n\n\ndef f():\n    """Doc."""\n    return "# not a comment"\n')
    b.write_text('"""Another doc,\nover two lines."""\n# a note\nX = 1\ndef f():\n    """Changed."""\n'
                 '    return "# not a comment"\n')
    c.write_text(a.read_text().replace("X = 1", "X = 2"))
    assert normalized_source(a) == normalized_source(b) == 'X = 1\ndef f():\n    return "# not a comment"\n'
    assert normalized_source(c) != normalized_source(a)


def test_train_runtime_grows_with_steps_and_attempts(pilot):
    cfg = load_config(pilot)
    first = resources.train_runtime(cfg, "adversarial", 1)
    steps = cfg["train"]["steps"]
    assert first == max(5, math.ceil(steps / 24 / 60 * 2.0))  # pilot: 24 steps/s, margin 2, at least 5 min
    assert resources.train_runtime(cfg, "adversarial", 2) == 2 * first
    assert resources.train_runtime(cfg, "none", 1) <= first
    big = copy.deepcopy(pilot)
    big["train"]["steps"] = 100_050  # the full budget's decay starts at 80,040, a multiple of log_every (29)
    assert resources.train_runtime(load_config(big), "adversarial", 1) == math.ceil(100_050 / 24 / 60 * 2.0)
    # a trunk piece or a decay branch asks for its share of the steps (at least min_runtime)
    assert resources.train_runtime(load_config(big), "adversarial", 1, share=0.2) == math.ceil(
        0.2 * 100_050 / 24 / 60 * 2.0)
    assert resources.evaluate_runtime(cfg, 3) == 3 * resources.evaluate_runtime(cfg, 1)


def test_command_line_strings_become_what_the_schema_asks(pilot):
    schema = load_schema()
    got = coerce_cli_values({"seeds": ["0", "1", "2"], "partial": "true", "train": {"steps": "100", "lr": "1e-3"},
                             "evaluation": {"inner_steps": "[0, 5]"}, "name": "42",
                             "strategies": {"adv": {"mode": "adversarial", "seeds": ["3"], "scale_factor": "0.5"}}},
                            schema)
    assert got == {"seeds": [0, 1, 2], "partial": True, "train": {"steps": 100, "lr": 1e-3},
                   "evaluation": {"inner_steps": [0, 5]}, "name": "42",
                   "strategies": {"adv": {"mode": "adversarial", "seeds": [3], "scale_factor": 0.5}}}
    assert coerce_cli_values({"seeds": ["zero"]}, schema) == {"seeds": ["zero"]}  # left for validation to name
    # a field of several shapes (train.pack: a size, or a size per mode), as snakemake --config delivers it
    assert coerce_cli_values({"train": {"pack": "4"}}, schema) == {"train": {"pack": 4}}
    assert coerce_cli_values({"train": {"pack": {"adversarial": "4"}}}, schema) == {"train": {"pack": {"adversarial": 4}}}
    assert coerce_cli_values({"train": {"pack": "four"}}, schema) == {"train": {"pack": "four"}}
    assert option({}, "train.checkpoint_every") == 5000 and option(pilot, "train.checkpoint_every") == 580


# --------------------------------------------------------------- per-strategy training overrides (issue 19)
def test_training_overrides_shape_only_their_strategys_runs(pilot):
    base = _runs(_layout(pilot))
    for override in ({"lr": 1e-3}, {"grad_clip": 2.0}, {"grad_clip": math.inf}, {"betas": [0.9, 0.999]}):
        tuned = _runs(_layout(pilot, strategies__adversarial__train=override))
        assert all((tuned[k] == v) == (k[0] != "adversarial") for k, v in base.items()), override
    # two strategies differing only by lr are different runs; one whose override equals the
    # top-level value shares the runs of the one without
    twins = copy.deepcopy(pilot)
    twins["strategies"]["fast"] = {"mode": "none", "train": {"lr": 2 * pilot["train"]["lr"]}}
    twins["strategies"]["same"] = {"mode": "none", "train": {k: pilot["train"][k] for k in ("lr", "grad_clip", "betas")}}
    runs = _runs(Layout(load_config(twins)))
    assert all(runs[("same", k)] == runs[("baseline", k)] != runs[("fast", k)] for k in pilot["seeds"])


def test_a_run_spec_carries_its_strategys_train_block(pilot):
    layout = _layout(pilot, strategies__adversarial__train={"grad_clip": math.inf, "lr": 1e-3})
    spec = next(r for r in layout.runs if r.strategy == "adversarial")
    assert spec.train == run_train_block(layout.cfg, "adversarial")
    assert spec.train["grad_clip"] == math.inf and spec.train["lr"] == 1e-3
    assert {k: v for k, v in spec.train.items() if k not in ("grad_clip", "lr")} == {
        k: v for k, v in run_train_block(layout.cfg).items() if k not in ("grad_clip", "lr")}
    assert not set(NOT_SHAPING_TRAIN_KEYS) & set(spec.train)
    baseline = next(r for r in layout.runs if r.strategy == "baseline")
    assert baseline.train == run_train_block(layout.cfg) and baseline.train["grad_clip"] == pilot["train"]["grad_clip"]
    spec.train["lr"] = 1.0  # a copy: changing it leaves the config alone
    assert layout.cfg["strategy_train"]["adversarial"]["lr"] == 1e-3


def test_an_infinite_grad_clip_hashes_deterministically():
    assert value_key({"grad_clip": math.inf}) == value_key({"grad_clip": float("inf")})
    assert value_key({"grad_clip": math.inf}) != value_key({"grad_clip": 1e308})
    mining = MiningConfig(mode="adversarial")
    assert TrainConfig(grad_clip=math.inf).fingerprint(mining) == TrainConfig(grad_clip=float("inf")).fingerprint(mining)
    assert TrainConfig(grad_clip=math.inf).fingerprint(mining) != TrainConfig().fingerprint(mining)


def test_training_sweeps_train_new_runs_and_reuse_equal_ones(pilot):
    swept = copy.deepcopy(pilot)
    swept["sweeps"] = [{"base": "adversarial", "grid": {"train.grad_clip": [pilot["train"]["grad_clip"], math.inf]}},
                       {"base": "baseline", "grid": {"train.lr": [pilot["train"]["lr"], 2 * pilot["train"]["lr"]]}}]
    layout, base = Layout(load_config(swept)), _runs(_layout(pilot))
    runs = _runs(layout)
    assert {k: v for k, v in runs.items() if k in base} == base  # the declared strategies' runs are unchanged
    new = {k: v for k, v in runs.items() if k not in base}
    assert {s for s, _ in new} == {"adversarial__train.grad_clip-inf", f"baseline__train.lr-{2 * pilot['train']['lr']:g}"}
    assert not set(new.values()) & set(base.values())
    assert all(layout.run_of[r].train["grad_clip"] == math.inf for (s, _), r in new.items() if "grad_clip" in s)


def test_a_runs_train_param_does_not_depend_on_the_order_of_config_keys():
    # the train block is a rule param, compared as written: an overlay that moves `lr` must not
    # read as a change (it retrained a finished sweep once)
    from diffusion_lib.plan.config import load_config
    from diffusion_lib.plan.layout import run_train_block

    base = {"seeds": [0], "strategies": {"baseline": {"mode": "none"}}}
    a = load_config({**base, "train": {"steps": 20, "lr": 1e-3, "log_every": 2, "eval_every": 2}})
    b = load_config({**base, "train": {"lr": 1e-3, "eval_every": 2, "log_every": 2, "steps": 20}})
    assert repr(run_train_block(a, "baseline")) == repr(run_train_block(b, "baseline"))


def _move_into_subpackage(package: Path, module: str, subpackage: str) -> None:
    """Move ``<package>/train/<module>.py`` to ``<package>/<subpackage>/<module>.py`` and rewrite every
    import of it (and its own imports of train/), as a refactoring would."""
    import re

    (package / subpackage).mkdir()
    (package / subpackage / "__init__.py").write_text('"""A subpackage."""\n')
    moved = package / subpackage / f"{module}.py"
    (package / "train" / f"{module}.py").rename(moved)
    moved.write_text(re.sub(r"^(\s*from )\.(\w)", r"\1..train.\2", moved.read_text(), flags=re.M))
    for path in package.rglob("*.py"):
        if path == moved:
            continue
        inside = path.parent.name == "train"
        text = re.sub(rf"^(\s*from )\.{module} import" if inside else rf"^(\s*from )\.\.train\.{module} import",
                      rf"\g<1>..{subpackage}.{module} import", path.read_text(), flags=re.M)
        path.write_text(text.replace(f"diffusion_lib.train.{module} ", f"diffusion_lib.{subpackage}.{module} "))


def test_moving_a_module_changes_no_jobs_fingerprint(tmp_path):
    """The code fingerprint hashes contents, not places (issue 32.2): moving modules into a
    subpackage leaves every rule's fingerprint unchanged, while editing a statement of a moved
    module still changes the fingerprints of exactly the jobs that import it."""
    import shutil

    from diffusion_lib.settings.provenance import PACKAGE_DIR, code_fingerprint

    package = tmp_path / "diffusion_lib"
    shutil.copytree(PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    jobs = [f"diffusion_lib.jobs.{job}" for job in ("data", "train", "evaluate", "study")]
    before = {job: code_fingerprint(job, package_dir=package) for job in jobs}
    assert before == {job: code_fingerprint(job) for job in jobs}
    for module in ("ema", "adam"):
        _move_into_subpackage(package, module, "optim" if module == "ema" else "optim2")
    assert "diffusion_lib.optim.ema" in module_closure("diffusion_lib.jobs.train", package)
    assert "diffusion_lib.train.ema" not in module_closure("diffusion_lib.jobs.train", package)
    code_fingerprint.cache_clear()
    assert {job: code_fingerprint(job, package_dir=package) for job in jobs} == before
    ema = package / "optim" / "ema.py"
    ema.write_text(ema.read_text().replace("def ", "X_EDITED = 1\n\n\ndef ", 1))
    code_fingerprint.cache_clear()
    after = {job: code_fingerprint(job, package_dir=package) for job in jobs}
    assert after["diffusion_lib.jobs.train"] != before["diffusion_lib.jobs.train"]
    assert after["diffusion_lib.jobs.study"] == before["diffusion_lib.jobs.study"]  # the study does not import it


def test_library_imports_are_left_out_and_outside_imports_kept_one_name_a_line(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from .ema import EMASchedule\nfrom . import checkpoint as ckpt\nimport torch, math\n")
    b.write_text("from .optim.ema import (\n    EMASchedule,\n)\nimport math\nimport torch\n")
    assert normalized_source(a) == normalized_source(b) == "import math\nimport torch\n"
    b.write_text("import math\nimport torch as t\n")
    assert normalized_source(a) != normalized_source(b)


def _fingerprint_of(package, module="diffusion_lib.jobs.main"):
    from diffusion_lib.settings.provenance import code_fingerprint

    code_fingerprint.cache_clear()
    return code_fingerprint(module, package_dir=package)


def test_splitting_a_module_changes_no_fingerprint_but_editing_it_does(tmp_path):
    """A split moves statements between files: the fingerprint hashes statements, not files, so a
    split reruns nothing, while an edited statement or a new outside import reruns the job."""
    package = tmp_path / "diffusion_lib"
    (package / "jobs").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "jobs" / "__init__.py").write_text("")
    (package / "jobs" / "main.py").write_text("from ..engine import run\n\nX = run()\n")
    engine = package / "engine.py"
    engine.write_text('"""The engine."""\nfrom __future__ import annotations\n\nimport math\n\n\n'
                      'class Record:\n    steps: int = 0\n\n\n@staticmethod\ndef run():\n'
                      '    return math.sqrt(Record.steps)\n')
    before = _fingerprint_of(package)
    engine.write_text('"""The engine."""\nfrom __future__ import annotations\n\nimport math\n\n'
                      'from .record import Record\n\n\n@staticmethod\ndef run():\n'
                      '    return math.sqrt(Record.steps)\n')
    (package / "record.py").write_text('"""One run\'s record."""\nfrom __future__ import annotations\n\n\n'
                                       'class Record:\n    steps: int = 0  # how far it went\n')
    assert _fingerprint_of(package) == before
    (package / "record.py").write_text("class Record:\n    steps: int = 1\n")
    assert _fingerprint_of(package) != before
    (package / "record.py").write_text("import numpy\n\n\nclass Record:\n    steps: int = 0\n")
    assert _fingerprint_of(package) != before
