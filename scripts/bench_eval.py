#!/usr/bin/env python3
"""Throughput of `depthprune eval` and `depthprune generate` against transformers, in one run.

Both sides use f32 on the CPU with the same number of threads, the same model, the same token
windows and the same scoring (log-softmax and NLL of every position but each window's first).
Reported: tokens/s for each and their ratio (ours / transformers, above 1 means faster), the
GFLOP/s each achieves, the perplexities (which must agree), generation tokens/s for
--new-tokens greedy tokens, and our peak RSS.

Until GGUF-to-HF conversion lands, the model is a randomly initialised SmolLM2-135M-shaped llama
(hidden 576, 30 layers, 9 heads, 3 kv heads, intermediate 1536, vocab 49152, tied) with a BPE
tokenizer trained on the text; it is created once under target/bench-model/.

    cargo build --release
    /tmp/pyref/bin/python scripts/bench_eval.py --windows 8 --ctx 512 --threads 2
"""

import argparse
import json
import math
import os
import re
import resource
import subprocess
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SHAPE = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    rope_theta=100000.0,
    tie_word_embeddings=True,
    bos_token_id=0,
    eos_token_id=0,
)


def make_model(path, text_path):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SHAPE)).eval()
    model.save_pretrained(path, safe_serialization=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=16384,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    with open(text_path, encoding="utf-8") as f:
        tok.train_from_iterator([f.read()], trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>").save_pretrained(path)


def flops_per_token(ctx):
    """Multiply-adds × 2 per forwarded token: every matmul weight once, plus attention scores and
    mixing over the full ctx × ctx matrix that both implementations compute."""
    h, i, L = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["num_hidden_layers"]
    d = h // SHAPE["num_attention_heads"]
    q, kv = SHAPE["num_attention_heads"] * d, SHAPE["num_key_value_heads"] * d
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * i
    attention = 2 * q * ctx
    return 2 * (L * (per_layer + attention) + h * SHAPE["vocab_size"])


def run_ours(binary, model, text, args):
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    cmd = [binary, "eval", model, "--text", text, "--ctx", str(args.ctx), "--max-tokens", str(args.ctx * args.windows),
           "--batch", str(args.batch), "--json"]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return json.loads(out.stdout), rss_mib


def run_reference(model_path, text, args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="sdpa").eval()
    # newline="": the file's bytes as they are (wikitext has CRLF line ends), as depthprune reads it.
    with open(text, encoding="utf-8", newline="") as f:
        ids = tok(f.read())["input_ids"][: args.ctx * args.windows]
    windows = torch.tensor(ids).view(-1, args.ctx)
    nll, count = 0.0, 0
    start = time.perf_counter()
    with torch.inference_mode():
        for b in range(0, windows.shape[0], args.batch):
            x = windows[b : b + args.batch]
            logits = model(x, use_cache=False).logits[:, :-1]
            lp = torch.log_softmax(logits.float(), -1)
            nll -= lp.gather(-1, x[:, 1:].unsqueeze(-1)).sum().item()
            count += x[:, 1:].numel()
    seconds = time.perf_counter() - start
    return {"tokens_per_s": windows.numel() / seconds, "perplexity": math.exp(nll / count), "seconds": seconds}, model, tok


def generate_ours(binary, model, args):
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    cmd = [binary, "generate", model, "--prompt", args.prompt, "--max-new-tokens", str(args.new_tokens), "--ignore-eos"]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    m = re.search(r"generated (\d+) tokens in ([\d.]+) s", out.stderr)
    return int(m.group(1)) / float(m.group(2))


def generate_reference(model, tok, args):
    import torch

    ids = tok(args.prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():  # warm-up, untimed
        model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=0)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                             pad_token_id=0)
    seconds = time.perf_counter() - start
    return (out.shape[1] - ids.shape[1]) / seconds


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--prompt", default="The history of the region begins")
    p.add_argument("--text", default=os.path.join(ROOT, "..", "shared", "data", "wikitext-2-raw-test.txt"))
    p.add_argument("--model", default=os.path.join(ROOT, "target", "bench-model", "smollm2-135m-random"))
    p.add_argument("--binary", default=os.environ.get("DEPTHPRUNE_BIN", os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "depthprune")))
    args = p.parse_args()
    if not os.path.exists(os.path.join(args.model, "config.json")):
        make_model(args.model, args.text)

    ours, rss = run_ours(args.binary, args.model, args.text, args)
    ref, model, tok = run_reference(args.model, args.text, args)
    gflop = flops_per_token(args.ctx) / 1e9
    print(f"eval: {args.windows} windows of {args.ctx} tokens, batch {args.batch}, {args.threads} threads")
    print(f"  depthprune    {ours['tokens_per_s']:9.1f} tokens/s  {ours['tokens_per_s'] * gflop:6.1f} GFLOP/s  "
          f"perplexity {ours['perplexity']:.4f}  peak RSS {rss:.0f} MiB")
    print(f"  transformers  {ref['tokens_per_s']:9.1f} tokens/s  {ref['tokens_per_s'] * gflop:6.1f} GFLOP/s  "
          f"perplexity {ref['perplexity']:.4f}")
    print(f"  ratio         {ours['tokens_per_s'] / ref['tokens_per_s']:.2f}x")
    rel = abs(ours["perplexity"] - ref["perplexity"]) / ref["perplexity"]
    if rel > 1e-3:
        print(f"  WARNING: perplexities differ by {rel:.2e} (relative)")
    g_ours = generate_ours(args.binary, args.model, args)
    g_ref = generate_reference(model, tok, args)
    print(f"generate: {args.new_tokens} new tokens, greedy, KV cache")
    print(f"  depthprune    {g_ours:9.1f} tokens/s")
    print(f"  transformers  {g_ref:9.1f} tokens/s")
    print(f"  ratio         {g_ours / g_ref:.2f}x")


if __name__ == "__main__":
    main()
