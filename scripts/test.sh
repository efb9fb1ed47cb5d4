#!/usr/bin/env bash
# The project's test command (README "Two commands"): the whole pytest suite. As root with apt-get
# (CI, a fresh VM), it first starts a local single-node SLURM cluster so the SLURM end-to-end test
# runs too, and stops it afterwards, and installs headless Chromium for the report-page test. Extra arguments go to pytest (e.g. -m "not slow" for a quick run).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ "${IRED_SKIP_SLURM:-0}" != 1 ]; then
    if scripts/slurm-local-up.sh; then
        trap 'scripts/slurm-local-down.sh' EXIT
    else
        echo "test.sh: the local SLURM cluster did not start; SLURM tests will be skipped" >&2
    fi
fi
# Headless Chromium for the report-in-a-browser test (tests/test_report_browser.py), where it can be installed
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && ! command -v chromium >/dev/null 2>&1; then
    { apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }; } \
        || echo "test.sh: chromium did not install; the browser test will be skipped" >&2
fi
python -m pytest "$@"
