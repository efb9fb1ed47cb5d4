#!/usr/bin/env bash
# Install the project into the active Python environment the way the README's numbers were produced:
# torch 2.13.0 (the CPU build on a machine without an NVIDIA GPU, PyPI's CUDA build on one with a GPU),
# then the project with every dependency pinned to envs/tested.txt. An optional argument names extras,
# e.g. `bash scripts/install.sh test,slurm,tracking` (the README's test command).
# A torch 2.13.0 already installed is kept (CI installs it first from a local wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
TORCH=$(awk -F'==' '$1 == "torch" {print $2}' envs/tested.txt)
PY=${PYTHON:-python}

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "install.sh: Python 3.11 or newer is needed (the pinned numpy, pandas and scipy of envs/tested.txt);" \
         "this is $("$PY" --version 2>&1); create the venv with python3.11 or newer" >&2
    exit 1
fi
have=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
if [ "$have" = "$TORCH" ]; then
    echo "install.sh: torch $TORCH is already installed"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "install.sh: an NVIDIA GPU is present: torch $TORCH, CUDA build (PyPI)"
    "$PY" -m pip install "torch==$TORCH"
else
    # torch==X matches X+cpu too, and pip takes the highest match: the CPU index's build wins
    echo "install.sh: no NVIDIA GPU: torch $TORCH, CPU build (download.pytorch.org/whl/cpu)"
    "$PY" -m pip install "torch==$TORCH" --extra-index-url https://download.pytorch.org/whl/cpu
fi
"$PY" -m pip install -c envs/tested.txt -e ".${extras:+[$extras]}"
