#!/usr/bin/env bash
# Same-session A/B of the training step between two checkouts (issue 20: the one engine), alternating
# A and B, one process at a time on one thread; prints one JSON line per measurement.
#   scripts/ab_engine.sh <checkout A> <checkout B> [repeats=3] [steps=100]
# Each line: the checkout, mode, pack size and `python -m diffusion_lib.bench` steps_per_s /
# run_steps_per_s (pilot batch 64, rank 20); summarise with the median per (checkout, mode, pack).
set -euo pipefail
A=$1; B=$2; REPEATS=${3:-3}; STEPS=${4:-100}
for rep in $(seq "$REPEATS"); do
  for mode in none random adversarial; do
    for pack in 1 2; do
      for checkout in "$A" "$B"; do
        out=$(cd "$checkout" && PYTHONPATH=. python -m diffusion_lib.bench --mode "$mode" --batch-size 64 \
              --steps "$STEPS" --warmup 5 --threads 1 --no-peak --sample-problems 8 --pack "$pack" --json 2>/dev/null | tail -1)
        echo "{\"checkout\": \"$checkout\", \"rep\": $rep, \"record\": $out}"
      done
    done
  done
done
