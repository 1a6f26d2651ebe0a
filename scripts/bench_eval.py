#!/usr/bin/env python3
"""Eval throughput of `depthprune eval` against transformers on a real checkpoint, in one run.

Both sides run f32 on the CPU with the same threads, the same model folder, the same token windows
(non-overlapping, --ctx tokens each, --windows of them) and the same scoring (NLL of every position
but each window's first). The two are interleaved for --rounds rounds and the medians reported, so
the ratio (ours / transformers, above 1 means we are faster) is measured under the same load; the
load average is printed next to every timing because the machine may be shared.

Reported: tokens/s, GFLOP/s (matmul weights, attention over the causal half and the LM head), the
perplexities (which must agree) and our peak RSS. Extra depthprune flags go after `--`, e.g.
`-- --compute bf16` (then --model should be a bf16 folder). The machine's one-line report
(`depthprune doctor --line`: CPU, peak f32/bf16/int8 rates per core, threads) is printed first.

    cargo build --release
    /path/to/venv-with-torch/bin/python scripts/bench_eval.py --model SMOLLM2_F32_DIR --text wiki.txt \
        --windows 16 --ctx 512 --threads 2 --rounds 3

--ours-only needs no torch: it times our own paths against each other, interleaved round by
round, each as a ratio to the first (`f32`), with the kernels each run chose and their measured
GFLOP/s. Variants: f32, bf16 (kernel measured), bf16-native, bf16-widen, bf16-tiles, and with
--gguf FILE (a quantized GGUF of the same model) gguf (kernel measured), gguf-widen, gguf-tiles,
gguf-f32 (the file dequantized on load):

    python3 scripts/bench_eval.py --ours-only --model SMOLLM2_F32_DIR --gguf SMOLLM2.Q4_K_M.gguf \
        --text wiki.txt --windows 16 --ctx 512 --rounds 3
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def load():
    return os.getloadavg()[0]


def flops_per_token(cfg, ctx):
    """2 × multiply-adds per forwarded token: every matmul weight once, the LM head, and attention
    scores and mixing over the causal half of the ctx × ctx matrix (what a causal kernel needs)."""
    h, i, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    d = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * i
    attention = 2 * q * (ctx + 1) / 2
    return 2 * (L * (per_layer + attention) + h * cfg["vocab_size"])


VARIANTS = {
    "f32": (False, ["--compute", "f32"]),
    "bf16": (False, ["--compute", "bf16"]),
    "bf16-native": (False, ["--compute", "bf16", "--kernel", "native"]),
    "bf16-widen": (False, ["--compute", "bf16", "--kernel", "widen"]),
    "bf16-tiles": (False, ["--compute", "bf16", "--kernel", "tiles"]),
    "gguf": (True, []),
    "gguf-widen": (True, ["--kernel", "widen"]),
    "gguf-tiles": (True, ["--kernel", "tiles"]),
    "gguf-f32": (True, ["--compute", "f32"]),
}


def machine_line(binary, threads):
    """`depthprune doctor --line`, or why there is none (an older binary)."""
    out = subprocess.run([binary, "doctor", "--line", "--no-kernels", "--threads", str(threads)], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "machine: (this binary has no `doctor`)"


def kernels_of(result):
    """The kernels a run chose, e.g. `bf16/many native (native 233, widen 115, tiles 98)`."""
    parts = []
    for k in result.get("kernels", []):
        rates = ", ".join(f"{name} {g:.0f}" for name, g in k.get("gflops", {}).items())
        parts.append(f"{k['weight']}/{k['rows']} {k['kernel']} {k['by']}" + (f" ({rates})" if rates else ""))
    return "; ".join(parts)


def ours_only(args):
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    for n in names:
        if n not in VARIANTS:
            raise SystemExit(f"error: unknown variant `{n}`; known: {', '.join(VARIANTS)}")
        if VARIANTS[n][0] and not args.gguf:
            raise SystemExit(f"error: variant `{n}` needs --gguf FILE")
    with open(os.path.join(args.model, "config.json")) as f:
        gflop = flops_per_token(json.load(f), args.ctx) / 1e9
    print(f"eval: {args.windows} windows of {args.ctx} tokens, batch {args.batch}, {args.threads} threads, "
          f"{gflop:.3f} GFLOP/token")
    tps = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names:
            gguf, flags = VARIANTS[n]
            l0 = load()
            res, rss = run_ours(args, flags + args.extra, model=args.gguf if gguf else args.model)
            tps[n].append(res["tokens_per_s"])
            print(f"round {r} {n:<12} load {l0:5.2f}  {res['tokens_per_s']:7.1f} tok/s "
                  f"({res['tokens_per_s'] * gflop:6.1f} GFLOP/s)  ppl {res['perplexity']:.4f}  RSS {rss:6.0f} MiB  "
                  f"compute {res.get('compute')}  kernels: {kernels_of(res)}", flush=True)
    base = statistics.median(tps[names[0]])
    print(f"medians (ratio to {names[0]}), load now {load():.2f}:")
    for n in names:
        med = statistics.median(tps[n])
        print(f"  {n:<12} {med:7.1f} tok/s  {med / base:5.3f}x")


def run_ours(args, extra, model=None):
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    cmd = ["/usr/bin/time", "-f", "%M", args.binary, "eval", model or args.model, "--text", args.text, "--ctx", str(args.ctx),
           "--max-tokens", str(args.ctx * args.windows), "--batch", str(args.batch), "--json", *extra]
    if args.threads_flag:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    rss_mib = int(out.stderr.strip().splitlines()[-1]) / 1024
    return json.loads(out.stdout), rss_mib


class Reference:
    def __init__(self, args):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(args.threads)
        self.torch = torch
        tok = AutoTokenizer.from_pretrained(args.model)
        self.model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32,
                                                          attn_implementation="sdpa").eval()
        # newline="": the file's bytes as they are (wikitext has CRLF line ends), as depthprune reads it.
        with open(args.text, encoding="utf-8", newline="") as f:
            ids = tok(f.read())["input_ids"][: args.ctx * args.windows]
        self.windows = torch.tensor(ids).view(-1, args.ctx)
        self.batch = args.batch

    def run(self):
        torch = self.torch
        nll, count = 0.0, 0
        start = time.perf_counter()
        with torch.inference_mode():
            for b in range(0, self.windows.shape[0], self.batch):
                x = self.windows[b : b + self.batch]
                logits = self.model(x, use_cache=False).logits[:, :-1]
                lp = torch.log_softmax(logits.float(), -1)
                nll -= lp.gather(-1, x[:, 1:].unsqueeze(-1)).sum().item()
                count += x[:, 1:].numel()
        seconds = time.perf_counter() - start
        return {"tokens_per_s": self.windows.numel() / seconds, "perplexity": math.exp(nll / count)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="an f32 HF folder (the real SmolLM2, made by convert)")
    p.add_argument("--text", required=True, help="a UTF-8 text file, e.g. WikiText-2's test split")
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-reference", action="store_true", help="time only depthprune")
    p.add_argument("--ours-only", action="store_true",
                   help="no torch: time our own paths against each other (--variants), ratios to the first")
    p.add_argument("--variants", default=None,
                   help="comma-separated, for --ours-only (default: f32,bf16,bf16-native,bf16-widen, "
                        "and gguf,gguf-widen,gguf-tiles,gguf-f32 with --gguf)")
    p.add_argument("--gguf", default=None, help="a quantized GGUF of the same model, for the gguf variants")
    p.add_argument("--binary", default=os.environ.get("DEPTHPRUNE_BIN", os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "depthprune")))
    p.add_argument("extra", nargs="*", help="extra depthprune eval flags (after --)")
    args = p.parse_args()
    helptext = subprocess.run([args.binary, "eval", "--help"], capture_output=True, text=True).stdout
    args.threads_flag = "--threads" in helptext  # older binaries (the baseline) only read RAYON_NUM_THREADS
    print(machine_line(args.binary, args.threads))
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.ours_only:
        if args.variants is None:
            args.variants = "f32,bf16,bf16-native,bf16-widen" + (",gguf,gguf-widen,gguf-tiles,gguf-f32" if args.gguf else "")
        return ours_only(args)
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    gflop = flops_per_token(cfg, args.ctx) / 1e9
    ref = None if args.no_reference else Reference(args)
    ours_tps, ref_tps, ratios = [], [], []
    print(f"eval: {args.windows} windows of {args.ctx} tokens, batch {args.batch}, {args.threads} threads, "
          f"{gflop:.3f} GFLOP/token")
    for r in range(args.rounds):
        l0 = load()
        ours, rss = run_ours(args, args.extra)
        line = (f"round {r}: load {l0:.2f}  depthprune {ours['tokens_per_s']:7.1f} tok/s "
                f"({ours['tokens_per_s'] * gflop:5.1f} GFLOP/s, ppl {ours['perplexity']:.4f}, RSS {rss:.0f} MiB)")
        ours_tps.append(ours["tokens_per_s"])
        if ref is not None:
            theirs = ref.run()
            ref_tps.append(theirs["tokens_per_s"])
            ratios.append(ours["tokens_per_s"] / theirs["tokens_per_s"])
            line += (f"  transformers {theirs['tokens_per_s']:7.1f} tok/s (ppl {theirs['perplexity']:.4f})"
                     f"  ratio {ratios[-1]:.3f}x")
            rel = abs(ours["perplexity"] - theirs["perplexity"]) / theirs["perplexity"]
            if rel > 1e-3:
                line += f"  WARNING: perplexities differ by {rel:.2e}"
        print(line + f"  load after {load():.2f}", flush=True)
    med = statistics.median(ours_tps)
    print(f"median depthprune {med:.1f} tok/s = {med * gflop:.1f} GFLOP/s")
    if ratios:
        print(f"median transformers {statistics.median(ref_tps):.1f} tok/s; "
              f"median ratio {statistics.median(ratios):.3f}x (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
