#!/usr/bin/env python3
"""Perplexity of an HF folder under transformers, on the protocol `depthprune eval` uses.

The text is read as UTF-8 bytes (CRLF kept), tokenized once as `tokenizer(text)` (special
tokens added once, at the start), cut into non-overlapping windows of CTX tokens from token 0,
and the first WINDOWS of them are scored: every position but each window's first predicts the
next token. Prints one line: the folder, the windows scored and the perplexity. Used to check
healed checkpoints (issue 23); not run by CI (it needs PyTorch).

Usage: scripts/hf_perplexity.py FOLDER TEXT [--ctx 512] [--windows 16]
(needs: torch, transformers)
"""

import argparse
import math

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("text")
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--windows", type=int, default=16)
    a = p.parse_args()
    tok = AutoTokenizer.from_pretrained(a.folder)
    model = AutoModelForCausalLM.from_pretrained(a.folder, torch_dtype=torch.float32)
    model.eval()
    with open(a.text, "rb") as f:
        text = f.read().decode("utf-8")
    ids = tok(text)["input_ids"][: a.ctx * a.windows]
    nll, n = 0.0, 0
    with torch.no_grad():
        for w in range(len(ids) // a.ctx):
            x = torch.tensor([ids[w * a.ctx : (w + 1) * a.ctx]])
            logits = model(x).logits[0, :-1].float()
            lp = torch.log_softmax(logits, -1)
            nll -= lp.gather(1, x[0, 1:, None]).sum().item()
            n += x.shape[1] - 1
    print(f"{a.folder}: {n // (a.ctx - 1)} windows of {a.ctx}, perplexity {math.exp(nll / n):.4f}")


if __name__ == "__main__":
    main()
