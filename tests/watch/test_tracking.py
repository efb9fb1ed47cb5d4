"""TensorBoard streams: what a training job writes reads back (with tensorboard's own reader) equal
to its learning curve, a killed and resumed run shows every step once, and the status command
prints the tensorboard command of a study."""
from __future__ import annotations

import math

import pytest

from diffusion_lib.ired.data import make_heldout
from diffusion_lib.train.engine import Engine
from diffusion_lib.train.progress import watched_row
from diffusion_lib.settings.run_config import TrainConfig
from diffusion_lib.watch.tensorboard import SCALARS, TensorBoardStream, read_stream
from diffusion_lib.plan import files
from tests.workflow_helpers import ROOT

pytest.importorskip("tensorboard", reason="the tracking extra is not installed (pip install -e '.[tracking]')")

CFG = TrainConfig(steps=12, batch_size=8, lr=1e-3, rank=3, eval_every=6, val_size=8, log_every=3,
                  checkpoint_every=6, measure_flops=False, seed=1, validate_raw=True)


def _engine(tmp_path, n=1, cfg=CFG):
    configs = [cfg if i == 0 else cfg.__class__(**{**cfg.__dict__, "seed": cfg.seed + i}) for i in range(n)]
    return Engine.seeded(configs, {"mode": "adversarial", "opt_steps": 2}, make_heldout(8, 3, 0.5, seed=5),
                         resume_paths=[tmp_path / f"run{i}" / "resume.ckpt" for i in range(n)], progress=False,
                         trackers=[TensorBoardStream(tmp_path / f"run{i}" / "tb") for i in range(n)])


def _assert_stream_equals_curve(logdir, curve):
    stream = read_stream(logdir)
    # the trackers also get each row's validation MSE over its best so far (issue 34: instability, live)
    curve = [watched_row(curve[:k + 1]) for k in range(len(curve))]
    for key, tag in SCALARS.items():
        want = [(row["step"], row[key]) for row in curve if key in row and math.isfinite(row[key])]
        assert stream.get(tag, []) == want, tag
    assert {"loss/total", "val/mse_ema", "val/mse_raw", "mining/acceptance", "optim/clip_frac"} <= set(stream)


@pytest.mark.parametrize("n", [1, 2])
def test_a_stream_reads_back_equal_to_the_learning_curve(tmp_path, n):
    results = _engine(tmp_path, n).train()
    for i, result in enumerate(results):
        assert [row["step"] for row in result.curve] == [3, 6, 9, 12]
        _assert_stream_equals_curve(tmp_path / f"run{i}" / "tb", result.curve)


def test_a_killed_and_resumed_run_shows_every_step_once(tmp_path):
    engine = _engine(tmp_path)
    original = engine._log_interval

    def killed_after_step_9(step, *args):
        original(step, *args)
        if step == 9:  # its step-9 row is written; its newest checkpoint is step 6's
            raise SystemExit(137)

    engine._log_interval = killed_after_step_9
    with pytest.raises(SystemExit):
        engine.train()
    assert [s for s, _ in read_stream(tmp_path / "run0" / "tb")["loss/total"]] == [3, 6, 9]
    again = _engine(tmp_path)
    (result,) = again.train()
    assert result.resumed_from == 6
    assert [s for s, _ in read_stream(tmp_path / "run0" / "tb")["loss/total"]] == [3, 6, 9, 12]
    _assert_stream_equals_curve(tmp_path / "run0" / "tb", result.curve)


def test_the_status_command_prints_the_studys_tensorboard_command(capsys, monkeypatch):
    from diffusion_lib.watch import status

    monkeypatch.chdir(ROOT)
    status.main(["--configfile", ".test/config/config.yaml", "--tensorboard"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("tensorboard --logdir_spec ")
    entries = dict(e.split(":", 1) for e in line.split(" ", 2)[2].split(","))
    assert "baseline/seed0" in entries and all(v.startswith(files.RUNS_DIR + "/") for v in entries.values())


def test_a_failing_tracker_is_dropped_with_a_warning_and_never_changes_training(tmp_path, caplog):
    class Broken:
        def __init__(self):
            self.rows = []

        def start(self, step):
            pass

        def log(self, row):
            row["loss"] = -1.0  # a tracker gets a copy: this must not reach the curve
            self.rows.append(row["step"])
            if row["step"] == 6:
                raise OSError("disk full")

        def close(self):
            pass

    broken = Broken()
    plain = Engine.seeded([CFG], {"mode": "adversarial", "opt_steps": 2}, make_heldout(8, 3, 0.5, seed=5),
                          progress=False).train()[0]
    watched = Engine.seeded([CFG], {"mode": "adversarial", "opt_steps": 2}, make_heldout(8, 3, 0.5, seed=5),
                            progress=False, trackers=[broken]).train()[0]
    assert broken.rows == [3, 6]  # dropped after it failed
    assert "its tracker failed in log" in caplog.text
    timings = ("train_seconds", "train_cpu_seconds", "steps_per_s")
    assert [{k: v for k, v in r.items() if k not in timings} for r in watched.curve] == \
        [{k: v for k, v in r.items() if k not in timings} for r in plain.curve]


def test_without_tensorboard_the_stream_is_off_once_and_never_fails(tmp_path, monkeypatch, caplog):
    """The README's plain install has no tracking extra: the stream takes its 'not installed' path
    (it once raised NameError there, turning every job's tracker off with a crash line)."""
    import builtins
    import logging

    from diffusion_lib.watch import tensorboard as tb

    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    monkeypatch.setattr(tb, "_warned", False)
    with caplog.at_level(logging.INFO, logger=tb.__name__):
        for _ in range(2):
            stream = tb.TensorBoardStream(tmp_path / "tb")
            stream.start(0)
            stream.log({"step": 1, "loss": 0.5})
    notes = [r for r in caplog.records if "TensorBoard streams are off" in r.getMessage()]
    assert len(notes) == 1 and stream.writer is None and not (tmp_path / "tb").exists()
