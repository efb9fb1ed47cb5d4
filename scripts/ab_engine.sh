#!/usr/bin/env bash
# Same-session A/B of the training loop between two checkouts (issue 20: the one engine), alternating
# A and B, one process at a time on one thread; prints one JSON line per measurement.
#   scripts/ab_engine.sh <checkout A> <checkout B> [repeats=3] [steps=232]
# Each line is scripts/step_speed.py's record (the pilot's configuration: rank 20, batch 64, EMA every
# step) for one mode and one pack size (1 or 2): run-steps/s of wall and of CPU time.
set -euo pipefail
A=$1; B=$2; REPEATS=${3:-3}; STEPS=${4:-232}
SCRIPT=$(cd "$(dirname "$0")" && pwd)/step_speed.py
for rep in $(seq "$REPEATS"); do
  for mode in none random adversarial; do
    for pack in 1 2; do
      for checkout in "$A" "$B"; do
        out=$(cd "$checkout" && PYTHONPATH=. python "$SCRIPT" --mode "$mode" --steps "$STEPS" --pack "$pack" \
              --syncs-steps 0 --json 2>/dev/null | tail -1)
        echo "{\"checkout\": \"$checkout\", \"rep\": $rep, \"record\": $out}"
      done
    done
  done
done
