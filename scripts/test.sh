#!/usr/bin/env bash
# The project's test command (README "Run the tests"): unit tests, the end-to-end workflow tests,
# and, where SLURM can be installed (root with apt), the end-to-end run through a local SLURM cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest "$@"
