#!/usr/bin/env python3
"""Reference numbers for the demo model, computed with HF transformers (PyTorch, f32, CPU).

transformers loads SmolLM2-135M-Instruct straight from the Q4_1 GGUF (dequantising it) and builds
its tokenizer from the GGUF vocabulary, so this is an independent implementation of everything
depthprune does with that file. The output, tests/fixtures/smollm2/reference.json, is small and
committed; CI compares depthprune against it without needing PyTorch.

Conventions (depthprune's tests use the same):
- text: ../shared/data/wikitext-2-raw-test.txt, read as UTF-8 exactly as stored (CRLF kept),
  tokenized as one string without special tokens;
- evaluation: EVAL_WINDOWS non-overlapping windows of CTX tokens from token 0, every token after
  the first of each window scored;
- calibration: CALIB_WINDOWS windows of CTX tokens from token CALIB_OFFSET (disjoint from eval);
- hidden states: h[0] is the embedding output (input of layer 0), h[l] the input of layer l, and
  h[L] the output of the last layer BEFORE the final norm (transformers' hidden_states[-1] is after
  the norm, so the pre-norm state is captured with a hook).

Usage: scripts/reference_smollm2.py GGUF_PATH [WIKITEXT_PATH]
(needs: pip install torch transformers gguf accelerate)
"""
import hashlib
import json
import math
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

CTX = 512
EVAL_WINDOWS = 8
CALIB_OFFSET = 65536
CALIB_WINDOWS = 8
PPL_CALIB_WINDOWS = 4
MAX_N = 12
REMOVE = 8

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
torch.manual_seed(0)

gguf_path = sys.argv[1]
text_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "../../shared/data/wikitext-2-raw-test.txt")
folder, name = os.path.split(os.path.abspath(gguf_path))
tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
model.eval()
L = model.config.num_hidden_layers

with open(text_path, "rb") as f:
    text = f.read().decode("utf-8")
ids = tok(text, add_special_tokens=False).input_ids
ids_bytes = b"".join(i.to_bytes(4, "little") for i in ids)

probe_strings = [
    "In 2024, 1234567 people paid $3.14.",
    "Hello world! How are you?",
    "  leading spaces and\ttabs\nnewlines\r\n",
    "naïve café — ünïcödé 日本語 🙂",
    "def f(x):\n    return x**2  # comment",
    "<|im_start|>user\nHi<|im_end|>",
]
probe = {s: tok(s, add_special_tokens=False).input_ids for s in probe_strings}

layers = model.model.layers
pre_norm = {}
model.model.norm.register_forward_hook(lambda m, inp, out: pre_norm.__setitem__("h", inp[0]))


def windows(offset, count):
    out = []
    for w in range(count):
        a = offset + w * CTX
        out.append(torch.tensor([ids[a:a + CTX]]))
    return out


def nll_of(windows_, skip=()):
    """Mean NLL over windows with the layers in `skip` removed (virtually)."""
    kept = torch.nn.ModuleList([l for i, l in enumerate(layers) if i not in skip])
    model.model.layers = kept
    model.config.num_hidden_layers = len(kept)
    for j, l in enumerate(kept):
        l.self_attn.layer_idx = j
    total, count = 0.0, 0
    with torch.no_grad():
        for x in windows_:
            logits = model(x, use_cache=False).logits[0, :-1].double()
            lp = torch.log_softmax(logits, -1)
            tgt = x[0, 1:]
            total += -lp[torch.arange(len(tgt)), tgt].sum().item()
            count += len(tgt)
    model.model.layers = layers
    model.config.num_hidden_layers = L
    for j, l in enumerate(layers):
        l.self_attn.layer_idx = j
    return total / count, count


eval_w = windows(0, EVAL_WINDOWS)
calib_w = windows(CALIB_OFFSET, CALIB_WINDOWS)
dense_nll, eval_tokens = nll_of(eval_w)

