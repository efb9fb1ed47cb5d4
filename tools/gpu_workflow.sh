#!/usr/bin/env bash
# The workflow itself on a machine without network whose Python lacks Snakemake (issue 45, item 3):
# the GPU machines lent to this project have a CUDA torch and the scientific stack but no Snakemake,
# jsonschema or ema-pytorch, and cannot reach a package index.
#
#   here, with network:   python -m tools.device_wheels .whl          # the missing packages as wheels (~26 MiB)
#   there:                bash tools/gpu_workflow.sh [snakemake arguments, e.g. --configfile config/medium.yaml]
#
# It installs the wheels in $WHEELS (default .whl; carried with the tree) into $SITE with pip --no-index,
# puts them first on PYTHONPATH, runs `snakemake --cores $CORES --resources gpu=$GPUS` in $WORKDIR
# (default the checkout; it needs config/config.yaml there) and copies what the study wrote into $OUT
# (at most 8 files): versions.txt (torch, CUDA, Python, Snakemake, nvidia-smi), snakemake.log, status.txt
# (every training job), timing.json, report.md, report.html, verdict.json and tables.tgz.
# On a CPU the same path runs any config: tests/workflow/test_gpu_workflow.py runs the .test study
# through it in an environment without Snakemake.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
OUT=${OUT:-$REPO/gpu-workflow-out}
WHEELS=${WHEELS:-$REPO/.whl}
SITE=${SITE:-/tmp/ired-site}
WORKDIR=${WORKDIR:-$REPO}
CORES=${CORES:-$(nproc)}
GPUS=${GPUS:-1}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G "$WHEELS/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
        || { echo "gpu_workflow: installing the wheels in $WHEELS failed" >&2; exit 2; }
    export PYTHONPATH=$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
fi
{
    "$PY" -c "import sys, torch, snakemake; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available',
torch.cuda.is_available(), 'python', sys.version.split()[0], 'snakemake', snakemake.__version__)" \
        || { echo "gpu_workflow: torch or snakemake is not importable (wheels in $WHEELS?)" >&2; exit 2; }
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
} | tee "$OUT/versions.txt"
start=$(date +%s)
"$PY" -m snakemake -s "$REPO/Snakefile" --directory "$WORKDIR" --cores "$CORES" --resources gpu="$GPUS" \
    --rerun-incomplete "$@" > "$OUT/snakemake.log" 2>&1
rc=$?
grep -E "steps \(|Error|error" "$OUT/snakemake.log" | tail -20
end=$(date +%s)
overlays=() taking=0  # the --configfile files among the arguments, for the status table
for a in "$@"; do
    case "$a" in --configfile) taking=1 ;; -*) taking=0 ;; *) [ "$taking" = 1 ] && overlays+=(--configfile "$a") ;; esac
done
(cd "$WORKDIR" && "$PY" -m diffusion_lib.watch.status "${overlays[@]}" --cores "$CORES" > "$OUT/status.txt" 2>&1)
study=$(ls -td "$WORKDIR"/results/studies/*/ 2>/dev/null | head -1)
printf '{"rc": %d, "wall_seconds": %d, "cores": %s, "gpus": %s, "study": "%s", "args": "%s"}\n' \
    "$rc" "$((end - start))" "$CORES" "$GPUS" "${study%/}" "$*" > "$OUT/timing.json"
if [ -n "$study" ]; then
    for f in report.md report.html tables/verdict.json; do
        [ -f "$study/$f" ] && cp "$study/$f" "$OUT/"
    done
    tar -czf "$OUT/tables.tgz" -C "$study" tables 2>/dev/null
fi
echo "gpu_workflow: rc $rc, $((end - start)) s; outputs in $OUT"
exit "$rc"
