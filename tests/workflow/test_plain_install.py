"""The README's own install, without the optional extras (issue 42): every command the README and the
docs give a user runs from it, so a path that only a plain install takes (no TensorBoard, no MLflow,
no pytest) cannot break unseen while the test suite runs with every extra installed.

The install is the README's first command up to its ``snakemake``, run verbatim in a copy of the
tracked tree; the commands then run the tiny ``.test`` study through that environment alone (its
own ``snakemake`` and ``python`` on PATH, the suite's environment removed). The report page is
opened in Chromium where one is installed and its screenshot kept under ``test-artifacts/``."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.workflow_helpers import ARTIFACTS
from tools.report_browser import find_chromium, page_check
from tests.workflow_helpers import ROOT
from diffusion_lib.plan import files

pytestmark = pytest.mark.slow
EXTRAS = ("tensorboard", "mlflow", "pytest", "snakemake_executor_plugin_slurm")


def readme_install() -> str:
    """The README's first command (the main job) up to where it starts the study."""
    text = (ROOT / "README.md").read_text()
    command = re.search(r"## Two commands.*?```bash\n(.*?)\n```", text, re.S).group(1)
    install, _, rest = command.partition(" && snakemake")
    assert rest.startswith(" --cores"), f"the README's first command no longer runs the study: {command!r}"
    return install


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """(copy of the tree, environment whose PATH has only the plain install's venv, the .test workdir)."""
    base = tmp_path_factory.mktemp("plain")
    tree = base / "tree"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in filter(None, files.stdout.split("\0")):
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    suite_bin = str(Path(os.environ.get("VIRTUAL_ENV", "/nonexistent")) / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != suite_bin)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(PATH=path, PYTHONUNBUFFERED="1")
    proc = subprocess.run(["bash", "-c", readme_install()], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    env["PATH"] = os.pathsep.join([str(tree / ".venv/bin"), path])
    env["VIRTUAL_ENV"] = str(tree / ".venv")
    work = base / "work"
    (work / "config").mkdir(parents=True)
    shutil.copy2(tree / ".test/config/config.yaml", work / "config/config.yaml")
    return tree, env, work


def run(plain, *command: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    tree, env, work = plain
    proc = subprocess.run(list(command), cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def snakemake(plain, *args: str) -> subprocess.CompletedProcess:
    tree, _, _ = plain
    # --resources takes several values: before --cores, so that a target after it is not read as one
    return run(plain, "snakemake", "-s", str(tree / "Snakefile"), "--resources", "gpu=1", "--cores", "2", *args)


def test_the_plain_install_has_no_extras_and_the_pinned_torch(plain):
    tree, env, _ = plain
    code = ("import importlib.util as u, torch; "
            f"print(torch.__version__); print([m for m in {EXTRAS!r} if u.find_spec(m)])")
    out = run(plain, "python", "-c", code).stdout.split("\n")
    pinned = next(line.split("==")[1] for line in (tree / "envs/tested.txt").read_text().splitlines()
                  if line.startswith("torch=="))
    assert out[0].split("+")[0] == pinned and out[1] == "[]", out


def test_every_user_command_runs_from_the_plain_install(plain):
    tree, _, work = plain
    snakemake(plain)
    study = work / files.StudyFiles("test").dir
    assert (study / "report.md").read_text().splitlines()[2].startswith("**Verdict:")
    logs = [*work.glob(f"{files.RUNS_DIR}/*/train.log"), *work.glob(f"{files.RUNS_DIR}/*/*/train.log"),
            *work.glob(f"{files.RUNS_DIR}/*/trunk/*.log")]
    assert logs
    for log in logs:  # the trackers take their 'not installed' path quietly: nothing fails, nothing crashes
        text = log.read_text()
        assert "failed" not in text and "Traceback" not in text, f"{log}:\n{text[-2000:]}"
    assert any("TensorBoard streams are off" in log.read_text() for log in logs)

    snakemake(plain, "--report", "report.html")
    assert (work / "report.html").stat().st_size > 100_000

    status = run(plain, "python", "-m", "diffusion_lib.watch.status").stdout
    assert re.search(r"study test: (\d+) training jobs: \1 done\n", status), status  # every job, and all done
    assert run(plain, "python", "-m", "diffusion_lib.watch.status", "--tensorboard").stdout.startswith(
        "tensorboard --logdir_spec ")
    where = run(plain, "python", "-m", "diffusion_lib.plan.layout", "config/config.yaml").stdout
    assert files.RUNS_DIR in where

    figure = study / "figures/mse.png"
    before = figure.stat().st_mtime_ns
    snakemake(plain, "figures", "--forcerun", "plot_main", "plot_ablation", "plot_stability")
    assert figure.stat().st_mtime_ns > before
    assert "Nothing to be done" in snakemake(plain, "-n").stdout + snakemake(plain, "-n").stderr

    browser = find_chromium()
    if browser is None:
        pytest.skip("no Chromium: the report page was not opened (scripts/test.sh installs it as root)")
    page = page_check(study / "report.html", browser)
    assert page["loaded"] == page["images"] > 0 and page["first_paragraph"].startswith("Verdict:"), page
    shot = run(plain, "python", str(tree / "tools/screenshot.py"), str(study / "report.html"),
               str(ARTIFACTS / "test-study-report-page.png"), "--height", "2400").stdout
    assert "images loaded" in shot and (ARTIFACTS / "test-study-report-page.png").stat().st_size > 10_000
