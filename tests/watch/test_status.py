"""Watching a study (issue 21, the status table): a trainer's heartbeat at every log interval, and
``python -m diffusion_lib.watch.status`` reading heartbeats and finished outputs into one row per job."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import pytest
import torch
import yaml

from diffusion_lib.watch import status
from diffusion_lib.ired.data import make_heldout
from diffusion_lib.plan.layout import Layout
from diffusion_lib.train.progress import duration_text, read_heartbeat, write_heartbeat
from diffusion_lib.train.engine import Engine
from diffusion_lib.settings.run_config import TrainConfig

CFG = TrainConfig(steps=12, batch_size=8, lr=1e-3, rank=3, eval_every=6, val_size=8, log_every=3,
                  checkpoint_every=6, measure_flops=False, seed=1)


def test_a_trainer_rewrites_its_heartbeat_at_every_log_row(tmp_path):
    resume = tmp_path / "resume.ckpt"
    trainer = Engine.seeded([CFG], {"mode": "random"}, make_heldout(8, 3, 0.5, seed=5), resume_paths=[resume],
                            progress=False)
    seen = []
    original = trainer._append_row

    def spy(*args, **kwargs):
        original(*args, **kwargs)
        seen.append(read_heartbeat(tmp_path / "progress.json"))

    trainer._append_row = spy
    (result,) = trainer.train()
    assert [b["step"] for b in seen] == [3, 6, 9, 12] and all(b["steps"] == 12 for b in seen)
    assert seen[-1]["val_mse_ema"] == pytest.approx(result.curve[-1]["val_mse_ema"])
    assert math.isnan(seen[0]["val_mse_ema"]) and seen[1]["val_mse_ema"] == pytest.approx(result.curve[1]["val_mse_ema"])
    rates = sorted(r["steps_per_s"] for r in result.curve[-3:])
    assert seen[-1]["steps_per_s"] == pytest.approx(rates[1]) and seen[-1]["eta_s"] == 0
    assert seen[0]["eta_s"] == pytest.approx((12 - 3) / result.curve[0]["steps_per_s"])


def test_without_a_resume_path_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Engine.seeded([dataclasses.replace(CFG, steps=3)], {"mode": "none"}, None, progress=False).train()
    assert not list(tmp_path.rglob("progress.json"))


def test_durations_read_as_people_write_them():
    assert [duration_text(s) for s in (45, 750, 3900, math.nan)] == ["45 s", "12 min 30 s", "1 h 05 min", "?"]


@pytest.fixture
def study(tmp_path, monkeypatch, root):
    """The .test study's config in an empty workflow folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text((root / ".test/config/config.yaml").read_text())
    return status.study_config()


