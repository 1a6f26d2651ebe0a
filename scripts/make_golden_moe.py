#!/usr/bin/env python3
"""Builds the golden fixtures that tests/golden_moe.rs checks the Rust MoE forward pass against.

For each of qwen2_moe, qwen3_moe and mixtral it creates a tiny random model with transformers and
writes tests/fixtures/golden/<arch>/ exactly as scripts/make_golden.py does for the dense families
(its `build` is reused: config.json, f32 model.safetensors and golden.safetensors with tokens,
embed, layer{i}.input/attn/mlp/output taps, hidden{i}, logits, skip.logits, generate.*), plus:

  prune.logits   logits of the checkpoint with the layers in PRUNE[arch] removed, saved as an HF
                 folder with the config depthprune writes (layers renumbered, `mlp_only_layers`
                 renumbered, `decoder_sparse_step` made explicit when the kept layers no longer
                 follow it) and loaded back with from_pretrained

and in golden.safetensors' metadata `prune` (the removed layers), `prune_config` (the JSON of
the per-layer fields that config must hold) and `params` (total parameters, ties counted once,
and those active per token: all but the routed experts a token does not use). For
scripts/check_llamacpp_moe.py, `sparse_only.logits` are the logits with the dense layers
(metadata `sparse_only_drop`, possibly empty) deleted, since llama.cpp's qwen MoE architectures
expect experts in every layer. The script checks that the reloaded model has the same
sparse/dense kind at every kept layer and the same logits as deleting the layers in memory.

    TORCH_VENV/bin/python scripts/make_golden_moe.py            # writes the fixtures
    TORCH_VENV/bin/python scripts/make_golden_moe.py --check DIR ARCH
        # loads a folder that `depthprune prune` wrote from the ARCH fixture and compares its
        # logits with prune.logits (prints the max abs difference; exit 1 above 1e-5)

CI never runs this; it only reads what it wrote.
"""

import json
import math
import os
import sys
import tempfile

