#!/usr/bin/env bash
# Benchmark: prune a generated ~2.2 GB bf16 checkpoint (TinyLlama-1.1B shape, random weights) and
# compare wall time with `cp` of the same output bytes on the same disk, in the same run.
# Reports the ratio (prune / cp, and prune / cp+sync since prune fsyncs its output) and peak RSS.
# Usage: scripts/bench_prune.sh [WORKDIR]   (needs ~6 GB free in WORKDIR)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
WORK="${1:-$TARGET/bench-prune}"
mkdir -p "$WORK"
cargo build --release --quiet
BIN="$(cd "$TARGET" && pwd)/release/depthprune"
# The machine, quoted with every figure below (CPU, peak rates per core, threads).
"$BIN" doctor --line --no-kernels 2>/dev/null || echo "machine: (this binary has no doctor)"
cat > "$WORK/config.json" <<'JSON'
{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":2048,"intermediate_size":5632,
 "num_attention_heads":32,"num_key_value_heads":4,"num_hidden_layers":22,"vocab_size":32000,
 "rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":false,"torch_dtype":"bfloat16"}
JSON
if [ ! -f "$WORK/src/model.safetensors.index.json" ]; then
  "$BIN" synth --config "$WORK/config.json" --dtype bf16 --max-shard-size 1GB --out "$WORK/src"
fi
SRC_BYTES=$(du -cb "$WORK"/src/*.safetensors | tail -1 | cut -f1)
# Warm the page cache for both runs alike.
cat "$WORK"/src/*.safetensors > /dev/null

best() { sort -n | head -1; }
RUNS=${RUNS:-3}
prune_t=(); cp_t=(); cps_t=(); rss=0
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/out" "$WORK/copy"
  /usr/bin/time -f "%e %M" -o "$WORK/time.txt" "$BIN" prune "$WORK/src" --drop 8..14 --out "$WORK/out" --max-shard-size 1GB > /dev/null
  read -r t m < "$WORK/time.txt"; prune_t+=("$t"); rss=$m
  OUT_BYTES=$(du -cb "$WORK"/out/*.safetensors | tail -1 | cut -f1)
  sync
  s=$(date +%s.%N); cp -r "$WORK/out" "$WORK/copy"; e=$(date +%s.%N)
  cp_t+=("$(echo "$e - $s" | bc)")
  rm -rf "$WORK/copy"; sync
  s=$(date +%s.%N); cp -r "$WORK/out" "$WORK/copy"; sync; e=$(date +%s.%N)
  cps_t+=("$(echo "$e - $s" | bc)")
done
P=$(printf '%s\n' "${prune_t[@]}" | best)
C=$(printf '%s\n' "${cp_t[@]}" | best)
CS=$(printf '%s\n' "${cps_t[@]}" | best)
echo "source: $SRC_BYTES bytes; output: $OUT_BYTES bytes; best of $RUNS runs"
echo "prune: ${P}s   cp: ${C}s   cp+sync: ${CS}s"
echo "ratio prune/cp: $(echo "scale=2; $P / $C" | bc)   prune/(cp+sync): $(echo "scale=2; $P / $CS" | bc)"
echo "peak RSS of prune: $((rss / 1024)) MB"
rm -rf "$WORK/out" "$WORK/copy"
