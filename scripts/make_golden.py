#!/usr/bin/env python3
"""Builds the golden fixtures that tests/golden_model.rs checks the Rust forward pass against.

For each of llama, mistral, qwen2 and qwen3 it creates a tiny random model with transformers,
saves it as an HF folder under tests/fixtures/golden/<arch>/ (config.json + f32
model.safetensors), runs it on fixed tokens and writes golden.safetensors beside it:

  tokens                 (2, T) int64 input ids
  embed                  (2, T, H) embeddings
  layer{i}.input/attn/mlp/output  per-layer taps (hooks; before the final norm)
  hidden{i}              transformers' output_hidden_states[i] (the last one is after the norm)
  logits                 (2, T, V)
  skip.logits            logits of the model with the layers in SKIP deleted from model.layers
  generate.prompt        (P,) prompt ids;  generate.tokens  (N,) greedy generate() output

The llama folder also gets a small byte-level BPE tokenizer with a chat template, the text
eval.txt, and eval_expected.json: token ids, perplexities under both window conventions, and
KL(dense || skip) with top-1 agreement, computed here with plain torch from the definitions in
src/eval/windows.rs.

The dense families of issue 17 (gemma2, gemma3, phi3, olmo2) get the same tensors under
tests/fixtures/golden/families/<arch>/, with 6 layers, plus
  short.logits           logits of the first 12 tokens (Phi-3: LongRoPE's short factors)
  pruned.logits          logits of `depthprune prune --drop SKIP`'s output as transformers
                         loads it (checked here against skip.logits)
so tests/golden_families.rs compares against transformers without torch. They need the
depthprune binary:
    DEPTHPRUNE=target/debug/depthprune python scripts/make_golden.py families
(`families` builds only those; no argument builds the four llama-family fixtures and the
families too.)

Run from the repository root with a Python that has torch, transformers (5.x) and safetensors:
    /tmp/pyref/bin/python scripts/make_golden.py
CI never runs this; it only reads what it wrote.
"""

import copy
import json
import math
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "golden")
SKIP = [1, 2]
SEQ_LEN = 24
PROMPT_LEN = 8
NEW_TOKENS = 12

COMMON = dict(
    vocab_size=300,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=1,
)

CASES = {
    # Untied, llama3 RoPE scaling that touches every band of the tiny head (head_dim 8).
    "llama": (
        LlamaConfig,
        LlamaForCausalLM,
        dict(
            tie_word_embeddings=False,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            rope_theta=10000.0,
        ),
    ),
    # Untied, a sliding window shorter than the sequence.
    "mistral": (MistralConfig, MistralForCausalLM, dict(tie_word_embeddings=False, sliding_window=8, rope_theta=1000.0)),
    # Tied, q/k/v bias.
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(tie_word_embeddings=True, rope_theta=10000.0)),
    # Tied, q/k norms, head_dim 16 != hidden / heads = 8.
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, dict(tie_word_embeddings=True, head_dim=16, rope_theta=10000.0)),
}

