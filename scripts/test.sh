#!/usr/bin/env bash
# The project's test command (README "Two commands"): the fast pytest suite (a few minutes), or with
# IRED_TEST_ALL=1 the whole suite, end-to-end workflow runs included (as CI runs it). As root with
# apt-get (CI, a fresh VM) it installs headless Chromium for the report-page test and, for the whole
# suite, starts a local single-node SLURM cluster so the SLURM end-to-end test runs too (stopped
# afterwards). Extra arguments go to pytest (e.g. -k verdict, or -m slow for the end-to-end tests only).
set -euo pipefail
cd "$(dirname "$0")/.."

# IRED_TEST_ALL=1 adds the end-to-end workflow tests (marked slow; CI sets it), which need the cluster
ALL=()
if [ "${IRED_TEST_ALL:-0}" = 1 ]; then
    ALL=(-m "slow or not slow" --durations=25)  # the slowest tests, for keeping CI inside its limit
fi
if [ "${#ALL[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
        && [ "${IRED_SKIP_SLURM:-0}" != 1 ]; then
    if scripts/slurm-local-up.sh; then
        trap 'scripts/slurm-local-down.sh' EXIT
    else
        echo "test.sh: the local SLURM cluster did not start; SLURM tests will be skipped" >&2
    fi
fi
# Headless Chromium for the report-in-a-browser test (tests/report/test_report_browser.py), where it can be installed
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && ! command -v chromium >/dev/null 2>&1; then
    { apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }; } \
        || echo "test.sh: chromium did not install; the browser test will be skipped" >&2
fi
python -m pytest "${ALL[@]}" "$@"
