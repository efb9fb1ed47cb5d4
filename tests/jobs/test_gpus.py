"""GPU slots without GPUs: a faked list of device ids, lock files, and a process killed while holding one."""
from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time

import pytest

from diffusion_lib.jobs.gpus import claim_gpu, gpu_slot, visible_gpus
from tests.workflow_helpers import ROOT


def test_jobs_spread_over_gpus_and_restore_the_environment(tmp_path):
    env: dict[str, str] = {}
    with claim_gpu(tmp_path, gpus=["0", "1"], env=env) as first:
        assert first == "0" and env["CUDA_VISIBLE_DEVICES"] == "0"
        inner: dict[str, str] = {}
        with claim_gpu(tmp_path, gpus=["0", "1"], env=inner) as second:
            assert second == "1" and inner["CUDA_VISIBLE_DEVICES"] == "1"
        with pytest.raises(TimeoutError, match="no free GPU slot"):
            with claim_gpu(tmp_path, gpus=["0"], env={}, wait_s=0.2, poll_s=0.05):
                pass
    assert "CUDA_VISIBLE_DEVICES" not in env
    with claim_gpu(tmp_path, gpus=["0", "1"], env={}) as again:  # released: the first slot again
        assert again == "0"


def test_several_jobs_share_a_gpu_when_configured(tmp_path):
    with contextlib.ExitStack() as stack:
        got = [stack.enter_context(claim_gpu(tmp_path, gpus=["0"], jobs_per_gpu=3, env={})) for _ in range(3)]
        assert got == ["0", "0", "0"]
        with pytest.raises(TimeoutError):
            stack.enter_context(claim_gpu(tmp_path, gpus=["0"], jobs_per_gpu=3, env={}, wait_s=0.1, poll_s=0.05))


def test_a_killed_job_releases_its_slot(tmp_path):
    code = ("import sys, time; from diffusion_lib.jobs.gpus import claim_gpu\n"
            f"with claim_gpu({str(tmp_path)!r}, gpus=['0'], env={{}}):\n"
            "    print('held', flush=True); time.sleep(120)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT)
    assert child.stdout.readline().strip() == "held"
    with pytest.raises(TimeoutError):
        with claim_gpu(tmp_path, gpus=["0"], env={}, wait_s=0.2, poll_s=0.05):
            pass
    child.send_signal(signal.SIGKILL)
    child.wait()
    start = time.monotonic()
    with claim_gpu(tmp_path, gpus=["0"], env={}, wait_s=5, poll_s=0.05) as gpu:
        assert gpu == "0" and time.monotonic() - start < 5


def test_slurm_allocations_and_cpu_jobs_are_left_alone(tmp_path):
    env = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "3"}
    with claim_gpu(tmp_path / "locks", gpus=["0", "1"], env=env) as gpu:
        assert gpu == "3" and env["CUDA_VISIBLE_DEVICES"] == "3"
    assert not (tmp_path / "locks").exists()
    with claim_gpu(tmp_path, gpus=[], env={}) as gpu:
        assert gpu is None
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,5"}) == ["2", "5"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    for device in ("cpu", "cuda:1"):
        with gpu_slot(device, tmp_path / "none") as gpu:
            assert gpu is None
    assert not (tmp_path / "none").exists()
