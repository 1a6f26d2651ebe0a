#!/usr/bin/env python3
"""Golden fixtures for the dense families of issue 17: Gemma 2, Gemma 3 (text), Phi-3, OLMo 2.

Called by `scripts/make_golden.py families` (see its docstring for the tensors written). Each
family gets a tiny random model under tests/fixtures/golden/families/<arch>/ chosen to exercise
what sets it apart:

- gemma2: soft-capping small enough to bite (attention 2.0, final logits 5.0),
  query_pre_attn_scalar 24 != head_dim, sliding window 6 < the 24-token sequence, transformers-5
  config (explicit layer_types), random norm weights around 0 (scale 1 + w).
- gemma3: a hub-style config (no layer_types; sliding_window_pattern 3, so layers 2 and 5 are
  global; rope_theta, rope_local_base_freq and a linear rope_scaling on global layers only),
  reloaded from disk so the goldens come from transformers parsing that config.
- phi3: fused qkv_proj and gate_up_proj, partial_rotary_factor 0.5, LongRoPE whose
  original_max_position_embeddings (16) the 24-token sequence passes (long factors, attention
  factor sqrt(1 + ln 4 / ln 16)) and generation crosses, sliding window 10 on every layer.
- olmo2: post-norm layers and q/k norms over the whole projection.

The pruned-model logits need DEPTHPRUNE (the binary): it prunes each fixture with
`--drop 1,2`, transformers loads the output, and its logits must equal skip.logits (deleting
the layers in transformers) before they are saved as pruned.logits.
"""

import json
import math
import os
import shutil
import subprocess
import tempfile

import torch
from safetensors.torch import save_file
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    Olmo2Config,
    Olmo2ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
)

from make_golden import NEW_TOKENS, PROMPT_LEN, SEQ_LEN, SKIP, taps, without_layers

SHORT_LEN = 12
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "golden", "families")

COMMON = dict(
    vocab_size=300,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-6,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=0,
)

CASES = {
    "gemma2": (
        Gemma2Config,
        Gemma2ForCausalLM,
        dict(
            head_dim=16,
            max_position_embeddings=256,
            query_pre_attn_scalar=24,
            sliding_window=6,
            attn_logit_softcapping=2.0,
            final_logit_softcapping=5.0,
            tie_word_embeddings=True,
            hidden_activation="gelu_pytorch_tanh",
        ),
    ),
    "gemma3": (
        Gemma3TextConfig,
        Gemma3ForCausalLM,
        dict(
            head_dim=16,
            max_position_embeddings=256,
            query_pre_attn_scalar=24,
            sliding_window=6,
            sliding_window_pattern=3,
            rope_theta=50000.0,
            rope_local_base_freq=100.0,
            rope_scaling={"rope_type": "linear", "factor": 2.0},
            tie_word_embeddings=True,
        ),
    ),
    "phi3": (
        Phi3Config,
        Phi3ForCausalLM,
        dict(
            max_position_embeddings=64,
            original_max_position_embeddings=16,
            partial_rotary_factor=0.5,
            rope_theta=10000.0,
            rope_scaling={"type": "longrope", "short_factor": [1.0, 1.5], "long_factor": [2.0, 5.0]},
            sliding_window=10,
            tie_word_embeddings=False,
        ),
    ),
    "olmo2": (Olmo2Config, Olmo2ForCausalLM, dict(max_position_embeddings=256, rope_theta=10000.0, tie_word_embeddings=False)),
}

# What a hub-style Gemma 3 config says instead of transformers 5's nested rope_parameters and
# explicit layer_types.
GEMMA3_HUB = {
    "sliding_window_pattern": 3,
    "rope_theta": 50000.0,
    "rope_local_base_freq": 100.0,
    "rope_scaling": {"rope_type": "linear", "factor": 2.0},
}


