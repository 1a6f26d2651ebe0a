#!/usr/bin/env bash
# Issue 5's scale benchmark: score `bi` and `angular` on a generated 36-layer Qwen3-4B-shaped bf16
# checkpoint (random weights, about 8 GB) over 16 windows of 512 tokens, once with every layer in
# memory and once with --offload, and report each run's wall time and peak RSS. The tokenizer is
# SmolLM2's (its ids fit in the 146,260-entry vocabulary); the text is WikiText-2.
# Usage: scripts/bench_offload.sh [METRICS]   (default "bi angular"; needs ~9 GB disk, ~18 GB RAM)
# CTX and SAMPLES override the window length (512) and count (16).
set -euo pipefail
cd "$(dirname "$0")/.."
METRICS="${1:-bi angular}"
CTX="${CTX:-512}"
SAMPLES="${SAMPLES:-16}"
DIR="${BENCH_DIR:-/tmp/bench-offload}"
TEXT="${DEPTHPRUNE_WIKITEXT:-$(cd .. && pwd)/shared/data/wikitext-2-raw-test.txt}"
cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-target}/release/depthprune"
# The machine, quoted with every figure below (CPU, peak rates per core, threads).
"$BIN" doctor --line --no-kernels 2>/dev/null || echo "machine: (this binary has no doctor)"
MODEL="$DIR/qwen3-4b-random"
mkdir -p "$DIR"
if [ ! -f "$MODEL/tokenizer.json" ]; then
  "$BIN" synth --config tests/fixtures/seed-qwen3-4b/config.json --dtype bf16 --out "$MODEL"
  SMOL="$(scripts/fetch-demo-model.sh)"
  "$BIN" convert "$SMOL" --to hf --out "$DIR/smol-hf" --force >/dev/null
  cp "$DIR/smol-hf/tokenizer.json" "$DIR/smol-hf/tokenizer_config.json" "$MODEL/"
  rm -rf "$DIR/smol-hf"
fi
du -sh "$MODEL"
for metric in $METRICS; do
  for mode in memory offload; do
    flag=()
    [ "$mode" = offload ] && flag=(--offload)
    /usr/bin/time -f "$metric $mode: %e s wall, %M KB peak RSS" \
      "$BIN" score "$MODEL" --metric "$metric" --calib "$TEXT" --ctx "$CTX" --samples "$SAMPLES" --batch 4 \
      "${flag[@]}" --json >"$DIR/$metric-$mode.json" 2>"$DIR/$metric-$mode.err" || {
      tail -n 3 "$DIR/$metric-$mode.err"
      exit 1
    }
    tail -n 1 "$DIR/$metric-$mode.err"
  done
  python3 - "$DIR/$metric-memory.json" "$DIR/$metric-offload.json" <<'EOF'
import json, sys
a, b = (json.load(open(p))["importance"] for p in sys.argv[1:3])
print("max |memory - offload| score difference:", max(abs(x - y) for x, y in zip(a, b)))
EOF
done
