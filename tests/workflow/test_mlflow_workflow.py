"""The ``.test`` study tracked by a real ``mlflow server`` (SQLite backend store, 127.0.0.1, a free
port): one MLflow run per training run with its identity and its curve's final validation MSE,
the study's parent run with the verdict; and a server stopped mid-study: the study completes and
its results equal an untracked study's."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time

import pandas as pd
import pytest
import torch

from tools.local_server import mlflow_server, stop
from diffusion_lib.settings.mining import MiningConfig
from diffusion_lib.watch.mlflow_client import flat_params
from diffusion_lib.settings.run_config import train_config
from diffusion_lib.settings.lr_schedule import decay_start
from tests.workflow_helpers import ROOT, SNAKEMAKE, copy_workdir, layout_of, lose_runs, make_workdir, planned, set_strategies, smk, study_dir
from diffusion_lib.plan import files

mlflow = pytest.importorskip("mlflow", reason="the tracking extra is not installed (pip install -e '.[tracking]')")
pytestmark = pytest.mark.slow


class Server:
    """A local ``mlflow server`` with a SQLite store in ``folder`` (tools.local_server)."""

    def __init__(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        self.log = open(folder / "server.log", "w")
        self._context = mlflow_server(f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts", self.log)
        self.uri, self.proc = self._context.__enter__()

    def stop(self):
        stop(self.proc)
        self.log.close()


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "mlflow")
    yield s
    s.stop()


def _history(client, run, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


def _final_val(curve_path) -> float:
    values = pd.read_csv(curve_path)["val_mse_ema"].dropna()
    return float(values.iloc[-1])


def test_a_tracked_study_has_one_mlflow_run_per_training_run_and_the_study_as_their_parent(
        tmp_path, server, monkeypatch):
    # two arms, the declared ladder only (rungs 10 and 20, trunk pieces to 8 and 16): every kind of job
    workdir = make_workdir(tmp_path / "study", {"sweeps": [], "comparison": {"ladder": {"rungs": [0.5, 1.0],
                                                                                         "compute_matched": False}}})
    set_strategies(workdir, {"baseline": {"mode": "none"}, "adversarial": {"mode": "adversarial", "opt_steps": 2}})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    smk(workdir, timeout=1200)
    client = mlflow.MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("test")  # the study's name
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    (study,) = [r for r in runs if r.data.tags.get("ired.role") == "study"]
    training = {r.data.tags["run"]: r for r in runs if r.data.tags.get("ired.role") != "study"}
    layout = layout_of(workdir)
    specs = {spec.run: spec for spec in layout.runs}
    assert set(training) == set(specs) and len(specs) == 4  # one MLflow run per training run, none twice
    for name, run in training.items():
        spec = specs[name]
        assert run.info.run_name == f"{spec.strategy}/seed{spec.seed}"
        assert run.info.status == "FINISHED"
        assert run.data.tags["seed"] == str(spec.seed) and run.data.tags["mode"] == spec.mode
        assert run.data.tags["torch"] == str(torch.__version__) and run.data.tags["device"] == "cpu"
        # params: exactly what the run's key hashes (its identity at the full budget, the validation split)
        identity = train_config(spec.train, seed=spec.seed, rank=4, id_eps=0.5).identity(
            MiningConfig.from_mapping(spec.mining))
        assert run.data.params == flat_params({**identity, "val": layout.splits["val_id"]})
        assert run.data.params["steps"] == "20" and run.data.params["mining.mode"] == spec.mode
        assert run.data.tags["mlflow.parentRunId"] == study.info.run_id
        curve = pd.read_csv(workdir / spec.dir / "curve.csv")
        for column, key in (("loss", "loss/total"), ("val_mse_ema", "val/mse_ema")):
            # the trunk pieces and the full budget's branch log one curve: curve.csv's, each step once
            assert _history(client, run, key) == [(int(r.step), float(getattr(r, column)))
                                                  for r in curve.dropna(subset=[column]).itertuples()], key
        assert _history(client, run, "val/mse_ema")[-1][1] == _final_val(workdir / spec.dir / "curve.csv")
        for rung in (workdir / spec.dir).glob("rung-*"):  # each smaller rung: its decay rows under rung-<b>/
            rows = pd.read_csv(rung / "curve.csv")
            start = decay_start(int(rung.name.removeprefix("rung-")), 0.2)  # its branch point (.test: decay 0.2)
            rows = rows[rows.step > start]
            assert _history(client, run, f"{rung.name}/loss/total") == [(int(r.step), float(r.loss))
                                                                        for r in rows.itertuples()], rung.name
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"curve.csv", "status.json", "trunk"}
    verdict = json.loads((study_dir(workdir) / "tables" / "verdict.json").read_text())
    assert study.data.tags["verdict"] == verdict["paragraph"]
    assert study.data.tags["ired.outcome"] == verdict["outcome"]
    assert {"report.html", "verdict.json", "contrasts.csv"} <= {a.path for a in client.list_artifacts(study.info.run_id)}
    primary = [k for k in study.data.metrics if k.endswith("/estimate")]
    assert primary and all(math.isfinite(study.data.metrics[k]) for k in primary)


def _models(workdir):
    return {p.relative_to(workdir).as_posix(): torch.load(p, map_location="cpu", weights_only=False)
            for p in sorted((workdir / files.RUNS_DIR).rglob("model.pt"))}


def test_a_server_stopped_mid_study_changes_nothing_the_study_computes(tmp_path, server, finished):
    """A copy of the finished untracked study loses two runs, which retrain tracked; the server stops
    once they train: every model and table equals the untracked study's."""
    untracked, _ = finished
    workdir = copy_workdir(untracked, tmp_path / "study")
    lost = lose_runs(workdir)
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--resources", "gpu=1", "--cores", "2"]
    log = open(tmp_path / "snakemake.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_TRACKING_URI": server.uri},
                            start_new_session=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and not any((workdir / r.dir / "trunk").glob("step-*.ckpt") for r in lost):
            time.sleep(0.2)
        assert proc.poll() is None, "the study ended before the server could be stopped"
        server.stop()  # training jobs are running or queued
        assert proc.wait(timeout=1500) == 0, (tmp_path / "snakemake.log").read_text()[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    logs = [p.read_text() for r in lost for p in (workdir / r.dir).rglob("*.log")]
    assert any("MLflow tracking at" in text for text in logs)  # jobs after the stop said so
    assert all(text.count("WARNING") <= 1 for text in logs)  # once each
    a, b = _models(untracked), _models(workdir)
    assert a.keys() == b.keys() and a
    for path in a:
        for part in ("model", "ema"):
            for name, tensor in a[path][part].items():
                assert torch.equal(tensor, b[path][part][name]), f"{path} {part}.{name}"
    for table in ("endpoints", "contrasts"):
        assert pd.read_csv(study_dir(untracked) / "tables" / f"{table}.csv").equals(
            pd.read_csv(study_dir(workdir) / "tables" / f"{table}.csv")), table
    for key in ("sentence", "outcome", "contrasts"):
        assert json.loads((study_dir(untracked) / "tables" / "verdict.json").read_text())[key] == \
            json.loads((study_dir(workdir) / "tables" / "verdict.json").read_text())[key]
    assert planned(workdir) == {}  # tracking is not part of any output's provenance
