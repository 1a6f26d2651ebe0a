#!/usr/bin/env python3
"""Golden fixtures for the families added through the architecture registry (issue 25):
SmolLM3 and Granite 3, under tests/fixtures/golden/families/<arch>/ with the same tensors as
scripts/make_golden_families.py writes (it does the work; this file only lists the cases).

- smollm3: `no_rope_layers` from the default interval 4 (layer 3 is NoPE), which transformers 5
  writes out explicitly; pruning `--drop 1,2` must slice it so the NoPE layer keeps no RoPE.
- granite: every multiplier away from 1 (embedding 3.0, attention 0.2, residual 0.5, logits
  scaling 4.0).

Run with DEPTHPRUNE set to the binary (it prunes each fixture and checks that transformers loads
the output with the logits of the dense model minus the dropped layers):
    DEPTHPRUNE=target/debug/depthprune python scripts/make_golden_registry_families.py
"""

import os
import sys

import torch
from transformers import GraniteConfig, GraniteForCausalLM, SmolLM3Config, SmolLM3ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden_families as fam  # noqa: E402

CASES = {
    "smollm3": (
        SmolLM3Config,
        SmolLM3ForCausalLM,
        dict(max_position_embeddings=256, rope_theta=10000.0, tie_word_embeddings=True),
    ),
    "granite": (
        GraniteConfig,
        GraniteForCausalLM,
        dict(
            max_position_embeddings=256,
            rope_theta=10000.0,
            tie_word_embeddings=False,
            embedding_multiplier=3.0,
            attention_multiplier=0.2,
            residual_multiplier=0.5,
            logits_scaling=4.0,
        ),
    ),
}


def main():
    binary = os.environ.get("DEPTHPRUNE")
    if not binary:
        raise SystemExit("set DEPTHPRUNE to the depthprune binary (cargo build; target/debug/depthprune)")
    torch.manual_seed(0)
    for seed, (arch, (cfg_cls, model_cls, extra)) in enumerate(CASES.items()):
        fam.build(arch, cfg_cls, model_cls, extra, 200 + seed, binary)
    for arch in CASES:
        d = os.path.join(fam.ROOT, arch)
        print(arch, {f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))})


if __name__ == "__main__":
    main()
