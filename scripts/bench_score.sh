#!/usr/bin/env bash
# Scoring benchmarks for issue 14, each a ratio measured in one run (the machine may be shared:
# the load average is printed next to every timing).
#
#   ppl reuse:  `score --metric ppl` (candidates restart from cached activations) against the same
#               criterion run naively: one `eval --skip L` full forward per layer on the same
#               calibration windows (forward seconds as eval reports them, model loading excluded).
#               The perplexities must agree; the script prints both.
#   greedy:     `score --metric greedy` wall time (SLEB's greedy, every step).
#
#   scripts/bench_score.sh MODEL TEXT [SAMPLES] [CTX] [extra depthprune flags, e.g. --compute bf16]
set -euo pipefail
MODEL=${1:?model folder}
TEXT=${2:?calibration text}
SAMPLES=${3:-8}
CTX=${4:-512}
shift $(( $# < 4 ? $# : 4 ))
BIN=${DEPTHPRUNE_BIN:-${CARGO_TARGET_DIR:-target}/release/depthprune}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
load() { cut -d' ' -f1 /proc/loadavg; }
# The machine, quoted with every figure below (CPU, peak rates per core, threads).
"$BIN" doctor --line --no-kernels 2>/dev/null || echo "machine: (this binary has no doctor)"

echo "ppl with reuse (load $(load))"
"$BIN" score "$MODEL" --calib "$TEXT" --metric ppl --ctx "$CTX" --samples "$SAMPLES" --json "$@" \
  >"$OUT/ppl.json" 2>/dev/null
N=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['n_layers'])" "$OUT/ppl.json")

echo "ppl naive: $N x eval --skip L (load $(load))"
for ((l = 0; l < N; l++)); do
  "$BIN" eval "$MODEL" --text "$TEXT" --ctx "$CTX" --max-tokens $((CTX * SAMPLES)) --skip "$l" \
    --json "$@" >"$OUT/skip-$l.json" 2>/dev/null
done
echo "(load $(load))"

python3 - "$OUT" "$N" <<'PY'
import json, sys
out, n = sys.argv[1], int(sys.argv[2])
ppl = json.load(open(f"{out}/ppl.json"))
reuse = ppl["reuse"]
naive = [json.load(open(f"{out}/skip-{l}.json")) for l in range(n)]
naive_s = sum(r["seconds"] for r in naive)
worst = max(abs(r["perplexity"] - s) / s for r, s in zip(naive, ppl["importance"]))
print(f"  reuse: {reuse['candidates']} candidates in {reuse['seconds']:.1f} s "
      f"(one full forward {reuse['full_forward_s']:.1f} s; estimated speed-up {reuse['candidates'] * reuse['full_forward_s'] / reuse['seconds']:.2f}x)")
print(f"  naive: {n} full forwards in {naive_s:.1f} s")
print(f"  measured speed-up: {naive_s / reuse['seconds']:.2f}x; largest relative perplexity difference {worst:.1e}")
PY
