#!/usr/bin/env bash
# Times the release build of the command-line binary under several profile settings, each from an
# empty target folder, on an idle machine (issue 26), then the engine's speed with each binary:
# `eval` of the demo model, so a build setting that slows the hot loops shows up.
#
# Usage: scripts/bench_build.sh [OUT]   (default ./bench-build; needs the demo model and ~10 GB)
# Prints one line per variant: seconds of wall and CPU time, crates compiled, binary size, and
# the eval's tokens/s (median of 3). Run it alone: every variant compiles ~230 crates.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench-build}"
mkdir -p "$OUT"
MODEL="$(scripts/fetch-demo-model.sh)"
TEXT="$(python3 scripts/demo-text.py "$OUT/text")"
# name | environment | cargo arguments
VARIANTS=(
  "line-tables (old default)|CARGO_PROFILE_RELEASE_DEBUG=line-tables-only|--bin depthprune"
  "no debug info (new default)||--bin depthprune"
  "no debug, whole workspace|CARGO_PROFILE_RELEASE_DEBUG=false|--workspace"
  "no debug, codegen-units=4|CARGO_PROFILE_RELEASE_CODEGEN_UNITS=4|--bin depthprune"
  "no debug, codegen-units=1|CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1|--bin depthprune"
  "no debug, thin LTO|CARGO_PROFILE_RELEASE_LTO=thin|--bin depthprune"
  "no debug, LTO off|CARGO_PROFILE_RELEASE_LTO=off|--bin depthprune"
)
printf '%-30s %8s %8s %7s %8s %10s\n' variant wall_s cpu_s crates bin_MB eval_tok/s
for v in "${VARIANTS[@]}"; do
  IFS='|' read -r name envs args <<<"$v"
  tgt="$OUT/target-$(echo "$name" | tr -c 'a-z0-9' '_')"
  rm -rf "$tgt"
  log="$tgt.log"
  # shellcheck disable=SC2086
  /usr/bin/time -f '%e %U %S' -o "$tgt.time" env $envs CARGO_TARGET_DIR="$tgt" \
    cargo build --release -v $args >"$log" 2>&1
  read -r wall user sys <"$tgt.time"
  crates=$(grep -c '^ *Running `.*rustc' "$log" || true)
  bin="$tgt/release/depthprune"
  size=$(du -m "$bin" | cut -f1)
  rates=()
  for _ in 1 2 3; do
    rates+=("$("$bin" eval "$MODEL" --text "$TEXT" --ctx 512 --max-tokens 4096 --json 2>/dev/null |
      python3 -c 'import json,sys; print(round(json.load(sys.stdin)["tokens_per_s"]))')")
  done
  med=$(printf '%s\n' "${rates[@]}" | sort -n | sed -n 2p)
  cpu=$(python3 -c "print(round($user + $sys))")
  printf '%-30s %8.0f %8s %7s %8s %10s\n' "$name" "$wall" "$cpu" "$crates" "$size" "$med"
done
