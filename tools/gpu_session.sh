#!/usr/bin/env bash
# The prepared GPU session of issue 33, in two parts that each fit one device call:
#   bash tools/gpu_session.sh core       # tests/train/test_gpu.py (but the compile tests), bench, packs,
#                                          # the paper-recipe run, TF32 vs float64   (~4-5 min)
#   bash tools/gpu_session.sh compiled   # the compile tests, compile/AOT benches, the TF32 study
#   bash tools/gpu_session.sh verify     # all of tests/train/test_gpu.py, graphs vs the functional graphs,
#                                          # a longer paper-recipe run (~4 min)
#   bash tools/gpu_session.sh packs      # issue 45: the GPU tests (packs' closed-form graphs among them),
#                                          # closed-form vs functional packs of 1/5/10, 1/2/4 jobs per card (~6 min)
# Everything lands in $OUT (default: ./gpu-out): pytest's output, the check's JSON and log, nvidia-smi.
set -uo pipefail
part=${1:-core}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 IRED_AOT_CACHE=${IRED_AOT_CACHE:-/tmp/ired-aot} PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv > "$OUT/smi-$part.txt" 2>&1
$PY -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', sys.version.split()[0])" \
    | tee "$OUT/versions.txt"
if [ "$part" = core ]; then
    timeout 90 $PY -m pytest tests/train/test_gpu.py -q -p no:cacheprovider -k "not compiled" 2>&1 | tee "$OUT/pytest-core.txt"
    timeout 270 $PY tools/gpu_check.py --out "$OUT/gpu-core.json" --sections bench,packs,paper,tf32 \
        --budget-s 170 --paper-seconds 60 2>&1 | grep -v "profiler_st" | tee "$OUT/check-core.log"
elif [ "$part" = compiled ]; then
    timeout 150 $PY -m pytest tests/train/test_gpu.py -q -p no:cacheprovider -k "compiled" 2>&1 | tee "$OUT/pytest-compiled.txt"
    timeout 250 $PY tools/gpu_check.py --out "$OUT/gpu-compiled.json" --sections bench,study \
        --impls compile,aot,graphs --precisions fp32 --study-steps 3000 --budget-s 150 2>&1 | grep -v "profiler_st" \
        | tee "$OUT/check-compiled.log"
elif [ "$part" = packs ]; then
    timeout 90 $PY -m pytest tests/train/test_gpu.py -q -p no:cacheprovider -k "not compiled" 2>&1 | tee "$OUT/pytest-packs.txt"
    timeout 330 $PY tools/gpu_check.py --out "$OUT/gpu-packs.json" --sections packs,jobs --packs 1,5,10 --jobs 1,2,4 \
        --budget-s 270 2>&1 | grep -v "profiler_st" | tee "$OUT/check-packs.log"
else
    timeout 100 $PY -m pytest tests/train/test_gpu.py -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest-verify.txt"
    timeout 170 $PY tools/gpu_check.py --out "$OUT/gpu-verify.json" --sections bench,paper \
        --impls graphs,graphs_func --precisions fp32 --paper-seconds 90 --budget-s 60 2>&1 | grep -v "profiler_st" \
        | tee "$OUT/check-verify.log"
fi
