"""Local web servers for watching a study (TensorBoard, MLflow) started by scripts and tests:
a free port on 127.0.0.1, waiting until a server answers, and a local ``mlflow server``."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, timeout: float = 120.0, process: subprocess.Popen | None = None) -> None:
    """Return once ``url`` answers; raise if ``timeout`` seconds pass or ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the server exited ({process.returncode}) before {url} answered")
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


@contextmanager
def mlflow_server(store: str, artifacts: str | Path, log: IO[str] | int = subprocess.DEVNULL,
                  timeout: float = 180.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """``mlflow server`` over the backend ``store`` (``sqlite:///…``) with its artifacts in
    ``artifacts``, on a free local port, without MLflow 3's GenAI job workers: yields (its URI, its
    process) once it answers, and stops it with its workers on leaving."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
                             "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{uri}/health", timeout, proc)
        yield uri, proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started in its own session, with every process it started."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
