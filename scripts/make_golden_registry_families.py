#!/usr/bin/env python3
"""Golden fixtures for the families added through the architecture registry (issue 25):
SmolLM3, Granite 3 and Seed-OSS, under tests/fixtures/golden/families/<arch>/ with the same
tensors as scripts/make_golden_families.py writes (it does the work; this file only lists the
cases).

- smollm3: `no_rope_layers` from the default interval 4 (layer 3 is NoPE), which transformers 5
  writes out explicitly; pruning `--drop 1,2` must slice it so the NoPE layer keeps no RoPE.
- granite: every multiplier away from 1 (embedding 3.0, attention 0.2, residual 0.5, logits
  scaling 4.0).
- seed_oss: llama layers with q/k/v biases and none on o_proj (`attention_out_bias` false),
  head_dim 16 (hidden 32 over 4 heads would give 8).

Run with DEPTHPRUNE set to the binary (it prunes each fixture and checks that transformers loads
the output with the logits of the dense model minus the dropped layers):
    DEPTHPRUNE=target/debug/depthprune python scripts/make_golden_registry_families.py [CASE...]
(naming cases rebuilds only those, with the seeds they have in a full run).
"""

import os
import sys

import torch
from transformers import (
    GraniteConfig,
    GraniteForCausalLM,
    SeedOssConfig,
    SeedOssForCausalLM,
    SmolLM3Config,
    SmolLM3ForCausalLM,
)

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
    "seed_oss": (
        SeedOssConfig,
        SeedOssForCausalLM,
        dict(
            max_position_embeddings=256,
            rope_theta=10000.0,
            tie_word_embeddings=False,
            head_dim=16,
            attention_bias=True,
            attention_out_bias=False,
        ),
    ),
}


def main():
    binary = os.environ.get("DEPTHPRUNE")
    if not binary:
        raise SystemExit("set DEPTHPRUNE to the depthprune binary (cargo build; target/debug/depthprune)")
    only = sys.argv[1:] or list(CASES)
    unknown = [a for a in only if a not in CASES]
    if unknown:
        raise SystemExit(f"unknown case {unknown}; the cases are {list(CASES)}")
    torch.manual_seed(0)
    for seed, (arch, (cfg_cls, model_cls, extra)) in enumerate(CASES.items()):
        if arch in only:
            fam.build(arch, cfg_cls, model_cls, extra, 200 + seed, binary)
    for arch in only:
        d = os.path.join(fam.ROOT, arch)
        print(arch, {f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))})


if __name__ == "__main__":
    main()