# Block Influence and angular distance on the calibration windows.
bi_sum = torch.zeros(L, dtype=torch.float64)
bi_tokens = 0
ang_last = torch.zeros(MAX_N, L, dtype=torch.float64)
ang_all = torch.zeros(MAX_N, L, dtype=torch.float64)
all_tokens = 0
first_logits = None
with torch.no_grad():
    for wi, x in enumerate(calib_w):
        out = model(x, output_hidden_states=True, use_cache=False)
        hs = list(out.hidden_states[:L]) + [pre_norm["h"]]
        hs = [h[0].double() for h in hs]  # [T, H] each, L+1 of them
        if wi == 0:
            first_logits = out.logits[0, :4, :8].tolist()
            first_hidden = [hs[l][:2, :4].tolist() for l in range(L + 1)]
        T = hs[0].shape[0]
        for l in range(L):
            cos = torch.nn.functional.cosine_similarity(hs[l], hs[l + 1], dim=-1)
            bi_sum[l] += (1 - cos).sum()
        bi_tokens += T
        for n in range(1, MAX_N + 1):
            for l in range(L - n + 1):
                cos = torch.nn.functional.cosine_similarity(hs[l], hs[l + n], dim=-1).clamp(-1, 1)
                d = torch.arccos(cos) / math.pi
                ang_last[n - 1, l] += d[-1]
                ang_all[n - 1, l] += d.sum()
        all_tokens += T
bi = (bi_sum / bi_tokens).tolist()
ang_last = (ang_last / CALIB_WINDOWS).tolist()
ang_all = (ang_all / all_tokens).tolist()
ang_last = [row[: L - n] for n, row in enumerate(ang_last)]
ang_all = [row[: L - n] for n, row in enumerate(ang_all)]

# One-shot per-layer perplexity (Shortened LLaMA) on fewer calibration windows.
ppl_w = calib_w[:PPL_CALIB_WINDOWS]
ppl_base = math.exp(nll_of(ppl_w)[0])
ppl_layer = [math.exp(nll_of(ppl_w, skip={l})[0]) for l in range(L)]

bi_choice = sorted(sorted(range(L), key=lambda l: (bi[l], -l))[:REMOVE])
best_start = min(range(L - REMOVE + 1), key=lambda l: ang_last[REMOVE - 1][l])
ang_choice = list(range(best_start, best_start + REMOVE))
ppl_choice = sorted(sorted(range(L), key=lambda l: (ppl_layer[l], -l))[:REMOVE])
last_choice = list(range(L - 1 - REMOVE, L - 1))
pruned = {}
for name_, choice in [("bi", bi_choice), ("angular", ang_choice), ("ppl", ppl_choice), ("last", last_choice)]:
    nll, _ = nll_of(eval_w, skip=set(choice))
    pruned[name_] = {"removed": choice, "eval_nll": nll, "eval_ppl": math.exp(nll)}

ref = {
    "generated_by": "scripts/reference_smollm2.py (transformers %s, torch %s)" % (__import__("transformers").__version__, torch.__version__),
    "gguf_sha256": hashlib.sha256(open(gguf_path, "rb").read()).hexdigest(),
    "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    "n_tokens": len(ids),
    "tokens_sha256": hashlib.sha256(ids_bytes).hexdigest(),
    "first_tokens": ids[:64],
    "probe_tokens": probe,
    "ctx": CTX,
    "eval": {"offset": 0, "windows": EVAL_WINDOWS, "tokens_scored": eval_tokens, "nll": dense_nll, "ppl": math.exp(dense_nll)},
    "calibration": {"offset": CALIB_OFFSET, "windows": CALIB_WINDOWS, "ppl_windows": PPL_CALIB_WINDOWS},
    "first_window_logits_4x8": first_logits,
    "first_window_hidden_2x4": first_hidden,
    "bi": bi,
    "angular_last_token": ang_last,
    "angular_all_tokens": ang_all,
    "ppl_baseline": ppl_base,
    "ppl_without_layer": ppl_layer,
    "remove": REMOVE,
    "pruned": pruned,
}
out = os.path.join(os.path.dirname(__file__), "../tests/fixtures/smollm2/reference.json")
with open(out, "w") as f:
    json.dump(ref, f, indent=1)
print("wrote", out, "dense eval ppl", math.exp(dense_nll), {k: v["eval_ppl"] for k, v in pruned.items()})
