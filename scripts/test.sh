#!/usr/bin/env bash
# The project's test command (README "Two commands"): the whole pytest suite. As root with apt-get
# (CI, a fresh VM), it first starts a local single-node SLURM cluster so the SLURM end-to-end test
# runs too, and stops it afterwards. Extra arguments go to pytest (e.g. -m "not slow" for a quick run).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ "${IRED_SKIP_SLURM:-0}" != 1 ]; then
    if scripts/slurm-local-up.sh; then
        trap 'scripts/slurm-local-down.sh' EXIT
    else
        echo "test.sh: the local SLURM cluster did not start; SLURM tests will be skipped" >&2
    fi
fi
python -m pytest "$@"
