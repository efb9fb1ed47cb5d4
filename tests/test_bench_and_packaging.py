import json
import re
import subprocess
import sys
import tomllib

import yaml

from diffusion_lib import bench

ROOT_KEYS = {"steps_per_s", "compute_steps_per_s", "data_ms_per_batch", "sample_ms_per_problem",
             "train_mflop_per_problem", "device", "torch", "threads", "matmul_peak_gflops"}


def test_bench_runs_at_tiny_size_and_prints_one_json_object():
    proc = subprocess.run([sys.executable, "-m", "diffusion_lib.bench", "--mode", "adversarial", "--batch-size", "8",
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
    proc = subprocess.run([sys.executable, "-m", "diffusion_lib.bench", "--batch-size", "0"], capture_output=True,
                          text=True)
    assert proc.returncode != 0 and "--batch-size" in proc.stderr


CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def test_conda_env_matches_package_dependencies(root):
    """envs/ired.yaml carries every runtime dependency of pyproject.toml (snakemake itself excepted)."""
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((root / "envs/ired.yaml").read_text())["dependencies"]
    conda = {_name(d) for d in env if isinstance(d, str)}
    pip = {_name(d) for item in env if isinstance(item, dict) for d in item.get("pip", [])}
    for dep in deps:
        name = _name(dep)
        if name == "snakemake":
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
