#!/bin/sh
# Every benchmark in sequence, results into bench/results/ (about 15 minutes; MINUTES=1 for a
# shorter sustained run). Run nothing else meanwhile: they measure the whole machine.
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
"$BIN/edge-bench" --json "$OUT/edge-bench.json" --markdown "$OUT/edge-bench.md" \
    --plot "$OUT/edge-bench.png"
"$BIN/python" bench/mediapipe_compare.py --setup --json "$OUT/mediapipe.json" > /dev/null
"$BIN/python" bench/sustained.py --minutes "${MINUTES:-10}" --out "$OUT/sustained"
echo "wrote $OUT/edge-bench.{json,md,png} $OUT/mediapipe.json $OUT/sustained.{json,png}"