def randomize(model, gen, gemma):
    """Every parameter at a scale where errors show. Norm scales are 0.4 ± 0.2 (Gemma stores
    them as w with scale 1 + w), which keeps the residual stream within a few units over six
    layers, so 1e-5 on the taps is a handful of f32 ulps rather than rounding noise."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_((-0.6 if gemma else 0.4) + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.2 if gemma else 1.0))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))


def hub_style_gemma3(out):
    path = os.path.join(out, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg.pop("layer_types", None)
    cfg.pop("_sliding_window_pattern", None)
    cfg.pop("rope_parameters", None)
    cfg.update(GEMMA3_HUB)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


def pruned_logits(binary, out, tokens):
    with tempfile.TemporaryDirectory() as tmp:
        dst = os.path.join(tmp, "pruned")
        drop = ",".join(map(str, SKIP))
        subprocess.run([binary, "prune", out, "--drop", drop, "--out", dst], check=True, capture_output=True)
        model = AutoModelForCausalLM.from_pretrained(dst, dtype=torch.float32, attn_implementation="eager").eval()
        with open(os.path.join(dst, "config.json")) as f:
            cfg = json.load(f)
        with torch.no_grad():
            return model(tokens, use_cache=False).logits, model.config, cfg


def build(arch, config_cls, model_cls, extra, seed, binary):
    gen = torch.Generator().manual_seed(seed)
    cfg = config_cls(**COMMON, **extra)
    cfg._attn_implementation = "eager"
    model = model_cls(cfg).eval()
    randomize(model, gen, arch.startswith("gemma"))
    out = os.path.join(ROOT, arch)
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, safe_serialization=True)
    gen_cfg = os.path.join(out, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)
    if arch == "gemma3":
        hub_style_gemma3(out)
    # The goldens come from the folder as transformers reads it back.
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    types = getattr(model.config, "layer_types", None)
    print(arch, "layer_types", types)

    tokens = torch.randint(2, COMMON["vocab_size"], (2, SEQ_LEN), generator=gen)
    rec = taps(model, tokens)
    rec["tokens"] = tokens
    with torch.no_grad():
        rec["skip.logits"] = without_layers(model, SKIP)(tokens, use_cache=False).logits
        # Within Phi-3's original context: LongRoPE's short factors.
        rec["short.logits"] = model(tokens[:, :SHORT_LEN], use_cache=False).logits
        prompt = tokens[:1, :PROMPT_LEN]
        gen_out = model.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=True)
    rec["generate.prompt"] = prompt[0]
    rec["generate.tokens"] = gen_out[0, PROMPT_LEN:]
    pruned, pruned_cfg, pruned_json = pruned_logits(binary, out, tokens)
    d = (pruned - rec["skip.logits"]).abs().max().item()
    print(f"{arch}: |pruned (depthprune, loaded by transformers) - skip| = {d:.3e}")
    assert d < 1e-5, f"{arch}: transformers does not load the pruned model as the dense one minus {SKIP}"
    if types is not None:
        kept = [t for i, t in enumerate(types) if i not in SKIP]
        assert list(pruned_cfg.layer_types) == kept, (pruned_cfg.layer_types, kept)
        print(arch, "pruned layer_types", pruned_json.get("layer_types"), "pattern", pruned_json.get("sliding_window_pattern"))
    rec["pruned.logits"] = pruned
    tensors = {k: v.clone().contiguous().to(torch.int64 if v.dtype == torch.int64 else torch.float32) for k, v in rec.items()}
    save_file(tensors, os.path.join(out, "golden.safetensors"), metadata={"skip": ",".join(map(str, SKIP))})


def main():
    binary = os.environ.get("DEPTHPRUNE")
    if not binary:
        raise SystemExit("set DEPTHPRUNE to the depthprune binary (cargo build; target/debug/depthprune)")
    torch.manual_seed(0)
    os.makedirs(ROOT, exist_ok=True)
    for seed, (arch, (cfg_cls, model_cls, extra)) in enumerate(CASES.items()):
        build(arch, cfg_cls, model_cls, extra, 100 + seed, binary)
    for arch in CASES:
        sizes = {f: os.path.getsize(os.path.join(ROOT, arch, f)) for f in sorted(os.listdir(os.path.join(ROOT, arch)))}
        print(arch, sizes)


if __name__ == "__main__":
    main()
