import json
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from tools import bench

ROOT_KEYS = {"steps_per_s", "compute_steps_per_s", "data_ms_per_batch", "sample_ms_per_problem",
             "train_mflop_per_problem", "executed_mflop_per_problem", "sample_gflops", "device", "torch", "threads",
             "matmul_peak_gflops", "sample_fraction_of_peak", "syncs_per_step",
            "warmup_seconds", "step", "precision"}


def test_bench_runs_at_tiny_size_and_prints_one_json_object():
    proc = subprocess.run([sys.executable, "-m", "tools.bench", "--mode", "adversarial", "--batch-size", "8",
                           "--steps", "3", "--warmup", "1", "--rank", "4", "--sample-problems", "4", "--threads", "1",
                           "--device", "cpu", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ROOT_KEYS <= set(record)
    assert record["steps_per_s"] > 0 and record["device"] == "cpu" and record["threads"] == 1


def test_bench_flop_counts_order_modes():
    """Mining adds work: none < random < adversarial FLOPs per problem, none ≈ 3 passes' worth."""
    flops = {m: bench.run(m, batch_size=8, steps=1, warmup=0, device="cpu", rank=4, sample_problems=2,
                          peak=False)["train_mflop_per_problem"] for m in ("none", "random", "adversarial")}
    assert 0 < flops["none"] < flops["random"] < flops["adversarial"]


def test_bench_rejects_bad_arguments():
    proc = subprocess.run([sys.executable, "-m", "tools.bench", "--batch-size", "0"], capture_output=True,
                          text=True)
    assert proc.returncode != 0 and "--batch-size" in proc.stderr
    if not __import__("torch").cuda.is_available():
        proc = subprocess.run([sys.executable, "-m", "tools.bench", "--device", "cpu", "--cuda-graphs"],
                              capture_output=True, text=True)
        assert proc.returncode != 0 and "CUDA" in proc.stderr


CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def test_conda_env_matches_package_dependencies(root):
    """envs/ired.yaml carries every runtime dependency of pyproject.toml (snakemake itself and what only
    its HTML report needs excepted: the rules never run them)."""
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((root / "envs/ired.yaml").read_text())["dependencies"]
    conda = {_name(d) for d in env if isinstance(d, str)}
    pip = {_name(d) for item in env if isinstance(item, dict) for d in item.get("pip", [])}
    for dep in deps:
        name = _name(dep)
        if name in ("snakemake", "pygments"):
            continue
        assert CONDA_NAMES.get(name, name) in conda | pip, f"{name} missing from envs/ired.yaml"


def test_every_rule_has_a_log_and_uses_the_env(root):
    text = "".join(p.read_text() for p in (root / "workflow/rules").glob("*.smk"))
    rules = re.findall(r"^rule (\w+):", text, flags=re.M)
    bodies = re.split(r"^rule \w+:", text, flags=re.M)[1:]
    for name, body in zip(rules, bodies):
        if "output:" not in body:  # pure target rules (figures) run nothing
            continue
        assert "log:" in body, f"rule {name} has no log"
        assert "conda:" in body, f"rule {name} has no conda env"


def _conda_pins(root) -> dict[str, str]:
    env = yaml.safe_load((root / "envs/ired.yaml").read_text())["dependencies"]
    pins = {}
    for item in env:
        for dep in (item.get("pip", []) if isinstance(item, dict) else [item]):
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(==|=)?\s*([0-9][^\s]*)?", dep.strip())
            assert m, f"envs/ired.yaml: cannot read {dep!r}"
            pins[m.group(1).lower()] = m.group(3)
    return pins


def test_conda_env_pins_the_tested_versions(root):
    """envs/ired.yaml pins exactly the versions of envs/tested.txt, which are the versions installed here."""
    tested = dict(line.split("==") for line in (root / "envs/tested.txt").read_text().splitlines()
                  if line.strip() and not line.startswith("#"))
    pins = _conda_pins(root)
    for name, version in pins.items():
        if name in ("python", "pip"):
            continue
        assert version, f"envs/ired.yaml: {name} is not pinned"
        pip_name = {v: k for k, v in CONDA_NAMES.items()}.get(name, name)
        assert tested.get(pip_name) == version, f"envs/ired.yaml pins {name} {version}, envs/tested.txt {tested.get(pip_name)}"
    assert pins["python"] == "{}.{}".format(*sys.version_info[:2]), "envs/ired.yaml pins another Python than the tests'"
    for name, version in tested.items():
        installed = metadata.version(name).split("+")[0]  # torch's local label (+cpu, +cu12x) is a build, not a version
        assert installed == version, (f"{name} {installed} is installed but envs/tested.txt says {version}: "
                                      "install with the README's test command (pip install -c envs/tested.txt ...)")


def test_snakemake_files_are_snakefmt_clean(root):
    proc = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow/"], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_non_editable_install_loads_a_config(root, tmp_path):
    """The schema ships inside the wheel: a plain install validates a config from any directory."""
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "wheel"), str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    wheel = next((tmp_path / "wheel").glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        assert "diffusion_lib/settings/config.schema.yaml" in zf.namelist()
        zf.extractall(tmp_path / "site")
    code = ("import diffusion_lib, yaml; from diffusion_lib.plan.config import load_config; "
            f"print(diffusion_lib.__file__); load_config(yaml.safe_load(open({str(root / 'config/config.yaml')!r})))")
    # the extracted wheel goes first on sys.path, before the editable install of this checkout
    out = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); {code}"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(tmp_path / "site")


def test_bench_steady_state_step_reads_nothing_from_the_device():
    record = bench.run("adversarial", batch_size=8, steps=10, warmup=2, device="cpu", rank=3, sample_problems=8,
                       peak=False)
    assert record["syncs_per_step"] == 0 and record["step"] == "eager" and record["steps_per_s"] > 0


def test_the_barrier_waits_until_every_process_has_reached_it(tmp_path):
    """tools.bench's barrier (processes sharing a card time one window): it lets a process through once
    K have marked themselves ready, and names the folder when they do not come."""
    (tmp_path / "ready-1").touch()  # another process, already waiting
    bench.wait_for_each_other(str(tmp_path), 2, timeout=5)
    assert len(list(tmp_path.glob("ready-*"))) == 2
    with pytest.raises(TimeoutError, match="3 processes did not all reach the barrier"):
        bench.wait_for_each_other(str(tmp_path), 3, timeout=0.05)


def test_gpu_check_script_runs_end_to_end_on_a_cpu(root, tmp_path):
    """The prepared GPU script, at toy size on the CPU, so a lent GPU's minutes are not spent on a typo."""
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(root / "tools/gpu_check.py"), "--out", str(out), "--device", "cpu", "--rank", "4",
                           "--batch-size", "16", "--steps", "10", "--study-steps", "20", "--seeds", "2",
                           "--impls", "eager", "--packs", "1,2", "--paper-seconds", "2",
                           "--jobs", "1,2", "--jobs-steps", "40", "--sections", "bench,packs,jobs,paper,tf32,study", "--budget-s", "3600"],  # every section, however slow the machine
                          capture_output=True, text=True, cwd=root,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {r["mode"] for r in result["bench"]} == {"none", "random", "adversarial"}
    assert all("steps_per_s" in r for r in result["bench"]), result["bench"]
    assert "fp32" in result["tf32_report"] and len(result["study"]["test_mse"]["tf32"]) == 2
    assert "tf32_vs_fp32" in result["study"] and not result["skipped"]
    # every pack by the closed form, and each pack of two by the functional gradient beside it
    assert sorted((r["mode"], r["pack"], r["gradients"]) for r in result["packs"] if "run_steps_per_s" in r) == sorted(
        [(m, p, "auto") for m in ("none", "random", "adversarial") for p in (1, 2)]
        + [(m, 2, "autograd") for m in ("none", "random", "adversarial")])
    assert result["paper_study_gpu_hours"]["hours"] > 0
    # one and two processes at once, each mode: every process's rate, the card's sum
    assert sorted((r["mode"], r["jobs"], len(r["per_job_steps_per_s"])) for r in result["jobs"]) == sorted(
        (m, k, k) for m in ("adversarial", "none") for k in (1, 2))
    # the processes waited for each other: their timed windows overlap
    assert all(r["overlap"] > 0 for r in result["jobs"] if r["jobs"] == 2), result["jobs"]
    assert set(result["jobs_per_gpu"]) == {"adversarial", "none"}
    train_pack = result["paper_study_gpu_hours"]["train_pack"]
    assert train_pack == 1 or set(train_pack) <= {"none", "random", "adversarial"}
    assert result["paper"]["status"] == "completed" and result["paper"]["curve"][-1]["val_mse_ema"] > 0
    assert result["tf32_report"]["model"].startswith("the paper run") and not result["errors"]
