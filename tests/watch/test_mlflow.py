"""MLflow tracking of training jobs (in-process, a SQLite store): one MLflow run per training run
holding its curve, identity and status; a resumed job continues it without duplicated steps; a
tracking server that is down or hangs costs a job one warning and nothing else. The workflow
with a real ``mlflow server`` is tests/workflow/test_mlflow_workflow.py."""
from __future__ import annotations

import logging
import math
import socket
import time

import pytest

from diffusion_lib.watch import mlflow_client, mlflow_runs
from diffusion_lib.ired.data import make_heldout
from diffusion_lib.train.engine import Engine
from tools.local_server import free_port
from diffusion_lib.watch.mlflow_client import MlflowSettings
from diffusion_lib.train.progress import watched_row
from diffusion_lib.settings.run_config import TrainConfig
from diffusion_lib.watch.tensorboard import SCALARS
from diffusion_lib.watch.job_tracking import JobTracking

mlflow = pytest.importorskip("mlflow", reason="the tracking extra is not installed (pip install -e '.[tracking]')")

CFG = TrainConfig(steps=12, batch_size=8, lr=1e-3, rank=3, eval_every=6, val_size=8, log_every=3,
                  checkpoint_every=6, measure_flops=False, seed=1)
MINING = {"mode": "adversarial", "opt_steps": 2}
NAMES = ["adversarial-seed1-0123456789ab", "adversarial-seed2-0123456789ab"]


def _runs(tmp_path, n=1, steps=None):
    return [{"run": NAMES[i], "seed": 1 + i, "dir": str(tmp_path / NAMES[i]),
             **({"steps": steps} if steps else {}),
             "resume_path": str(tmp_path / NAMES[i] / (f"rung-{steps}" if steps else "") / "resume.ckpt")}
            for i in range(n)]


def _train(tmp_path, uri, n=1, steps=None, kill_at=None, settings=None):
    """Train ``n`` runs (a pack when n > 1) tracked at ``uri``; ``kill_at``: die after that step's row."""
    runs = _runs(tmp_path, n, steps)
    cfg = TrainConfig(**{**CFG.__dict__, "steps": steps or CFG.steps})
    configs = [TrainConfig(**{**cfg.__dict__, "seed": r["seed"]}) for r in runs]
    settings = settings or MlflowSettings(uri, "unit", "unit", {NAMES[0]: "adversarial/seed1", NAMES[1]: "adversarial/seed2"})
    with JobTracking(runs, full_steps=CFG.steps, mlflow=settings, params=[{"lr": cfg.lr, "seed": r["seed"],
                     "mining": MINING} for r in runs], tags={"mode": "adversarial"}) as tracking:
        engine = Engine.seeded(configs, MINING, make_heldout(8, 3, 0.5, seed=5), resume_paths=[r["resume_path"] for r in runs],
                               progress=False, trackers=tracking.trackers)
        if kill_at is not None:
            original = engine._log_interval

            def killed(step, *args):
                original(step, *args)
                if step == kill_at:
                    raise SystemExit(137)
            engine._log_interval = killed
        results = engine.train()
        for i, result in enumerate(results):
            tracking.finish(i, result.curve, [], result.status)  # a rung's status is not the run's
    return results