def test_the_table_has_every_job_and_reads_each_state_from_the_files(study, tmp_path):
    layout = Layout(study)
    rows = status.status_rows(study)
    # the .test study: 10 runs, their trunk pieces (24), smaller rungs (14) and full budgets (10)
    assert len(rows) == 48 and {r["state"] for r in rows} == {"queued"}
    spec = next(s for s in layout.runs if s.strategy == "adversarial" and s.seed == 1)
    run = tmp_path / spec.dir
    (run / "trunk").mkdir(parents=True)
    # trunk piece to 8: saved; to 16: training now (a fresh heartbeat at step 12, 2 steps/s)
    (run / "trunk/step-8.json").write_text(json.dumps({"step": 8, "diverged_at": None}))
    write_heartbeat(run / "trunk/progress.json", step=12, steps=16,
                    curve=[{"steps_per_s": 2.0, "val_mse_ema": 0.25}])
    other = next(s for s in layout.runs if s.strategy == "baseline" and s.seed == 0)
    (tmp_path / other.dir).mkdir(parents=True)
    # a baseline full budget whose job was killed an hour ago, and a random one that finished
    write_heartbeat(tmp_path / other.dir / "progress.json", step=10, steps=20, curve=[{"steps_per_s": 4.0}])
    beat = tmp_path / other.dir / "progress.json"
    stale = json.loads(beat.read_text()) | {"updated": time.time() - 3600}
    beat.write_text(json.dumps(stale))
    done = next(s for s in layout.runs if s.strategy == "random" and s.seed == 0)
    (tmp_path / done.dir).mkdir(parents=True)
    (tmp_path / done.dir / "status.json").write_text(json.dumps({"status": "completed", "steps_done": 20}))
    (tmp_path / done.dir / "curve.csv").write_text("step,val_mse_ema\n10,0.3\n20,0.125\n")
    rows = status.status_rows(study)
    by = {(r["strategy"], r["seed"], r["job"]): r for r in rows}
    assert by[("adversarial", 1, "trunk to 8")]["state"] == "done"
    training = by[("adversarial", 1, "trunk to 16")]
    assert (training["state"], training["step"], training["val_mse_ema"]) == ("training", 12, 0.25)
    assert training["eta_s"] == pytest.approx((16 - 12) / 2.0)
    assert by[("baseline", 0, "full budget")]["state"] == "stopped"
    finished = by[("random", 0, "full budget")]
    assert (finished["state"], finished["step"], finished["val_mse_ema"]) == ("done", 20, 0.125)
    assert by[("random", 1, "full budget")]["state"] == "queued"
    text = status.table(rows)
    assert "training" in text and "stopped" in text and "2 s" in text  # the ETA of the running piece
    # the study's ETA: remaining steps at each mode's rate, measured where a job of the mode runs
    eta = status.study_eta(rows, study, cores=2)
    configured = study["resources"]["steps_per_second"]
    expected = 0.0
    for r in rows:
        if r["state"] not in ("done", "diverged"):
            rate = 2.0 if r["mode"] == "adversarial" else configured[r["mode"]]
            expected += (r["steps"] - max(r["step"], r["trained_from"])) / rate
    assert eta == pytest.approx(expected / max(1, 2 // study["threads"]))


def test_the_command_prints_the_table_and_the_study_eta(study, capsys):
    status.main(["--cores", "2"])
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() [:4] == ["strategy", "seed", "job", "state"]
    assert "study test: 48 training jobs: 48 queued" in out and "training left: about" in out


def test_a_single_rung_ladder_still_lists_each_runs_trunk_piece(study, tmp_path):
    """One rung on the warmup-stable-decay schedule: the workflow trains a trunk piece and its decay
    branch per run (10 trunk + 10 train jobs in the .test study), and the table lists both."""
    overlay = tmp_path / "one.yaml"
    overlay.write_text("comparison: {ladder: {rungs: [1.0], compute_matched: false}}\n")
    rows = status.status_rows(status.study_config([overlay]))
    assert sorted({r["job"] for r in rows}) == ["full budget", "trunk to 16"] and len(rows) == 20
    assert all(r["trained_from"] == 16 for r in rows if r["job"] == "full budget")



def test_the_table_shows_a_run_blowing_up_while_it_trains_and_after(study, tmp_path):
    """Issue 34: instability is visible as it happens (the heartbeat's MSE over its best, against
    comparison.instability.factor) and in a finished job's curve; ordinary noise is not flagged."""
    layout = Layout(study)
    running = next(s for s in layout.runs if s.strategy == "baseline" and s.seed == 1)
    (tmp_path / running.dir).mkdir(parents=True)
    write_heartbeat(tmp_path / running.dir / "progress.json", step=12, steps=20,
                    curve=[{"steps_per_s": 2.0, "val_mse_ema": v} for v in (0.05, 0.02, 0.021, 0.06)])
    done = next(s for s in layout.runs if s.strategy == "random" and s.seed == 1)
    (tmp_path / done.dir).mkdir(parents=True)
    (tmp_path / done.dir / "status.json").write_text(json.dumps({"status": "completed", "steps_done": 20}))
    (tmp_path / done.dir / "curve.csv").write_text("step,val_mse_ema\n5,0.3\n10,0.0105\n15,0.071\n20,0.129\n")
    calm = next(s for s in layout.runs if s.strategy == "random" and s.seed == 0)
    (tmp_path / calm.dir).mkdir(parents=True)
    (tmp_path / calm.dir / "status.json").write_text(json.dumps({"status": "completed", "steps_done": 20}))
    (tmp_path / calm.dir / "curve.csv").write_text("step,val_mse_ema\n5,0.3\n10,0.0105\n15,0.0112\n20,0.0101\n")
    by = {(r["strategy"], r["seed"], r["job"]): r for r in status.status_rows(study)}
    assert by[("baseline", 1, "full budget")]["stability"] == "now 3.0x its best: unstable"
    assert by[("random", 1, "full budget")]["stability"] == "unstable at step 15 (6.8x its best)"
    assert by[("random", 0, "full budget")]["stability"] == ""
    assert "unstable at step 15" in status.table(list(by.values()))
