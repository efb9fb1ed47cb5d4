#!/usr/bin/env bash
# Stop the daemons scripts/slurm-local-up.sh started (by PID, never by name), remove their pid files.
set -uo pipefail
STATE=${IRED_SLURM_DIR:-/tmp/ired-slurm}
[ -f "$STATE/started.pids" ] || { echo "slurm-local: nothing to stop" >&2; exit 0; }
tac "$STATE/started.pids" | while read -r name pid; do
    [ -n "${pid:-}" ] || continue
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        echo "slurm-local: stopped $name ($pid)" >&2
    fi
done
rm -f "$STATE/started.pids" "$STATE/slurmctld.pid" "$STATE/slurmd.pid" /run/munge/ired-munged.pid
# remove the configuration only if this project's script wrote it
if head -n 1 /etc/slurm/slurm.conf 2>/dev/null | grep -qF "# written by scripts/slurm-local-up.sh"; then
    rm -f /etc/slurm/slurm.conf
fi
exit 0