import torch
from safetensors.torch import load_file, safe_open, save_file
from transformers import (
    AutoModelForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden as mg  # noqa: E402

CASES = {
    # Shared expert with its sigmoid gate, no top-k renormalisation, q/k/v bias, tied; sparse
    # every second layer (1 and 3), so layers 0 and 2 are dense.
    "qwen2_moe": (
        Qwen2MoeConfig,
        Qwen2MoeForCausalLM,
        dict(
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=24,
            decoder_sparse_step=2,
            mlp_only_layers=[],
            norm_topk_prob=False,
            tie_word_embeddings=True,
            rope_theta=10000.0,
        ),
    ),
    # QK-norm, renormalised top-k, head_dim 16 != hidden / heads; layer 0 dense by mlp_only_layers.
    "qwen3_moe": (
        Qwen3MoeConfig,
        Qwen3MoeForCausalLM,
        dict(
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            decoder_sparse_step=1,
            mlp_only_layers=[0],
            norm_topk_prob=True,
            head_dim=16,
            tie_word_embeddings=False,
            rope_theta=10000.0,
        ),
    ),
    # Every layer sparse, experts of intermediate_size, a sliding window shorter than the sequence.
    "mixtral": (
        MixtralConfig,
        MixtralForCausalLM,
        dict(
            num_local_experts=4,
            num_experts_per_tok=2,
            intermediate_size=32,
            sliding_window=8,
            tie_word_embeddings=False,
            rope_theta=1000.0,
        ),
    ),
}

# Layers removed for the reload check. qwen2_moe: keeping 0, 2, 3 leaves dense, dense, sparse,
# which step 2 no longer describes; qwen3_moe: renumbers mlp_only_layers.
PRUNE = {"qwen2_moe": [1], "qwen3_moe": [2], "mixtral": [0, 3]}


def randomize(model, gen):
    """make_golden's scales, with the fan-in taken from the last dimension (experts are 3-D)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))


def is_sparse(cfg, i):
    if cfg.model_type == "mixtral":
        return True
    return i not in cfg.mlp_only_layers and (i + 1) % cfg.decoder_sparse_step == 0


def pruned_fields(cfg, drop):
    """The per-layer fields depthprune's config surgery writes (src/checkpoint/config_surgery.rs)."""
    n = cfg.num_hidden_layers
    keep = [i for i in range(n) if i not in drop]
    out = {"num_hidden_layers": len(keep)}
    if cfg.model_type == "mixtral":
        return out, keep
    new = {old: j for j, old in enumerate(keep)}
    only = [new[i] for i in cfg.mlp_only_layers if i in new]
    step = cfg.decoder_sparse_step
    kinds = [is_sparse(cfg, i) for i in keep]
    if any(kinds[j] != (j not in only and (j + 1) % step == 0) for j in range(len(keep))):
        step = 1
        only = [j for j, s in enumerate(kinds) if not s]
    out.update(mlp_only_layers=only, decoder_sparse_step=step)
    if getattr(cfg, "layer_types", None) is not None:
        out["layer_types"] = [cfg.layer_types[i] for i in keep]
    return out, keep


def renumber(state, keep):
    new = {old: j for j, old in enumerate(keep)}
    out = {}
    for k, v in state.items():
        if k.startswith("model.layers."):
            rest = k[len("model.layers."):]
            i, tail = rest.split(".", 1)
            if int(i) not in new:
                continue
            k = f"model.layers.{new[int(i)]}.{tail}"
        out[k] = v
    return out


def pruned_reload(arch, model, tokens):
    folder = os.path.join(mg.ROOT, arch)
    fields, keep = pruned_fields(model.config, PRUNE[arch])
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(fields)
    state = renumber(load_file(os.path.join(folder, "model.safetensors")), keep)
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(cfg, f)
        save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        m = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    kinds = [type(l.mlp).__name__ for l in m.model.layers]
    want = [type(model.model.layers[i].mlp).__name__ for i in keep]
    assert kinds == want, f"{arch}: reloaded layer kinds {kinds}, expected {want}"
    with torch.no_grad():
        got = m(tokens, use_cache=False).logits
        ref = mg.without_layers(model, PRUNE[arch])(tokens, use_cache=False).logits
    d = (got - ref).abs().max().item()
    assert d < 1e-5, f"{arch}: reloaded pruned logits differ from deleting layers by {d}"
    print(f"{arch}: pruned reload {kinds}, max |reload - delete| = {d:.2e}")
    return got, fields


def param_counts(model):
    cfg = model.config
    n = getattr(cfg, "num_experts", None) or cfg.num_local_experts
    total = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for name, p in model.named_parameters() if ".experts." in name)
    return {"total": total, "active": total - experts + experts * cfg.num_experts_per_tok // n}


def add_to_golden(arch, extra, meta):
    path = os.path.join(mg.ROOT, arch, "golden.safetensors")
    with safe_open(path, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = dict(f.metadata() or {})
    tensors.update({k: v.contiguous().float() for k, v in extra.items()})
    metadata.update(meta)
    save_file(tensors, path, metadata=metadata)


def check(folder, arch):
    golden = load_file(os.path.join(mg.ROOT, arch, "golden.safetensors"))
    m = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        got = m(golden["tokens"], use_cache=False).logits
    d = (got - golden["prune.logits"]).abs().max().item()
    print(f"{folder}: {type(m).__name__}, {m.config.num_hidden_layers} layers, "
          f"max |logits - prune.logits| = {d:.3e}")
    return 0 if d <= 1e-5 else 1


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--check":
        sys.exit(check(sys.argv[2], sys.argv[3]))
    torch.manual_seed(0)
    mg.randomize = randomize
    for seed, (arch, (cfg_cls, model_cls, extra)) in enumerate(CASES.items()):
        # make_golden's COMMON sets intermediate_size (the dense MLPs); Mixtral's experts use it.
        common = dict(mg.COMMON)
        mg.COMMON = {**common, **{k: v for k, v in extra.items() if k in common}}
        extra = {k: v for k, v in extra.items() if k not in common}
        model = mg.build(arch, cfg_cls, model_cls, extra, 101 + seed)
        mg.COMMON = common
        tokens = load_file(os.path.join(mg.ROOT, arch, "golden.safetensors"))["tokens"]
        logits, fields = pruned_reload(arch, model, tokens)
        # llama.cpp's qwen2moe / qwen3moe expect experts in every layer: the logits with the
        # dense layers deleted are the reference for scripts/check_llamacpp_moe.py.
        dense = [i for i in range(model.config.num_hidden_layers) if not is_sparse(model.config, i)]
        with torch.no_grad():
            sparse_only = mg.without_layers(model, dense)(tokens, use_cache=False).logits
        add_to_golden(
            arch,
            {"prune.logits": logits, "sparse_only.logits": sparse_only},
            {
                "sparse_only_drop": ",".join(map(str, dense)),
                "prune": ",".join(map(str, PRUNE[arch])),
                "prune_config": json.dumps(fields),
                "params": json.dumps(param_counts(model)),
            },
        )
        folder = os.path.join(mg.ROOT, arch)
        sizes = {f: os.path.getsize(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}
        print(arch, sizes)


if __name__ == "__main__":
    main()
