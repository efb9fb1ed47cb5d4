"""Wheels for a machine without network whose Python image lacks the workflow's own packages (issue 45).

The GPU machines lent to this project have a CUDA build of torch and the scientific stack (numpy,
pandas, scipy, seaborn, ...; ``envs/device-image.txt``) but not Snakemake, jsonschema or
ema-pytorch, and they cannot reach a package index. ``python -m tools.device_wheels DEST`` lists what
the workflow needs beyond that image — the requirement closure of ``ROOTS``, read from this
environment's installed metadata, at the versions installed here (``envs/tested.txt`` pins them) — and
downloads each as a wheel for the target Python (``--python-version``, default the device's 3.12;
binary wheels for manylinux x86-64) into DEST, one file per package, no dependency resolution there.
``--list`` prints the names and versions without downloading. ``tools/gpu_workflow.sh`` installs
DEST with ``pip install --no-index --no-deps --target`` and runs the workflow.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOTS = ("ired-negative-mining",)  # this project (installed here), whose requirements are the workflow's
ROOT_DIR = Path(__file__).resolve().parents[1]
IMAGE = ROOT_DIR / "envs" / "device-image.txt"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64", "manylinux_2_24_x86_64")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages(path: Path = IMAGE) -> set[str]:
    """The device image's packages (``envs/device-image.txt``: one name per line, # comments)."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {canonical(line) for line in lines if line}


def _requirements(dist: metadata.Distribution) -> list[str]:
    """The names ``dist`` requires unconditionally on Linux (extras and other platforms left out)."""
    names = []
    for req in dist.requires or []:
        name, _, marker = req.partition(";")
        marker = marker.replace(" ", "")
        if "extra==" in marker or "sys_platform==\"win32\"" in marker or "platform_system==\"Windows\"" in marker:
            continue
        names.append(canonical(re.split(r"[<>=!~\[ (]", name.strip(), maxsplit=1)[0]))
    return names


def closure(roots: tuple[str, ...] = ROOTS, have: set[str] | None = None) -> dict[str, str]:
    """Every package the roots need that the image lacks, with the version installed here."""
    return walk(roots, have)[0]


def walk(roots: tuple[str, ...] = ROOTS, have: set[str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(what the roots need that the image lacks, what they need that the image has), each with the
    version installed here: the second is what an environment standing in for the image must hold."""
    have = image_packages() if have is None else have
    need: dict[str, str] = {}
    used: dict[str, str] = {}
    todo = [canonical(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in need or name in used:
            continue
        if name in have:
            try:
                used[name] = metadata.distribution(name).version
            except metadata.PackageNotFoundError:
                pass
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement for another Python version or platform, not installed here either
        if name not in roots:  # the project itself travels as the checkout
            need[name] = dist.version
        todo += _requirements(dist)
    return dict(sorted(need.items())), dict(sorted(used.items()))


def download(need: dict[str, str], dest: Path, python_version: str) -> None:
    """Each package of ``need`` as one wheel in ``dest`` (binary ones for manylinux x86-64). A package
    published only as source is built here into a wheel, and must come out pure Python (``py3-none-any``)."""
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    pip = [sys.executable, "-m", "pip"]
    for name, version in need.items():
        got = subprocess.run([*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
                              python_version, "--implementation", "cp", *platforms, "-d", str(dest),
                              f"{name}=={version}"], capture_output=True, text=True)
        if got.returncode == 0:
            continue
        built = subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(dest), f"{name}=={version}"],
                               capture_output=True, text=True)
        wheel = sorted(dest.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
        if built.returncode != 0 or not wheel or not wheel[0].name.endswith("-py3-none-any.whl"):
            sys.exit(f"no wheel of {name}=={version} for Python {python_version} on manylinux x86-64:\n{got.stderr}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.device_wheels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", nargs="?", default=".whl", help="folder for the wheels (default .whl, git-ignored)")
    parser.add_argument("--python-version", default="3.12", help="the target machine's Python (default 3.12)")
    parser.add_argument("--list", action="store_true", help="print what would be downloaded, download nothing")
    parser.add_argument("--image", action="store_true",
                        help="print the image's packages the workflow relies on (what a stand-in for the image needs)")
    args = parser.parse_args(argv)
    need, used = walk()
    if args.list or args.image:
        print("\n".join(f"{n}=={v}" for n, v in (used if args.image else need).items()))
        return
    download(need, Path(args.dest), args.python_version)
    size = sum(p.stat().st_size for p in Path(args.dest).glob("*.whl"))
    print(f"{len(need)} wheels for Python {args.python_version} in {args.dest} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
