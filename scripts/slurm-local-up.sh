#!/usr/bin/env bash
# Start a single-node SLURM cluster on localhost (munge + slurmctld + slurmd) for testing the
# workflow's cluster path. Idempotent: if our cluster already answers, it only prints its settings.
#
#   scripts/slurm-local-up.sh      # then sbatch, squeue and snakemake's slurm executor work
#   scripts/slurm-local-down.sh    # stops only the daemons this script started
#
# Needs root and Debian/Ubuntu packages (installed if missing: munge, slurmctld, slurmd, slurm-client).
# The configuration goes to /etc/slurm/slurm.conf, where every client finds it (snakemake's job-step
# executor drops SLURM_* variables, SLURM_CONF included, before its nested srun); an existing file
# not written by this script is never overwritten. State and logs live in $IRED_SLURM_DIR (default
# /tmp/ired-slurm); completed jobs are recorded in $IRED_SLURM_DIR/jobcomp.log (no slurmdbd needed).
set -euo pipefail
STATE=${IRED_SLURM_DIR:-/tmp/ired-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by scripts/slurm-local-up.sh"
say() { echo "slurm-local: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then say "must run as root"; exit 2; fi
if [ -s "$CONF" ] && ! head -n 1 "$CONF" | grep -qF "$MARK"; then
    say "$CONF exists and was not written by this script; refusing to replace a real cluster's configuration"
    exit 2
fi

if [ -f "$STATE/started.pids" ] && scontrol ping 2>/dev/null | grep -q UP && sinfo -h -o %t 2>/dev/null | grep -qE "idle|mix|alloc"; then
    say "already running ($CONF)"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    say "installing munge and slurm packages"
    export DEBIAN_FRONTEND=noninteractive
    # keep package scripts from starting services: this script starts and owns the daemons
    policy_created=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; policy_created=1; fi
    apt-get install -y -q --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null; }
    if [ "$policy_created" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

mkdir -p "$STATE/ctld" "$STATE/d"
: > "$STATE/started.pids"

# munge: reuse a running munged (e.g. the system's), else start one and remember it
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
    chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
    chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/ired-munged.pid
    for _ in $(seq 50); do [ -s /run/munge/ired-munged.pid ] && break; sleep 0.1; done
    echo "munged $(cat /run/munge/ired-munged.pid)" >> "$STATE/started.pids"
fi

host=$(hostname -s)
node=$(slurmd -C | head -n 1)
mem=$(echo "$node" | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
node=$(echo "$node" | sed "s/RealMemory=[0-9]*/RealMemory=$((mem * 90 / 100))/")
mkdir -p /etc/slurm
cat > "$CONF" <<CONF
$MARK: single-node test cluster (state in $STATE)
ClusterName=ired-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
TaskPlugin=task/affinity
ProctrackType=proctrack/linuxproc
MpiDefault=none
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=300
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.log
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

rm -f "$STATE/slurmctld.pid" "$STATE/slurmd.pid"
slurmctld -c   # clean start: no jobs from an earlier, dead controller
for _ in $(seq 100); do [ -s "$STATE/slurmctld.pid" ] && break; sleep 0.1; done
echo "slurmctld $(cat "$STATE/slurmctld.pid")" >> "$STATE/started.pids"
slurmd
for _ in $(seq 100); do [ -s "$STATE/slurmd.pid" ] && break; sleep 0.1; done
echo "slurmd $(cat "$STATE/slurmd.pid")" >> "$STATE/started.pids"

for _ in $(seq 150); do
    if sinfo -h -o %t 2>/dev/null | grep -qE "^(idle|mix|alloc)"; then
        say "up: $(sinfo -h -o '%P %D %t %c CPUs %m MB')"
        exit 0
    fi
    sleep 0.2
done
say "cluster did not become ready; see $STATE/slurmctld.log and $STATE/slurmd.log"
exit 1