def _client(uri):
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("unit")
    return client, {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


def _history(client, run, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


def _uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_each_run_of_a_pack_is_one_mlflow_run_with_its_curve_identity_and_status(tmp_path):
    results = _train(tmp_path, _uri(tmp_path), n=2)
    client, runs = _client(_uri(tmp_path))
    assert set(runs) == {"adversarial/seed1", "adversarial/seed2"}
    for i, result in enumerate(results):
        run = runs[f"adversarial/seed{i + 1}"]
        assert run.info.status == "FINISHED" and run.data.tags["ired.status"] == "completed"
        assert run.data.params == {"lr": "0.001", "seed": str(i + 1), "mining.mode": "adversarial",
                                   "mining.opt_steps": "2"}
        assert {k: run.data.tags[k] for k in ("seed", "run", "run_key", "strategy", "mode", "study")} == {
            "seed": str(i + 1), "run": NAMES[i], "run_key": "0123456789ab", "strategy": "adversarial",
            "mode": "adversarial", "study": "unit"}
        watched = [watched_row(result.curve[:k + 1]) for k in range(len(result.curve))]
        for key, tag in SCALARS.items():
            want = [(row["step"], row[key]) for row in watched if row.get(key) is not None and math.isfinite(row[key])]
            assert _history(client, run, tag) == want, tag
        assert _history(client, run, "val/mse_ema")[-1][1] == result.curve[-1]["val_mse_ema"]
        kept = mlflow_client.json.loads((tmp_path / NAMES[i] / "mlflow.json").read_text())
        assert kept == {f"{_uri(tmp_path)} unit": run.info.run_id}


def test_a_rung_logs_beside_the_runs_curve_under_its_own_prefix(tmp_path):
    _train(tmp_path, _uri(tmp_path))
    (rung,) = _train(tmp_path, _uri(tmp_path), steps=6)
    client, runs = _client(_uri(tmp_path))
    assert list(runs) == ["adversarial/seed1"]  # the same MLflow run
    run = runs["adversarial/seed1"]
    assert _history(client, run, "rung-6/loss/total") == [(r["step"], r["loss"]) for r in rung.curve]
    assert [s for s, _ in _history(client, run, "loss/total")] == [3, 6, 9, 12]


def test_a_killed_and_resumed_job_continues_its_mlflow_run_with_every_step_once(tmp_path):
    with pytest.raises(SystemExit):
        _train(tmp_path, _uri(tmp_path), kill_at=9)  # rows 3, 6, 9 logged; the newest checkpoint is step 6's
    client, runs = _client(_uri(tmp_path))
    assert [s for s, _ in _history(client, runs["adversarial/seed1"], "loss/total")] == [3, 6, 9]
    (result,) = _train(tmp_path, _uri(tmp_path))
    assert result.resumed_from == 6
    client, runs = _client(_uri(tmp_path))
    assert list(runs) == ["adversarial/seed1"]
    assert _history(client, runs["adversarial/seed1"], "loss/total") == [(r["step"], r["loss"]) for r in result.curve]


def _numbers(curve):
    """A curve's rows without their timings (NaN made comparable)."""
    timings = ("train_seconds", "train_cpu_seconds", "steps_per_s")
    return [{k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items() if k not in timings}
            for row in curve]


@pytest.mark.parametrize("server", ["down", "hangs"])
def test_a_tracking_server_that_is_down_or_hangs_costs_a_job_one_warning_and_nothing_else(
        tmp_path, monkeypatch, caplog, server):
    untracked = Engine.seeded([CFG], MINING, make_heldout(8, 3, 0.5, seed=5), progress=False).train()[0]
    monkeypatch.setattr(mlflow_client, "FLUSH_SECONDS", 1.0)
    listener = socket.socket()
    if server == "hangs":  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
    else:
        port = free_port()
    caplog.set_level(logging.INFO, logger="diffusion_lib.watch.mlflow_client")
    closing = []
    original_close = mlflow_client.Sink.close

    def timed_close(self):
        started = time.monotonic()
        original_close(self)
        closing.append(time.monotonic() - started)
    monkeypatch.setattr(mlflow_client.Sink, "close", timed_close)
    try:
        (tracked,) = _train(tmp_path / "tracked", f"http://127.0.0.1:{port}")
    finally:
        listener.close()
    assert _numbers(tracked.curve) == _numbers(untracked.curve)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "MLflow tracking at" in warnings[0].getMessage()
    # no request holds training up (a 5 s request timeout would show), and the job's end waits at most FLUSH_SECONDS
    assert tracked.train_seconds < untracked.train_seconds + 2.5, (tracked.train_seconds, untracked.train_seconds)
    assert closing and closing[0] < 1.0 + 0.5
    assert not (tmp_path / "tracked" / NAMES[0] / "mlflow.json").exists()


def test_a_run_retrained_from_step_0_gets_a_new_mlflow_run_and_the_old_one_is_superseded(tmp_path):
    _train(tmp_path, _uri(tmp_path))
    old = mlflow_client.json.loads((tmp_path / NAMES[0] / "mlflow.json").read_text())
    for f in (tmp_path / NAMES[0]).glob("resume.ckpt*"):  # a finished job drops them (jobs.train)
        f.unlink()
    (result,) = _train(tmp_path, _uri(tmp_path))  # the same folder from scratch, as after a code change
    new = mlflow_client.json.loads((tmp_path / NAMES[0] / "mlflow.json").read_text())
    assert old.keys() == new.keys() and old != new
    client = mlflow.MlflowClient(_uri(tmp_path))
    (scope,) = old
    superseded, current = client.get_run(old[scope]), client.get_run(new[scope])
    assert superseded.data.tags["ired.superseded_by"] == new[scope] and superseded.info.status == "KILLED"
    assert _history(client, current, "loss/total") == [(r["step"], r["loss"]) for r in result.curve]


def test_a_run_the_server_lost_is_replaced_and_rows_it_missed_are_sent_at_the_end(tmp_path, monkeypatch):
    _train(tmp_path, _uri(tmp_path))
    client, runs = _client(_uri(tmp_path))
    client.delete_run(runs["adversarial/seed1"].info.run_id)  # a reset store or a run deleted in the UI
    original = mlflow_runs.RunTracker.log

    def lossy(self, row):  # the server misses the step-6 row
        if row["step"] != 6:
            original(self, row)
    monkeypatch.setattr(mlflow_runs.RunTracker, "log", lossy)
    (rung,) = _train(tmp_path, _uri(tmp_path), steps=6)  # a rung: continues the stored run (if alive)
    client, runs = _client(_uri(tmp_path))
    assert list(runs) == ["adversarial/seed1"]  # the deleted one is not listed; a new one holds the rung
    assert _history(client, runs["adversarial/seed1"], "rung-6/loss/total") == [(r["step"], r["loss"]) for r in rung.curve]
