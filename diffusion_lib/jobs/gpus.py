"""Which GPU a job runs on: one slot per (GPU, share), claimed with a lock file, released on any exit.

With ``--resources gpu=N`` Snakemake starts up to N GPU jobs at once but does not say which card
each should use, so without this every job would open ``cuda:0``. :func:`claim_gpu` takes the first
free slot among ``jobs_per_gpu`` slots per visible GPU by locking ``<lock_dir>/gpu<i>-slot<k>.lock``
with ``flock`` and sets ``CUDA_VISIBLE_DEVICES`` to that GPU before CUDA is initialised. The kernel
drops an ``flock`` when its process ends, however it ends (a crash or ``kill -9`` included), so a
slot is never left taken. Under SLURM the allocation already chose the GPUs: a job with
``SLURM_JOB_ID`` and ``CUDA_VISIBLE_DEVICES`` set keeps them and claims nothing.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator, MutableMapping

log = logging.getLogger(__name__)


def visible_gpus(env: MutableMapping[str, str] | None = None) -> list[str]:
    """GPU ids a job may use: ``CUDA_VISIBLE_DEVICES`` if set, else every GPU ``nvidia-smi -L`` lists."""
    env = os.environ if env is None else env
    if env.get("CUDA_VISIBLE_DEVICES") is not None:
        return [g.strip() for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip() and g.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


@contextlib.contextmanager
def claim_gpu(lock_dir: str | os.PathLike, *, jobs_per_gpu: int = 1, gpus: list[str] | None = None,
              env: MutableMapping[str, str] | None = None, wait_s: float = 24 * 3600, poll_s: float = 1.0
              ) -> Iterator[str | None]:
    """Hold one GPU slot for the block and point ``CUDA_VISIBLE_DEVICES`` at its GPU.

    Yields the GPU id, or None when there is no GPU to claim (then nothing changes). ``gpus``
    (default :func:`visible_gpus`) and ``env`` (default ``os.environ``) exist for tests. Waits up to
    ``wait_s`` seconds for a slot, then raises ``TimeoutError`` naming the lock folder.
    """
    env = os.environ if env is None else env
    if env.get("SLURM_JOB_ID") and env.get("CUDA_VISIBLE_DEVICES"):
        log.info("SLURM allocation: keeping CUDA_VISIBLE_DEVICES=%s", env["CUDA_VISIBLE_DEVICES"])
        yield env["CUDA_VISIBLE_DEVICES"]
        return
    gpus = visible_gpus(env) if gpus is None else gpus
    if not gpus:
        yield None
        return
    folder = Path(lock_dir)
    folder.mkdir(parents=True, exist_ok=True)
    slots = [(g, k) for k in range(jobs_per_gpu) for g in gpus]  # spread over GPUs before sharing one
    deadline = time.monotonic() + wait_s
    while True:
        for gpu, k in slots:
            fh = open(folder / f"gpu{gpu}-slot{k}.lock", "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            saved = env.get("CUDA_VISIBLE_DEVICES")
            env["CUDA_VISIBLE_DEVICES"] = gpu
            log.info("claimed GPU %s (slot %d of %d)", gpu, k + 1, jobs_per_gpu)
            try:
                yield gpu
            finally:
                if saved is None:
                    env.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    env["CUDA_VISIBLE_DEVICES"] = saved
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU slot in {folder} after {wait_s:.0f} s ({len(slots)} slots: "
                               f"{len(gpus)} GPUs × resources.jobs_per_gpu={jobs_per_gpu})")
        time.sleep(poll_s)


def gpu_slot(device: str, lock_dir: str | os.PathLike, jobs_per_gpu: int = 1) -> contextlib.AbstractContextManager:
    """The GPU claim a job with config ``device`` needs: a slot for ``auto`` and ``cuda`` (when
    GPUs exist), nothing for ``cpu`` or an explicit ``cuda:N`` (the user chose the card)."""
    if device in ("auto", "cuda"):
        return claim_gpu(lock_dir, jobs_per_gpu=jobs_per_gpu)
    return contextlib.nullcontext()
