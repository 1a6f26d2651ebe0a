#!/usr/bin/env python3
"""Quantized eval time of `depthprune eval` against llama.cpp on the same GGUF file, in one run.

Both sides run the file's quantized weights on the CPU with the same threads over the same
non-overlapping windows of --ctx tokens (--windows of them), each window fed as one batch with
logits for every position. llama.cpp (through `llama-cpp-python`, built from source) is timed on
its forward passes alone (`Llama.eval` with `logits_all=True`; its log-softmax is not timed, which
favours it); depthprune is timed as `eval --json` reports its own scoring time (`tokens_per_s`:
forward and NLL, after loading). The two alternate for --rounds rounds; medians and the ratio
(llama.cpp's tokens/s over ours: above 1 means llama.cpp is faster, the issue asks for at most
1.5) are printed with the load average before each timing, because the machine may be shared.
Perplexities are printed too: llama.cpp quantizes activations to 8 bits for its quantized
products, so they agree only to about 1%.

    /path/to/venv-with-llama-cpp/bin/python scripts/bench_llamacpp.py --model gemma-3-270m-q4_k_m.gguf \\
        --text wiki-lf.txt --windows 8 --ctx 512 --threads 2 --rounds 2 --binary target/release/depthprune
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


def run_ours(args):
    cmd = ["/usr/bin/time", "-f", "%M", args.binary, "eval", args.model, "--text", args.text, "--ctx",
           str(args.ctx), "--max-tokens", str(args.ctx * args.windows), "--threads", str(args.threads), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    rss_mib = int(out.stderr.strip().splitlines()[-1]) / 1024
    return json.loads(out.stdout), rss_mib


class LlamaCpp:
    def __init__(self, args):
        from llama_cpp import Llama

        self.llm = Llama(model_path=args.model, n_ctx=args.ctx, n_batch=args.ctx, n_ubatch=args.ctx,
                         logits_all=True, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
        md = self.llm.metadata
        flag = md.get("tokenizer.ggml.add_bos_token")
        add_bos = flag == "true"
        with open(args.text, encoding="utf-8", newline="") as f:
            ids = list(self.llm.tokenize(f.read().encode("utf-8"), add_bos=False, special=False))
        if add_bos:
            ids = [self.llm.token_bos()] + ids
        n = args.ctx * args.windows
        self.windows = [ids[i:i + args.ctx] for i in range(0, n, args.ctx)]

    def run(self):
        import numpy as np

        nll, count, seconds = 0.0, 0, 0.0
        for win in self.windows:
            self.llm.reset()
            start = time.perf_counter()
            self.llm.eval(win)
            seconds += time.perf_counter() - start
            lg = np.array(self.llm.scores[: len(win)], dtype=np.float64)[:-1]
            m = lg.max(axis=1, keepdims=True)
            lse = np.log(np.exp(lg - m).sum(axis=1)) + m[:, 0]
            t = np.array(win[1:])
            nll += float((lse - lg[np.arange(len(t)), t]).sum())
            count += len(t)
        tokens = sum(len(w) for w in self.windows)
        return {"tokens_per_s": tokens / seconds, "perplexity": math.exp(nll / count)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a quantized GGUF file")
    p.add_argument("--text", required=True)
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--binary", default=os.environ.get("DEPTHPRUNE_BIN", os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "depthprune")))
    args = p.parse_args()
    doctor = subprocess.run([args.binary, "doctor", "--line", "--no-kernels", "--threads", str(args.threads)],
                            capture_output=True, text=True)
    print(doctor.stdout.strip() if doctor.returncode == 0 else "machine: (this binary has no `doctor`)")
    ref = LlamaCpp(args)
    ours_tps, ref_tps, ratios = [], [], []
    print(f"{os.path.basename(args.model)}: {args.windows} windows of {args.ctx} tokens, {args.threads} threads")
    for r in range(args.rounds):
        l0 = load()
        ours, rss = run_ours(args)
        l1 = load()
        theirs = ref.run()
        ours_tps.append(ours["tokens_per_s"])
        ref_tps.append(theirs["tokens_per_s"])
        ratios.append(theirs["tokens_per_s"] / ours["tokens_per_s"])
        print(f"round {r}: load {l0:.2f} depthprune {ours['tokens_per_s']:7.1f} tok/s (ppl {ours['perplexity']:.4f}, "
              f"RSS {rss:.0f} MiB)  load {l1:.2f} llama.cpp {theirs['tokens_per_s']:7.1f} tok/s "
              f"(ppl {theirs['perplexity']:.4f})  llama.cpp/ours {ratios[-1]:.3f}x  load after {load():.2f}",
              flush=True)
    print(f"median depthprune {statistics.median(ours_tps):.1f} tok/s, llama.cpp {statistics.median(ref_tps):.1f} "
          f"tok/s; median llama.cpp/ours {statistics.median(ratios):.3f}x (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