EVAL_TEXT = """The old lighthouse stood at the end of a narrow spit of rock, and for most of the year nobody went there.
Its keeper had left long ago, but the lamp still turned every night, driven by a clockwork that someone wound once a week.
Fishermen said the light was a little late in winter and a little early in summer, as if it kept its own calendar.

In the village below, the baker rose at four, the schoolteacher at six, and the harbour master whenever the tide told him to.
They argued about the weather, about the price of flour, and about whether the new road would bring visitors or only dust.
Children ran along the sea wall collecting shells, and counted the ships that passed without stopping.

One autumn a storm took the roof off the chapel and the bell fell into the square.
It did not crack. The villagers rolled it to the lighthouse on a cart, because the tower was the only place high enough to hang it,
and from then on the bell rang whenever the lamp began to turn, a low note that carried far over the water.

Years later, a surveyor came with maps and instruments and asked why the bell rang at dusk.
Nobody could give him a single answer. The baker said it was for the ships, the teacher said it was for the children,
and the harbour master said it was simply the time, and that the sea liked to know it.
"""

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|user|>\n{{ message['content'] | trim }}\n"
    "{% elif message['role'] == 'assistant' %}<|assistant|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% else %}{{ raise_exception('unknown role ' + message['role']) }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def randomize(model, gen):
    """Gives every parameter a scale that makes errors visible (the default init is tiny)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))


def decoder_output(out):
    return out[0] if isinstance(out, tuple) else out


def taps(model, tokens):
    """Runs the model with hooks on every layer and returns the golden tensors."""
    rec = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        def pre(mod, args, kwargs, i=i):
            x = args[0] if args else kwargs["hidden_states"]
            rec[f"layer{i}.input"] = x.detach().clone()

        def post(mod, args, kwargs, out, i=i):
            rec[f"layer{i}.output"] = decoder_output(out).detach().clone()

        def attn(mod, args, kwargs, out, i=i):
            rec[f"layer{i}.attn"] = decoder_output(out).detach().clone()

        def mlp(mod, args, out, i=i):
            rec[f"layer{i}.mlp"] = out.detach().clone()

        hooks.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        hooks.append(layer.register_forward_hook(post, with_kwargs=True))
        hooks.append(layer.self_attn.register_forward_hook(attn, with_kwargs=True))
        hooks.append(layer.mlp.register_forward_hook(mlp))
    with torch.no_grad():
        out = model(tokens, output_hidden_states=True, use_cache=False)
    for h in hooks:
        h.remove()
    rec["logits"] = out.logits
    rec["embed"] = out.hidden_states[0]
    for i, h in enumerate(out.hidden_states):
        rec[f"hidden{i}"] = h
    return rec


def without_layers(model, drop):
    """A copy of the model with layers `drop` deleted from model.layers and the config updated."""
    m = copy.deepcopy(model)
    keep = [i for i in range(len(m.model.layers)) if i not in drop]
    m.model.layers = torch.nn.ModuleList([m.model.layers[i] for i in keep])
    m.config.num_hidden_layers = len(keep)
    if getattr(m.config, "layer_types", None) is not None:
        m.config.layer_types = [m.config.layer_types[i] for i in keep]
    return m


def build(arch, config_cls, model_cls, extra, seed):
    gen = torch.Generator().manual_seed(seed)
    cfg = config_cls(**COMMON, **extra)
    cfg._attn_implementation = "eager"
    model = model_cls(cfg).eval()
    randomize(model, gen)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0

    out = os.path.join(ROOT, arch)
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, safe_serialization=True)
    for extra_file in ("generation_config.json",):
        path = os.path.join(out, extra_file)
        if os.path.exists(path):
            os.remove(path)

    tokens = torch.randint(2, COMMON["vocab_size"], (2, SEQ_LEN), generator=gen)
    rec = taps(model, tokens)
    rec["tokens"] = tokens
    with torch.no_grad():
        rec["skip.logits"] = without_layers(model, SKIP)(tokens, use_cache=False).logits
        prompt = tokens[:1, :PROMPT_LEN]
        gen_out = model.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=True)
    rec["generate.prompt"] = prompt[0]
    rec["generate.tokens"] = gen_out[0, PROMPT_LEN:]
    tensors = {k: v.clone().contiguous().to(torch.int64 if v.dtype == torch.int64 else torch.float32) for k, v in rec.items()}
    save_file(tensors, os.path.join(out, "golden.safetensors"), metadata={"skip": ",".join(map(str, SKIP))})
    return model


def make_tokenizer(out):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=COMMON["vocab_size"],
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([EVAL_TEXT], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def nll_rows(logits, targets):
    return torch.nn.functional.cross_entropy(logits.double(), targets, reduction="none")


def eval_expected(model, tok, out):
    ids = tok(EVAL_TEXT)["input_ids"]
    n = len(ids)
    t = torch.tensor(ids)
    skipped = without_layers(model, SKIP)
    res = {"ids": ids, "skip": SKIP}

    # Chunks: floor(n / ctx) windows, positions 1.. of each scored.
    ctx = 16
    nll, kl, agree, count = 0.0, 0.0, 0, 0
    windows = t[: (n // ctx) * ctx].view(-1, ctx)
    with torch.no_grad():
        dense = model(windows, use_cache=False).logits[:, :-1].reshape(-1, COMMON["vocab_size"])
        pruned = skipped(windows, use_cache=False).logits[:, :-1].reshape(-1, COMMON["vocab_size"])
    targets = windows[:, 1:].reshape(-1)
    nll = nll_rows(pruned, targets).sum().item()
    ref_nll = nll_rows(dense, targets).sum().item()
    lp_d = torch.log_softmax(dense.double(), -1)
    lp_p = torch.log_softmax(pruned.double(), -1)
    kl = (lp_d.exp() * (lp_d - lp_p)).sum(-1).sum().item()
    agree = (dense.argmax(-1) == pruned.argmax(-1)).sum().item()
    count = targets.numel()
    res["chunks"] = {
        "ctx": ctx,
        "windows": windows.shape[0],
        "tokens": count,
        "skip_perplexity": math.exp(nll / count),
        "dense_perplexity": math.exp(ref_nll / count),
        "mean_kl": kl / count,
        "top1_agreement": agree / count,
    }

    # Sliding, as in transformers' perplexity guide: score only tokens no earlier window scored.
    ctx, stride = 16, 6
    prev_end, begin, total, count, windows = 0, 0, 0.0, 0, 0
    while True:
        end = min(begin + ctx, n)
        trg_len = end - prev_end
        x = t[begin:end].unsqueeze(0)
        labels = x.clone()
        labels[:, :-trg_len] = -100
        with torch.no_grad():
            logits = model(x, use_cache=False).logits[0, :-1]
        lab = labels[0, 1:]
        keep = lab != -100
        total += nll_rows(logits[keep], lab[keep]).sum().item()
        count += int(keep.sum())
        windows += 1
        prev_end = end
        if end == n:
            break
        begin += stride
    res["sliding"] = {"ctx": ctx, "stride": stride, "windows": windows, "tokens": count, "perplexity": math.exp(total / count)}

    res["chat"] = {
        "prompt": "  Name three colours. ",
        "rendered": tok.apply_chat_template(
            [{"role": "user", "content": "  Name three colours. "}], tokenize=False, add_generation_prompt=True
        ),
    }
    res["chat"]["ids"] = tok(res["chat"]["rendered"], add_special_tokens=False)["input_ids"]
    with open(os.path.join(out, "eval_expected.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(ROOT, "eval.txt"), "w") as f:
        f.write(EVAL_TEXT)


def main():
    if sys.argv[1:] == ["families"]:
        import make_golden_families

        make_golden_families.main()
        return
    torch.manual_seed(0)
    os.makedirs(ROOT, exist_ok=True)
    models = {}
    for seed, (arch, (cfg_cls, model_cls, extra)) in enumerate(CASES.items()):
        models[arch] = build(arch, cfg_cls, model_cls, extra, seed + 1)
    out = os.path.join(ROOT, "llama")
    tok = make_tokenizer(out)
    eval_expected(models["llama"], tok, out)
    for arch in CASES:
        sizes = {f: os.path.getsize(os.path.join(ROOT, arch, f)) for f in sorted(os.listdir(os.path.join(ROOT, arch)))}
        print(arch, sizes)
    import make_golden_families

    make_golden_families.main()


if __name__ == "__main__":
    main()
