#!/usr/bin/env bash
# Healing cost against the dense forward, in one run (issue 18's cost target: least-squares
# healing of 8 layers on 16,384 tokens costs at most 3 dense forward passes over those tokens).
# Times `prune --heal` (validated, the default `auto`) of SmolLM2's bi-8 removal on N calibration
# tokens, and `eval` of the dense model over the same N tokens (its forward and head), and prints
# the ratio of wall and CPU times, and each run's peak RSS (issue 34's targets: heal on 65,536
# tokens at most 3 times one eval over them, peak RSS at most the f32 weights + 2 GB).
# Usage: scripts/bench_heal.sh SMOLLM2_HF_DIR TEXT [N]   (N defaults to 16384; 65536 for issue 34)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="$1"
TEXT="$2"
N="${3:-16384}"
OFFSET=65536
DROP="3,12..16,17,25..27"
BIN="${CARGO_TARGET_DIR:-target}/release/depthprune"
cargo build --release --quiet
# The machine, quoted with every figure below (CPU, peak rates per core, threads).
"$BIN" doctor --line --no-kernels 2>/dev/null || echo "machine: (this binary has no doctor)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

measure() { # label, command...: prints "label wall_s cpu_s peak_rss_mb"
  local label="$1"
  shift
  /usr/bin/env time -f "$label %e %U %S %M" -o "$WORK/t" "$@" >"$WORK/out" 2>"$WORK/err" || {
    cat "$WORK/err" >&2
    exit 1
  }
  awk '{printf "%s %.1f %.1f %.0f\n", $1, $2, $3 + $4, $5 / 1024}' "$WORK/t"
}

# The dense forward over N tokens of the same text (cost depends on the count, not the tokens).
dense=$(measure dense "$BIN" eval "$MODEL" --text "$TEXT" --ctx 512 --max-tokens "$N")
heal=$(measure heal "$BIN" prune "$MODEL" --drop "$DROP" --heal --calib "$TEXT" \
  --calib-offset "$OFFSET" --ctx 512 --heal-samples "$N" --out "$WORK/healed")
read -r _ dw dc dm <<<"$dense"
read -r _ hw hc hm <<<"$heal"
awk -v dw="$dw" -v dc="$dc" -v hw="$hw" -v hc="$hc" -v dm="$dm" -v hm="$hm" -v n="$N" 'BEGIN {
  printf "dense forward over %d tokens:  %.1f s wall, %.1f s CPU, peak RSS %d MB\n", n, dw, dc, dm
  printf "heal (bi-8, auto, %d tokens): %.1f s wall, %.1f s CPU, peak RSS %d MB\n", n, hw, hc, hm
  printf "ratio heal / dense forward:    %.2f wall, %.2f CPU\n", hw / dw, hc / dc
}'
grep -E "^(block|layer) " "$WORK/out" || true
