"""Records transformers' layer-importance scores for the tiny golden models.

For each tests/fixtures/golden/<arch>/, reads the model and the fixed `tokens` (2, T) from
golden.safetensors, treats each row as one calibration window, and writes scores_expected.json:
  bi                   mean over all tokens of 1 - cos(h[l], h[l+1]), per layer
  angular_last_token   d[n-1][l] = arccos(cos(h[l], h[l+n])) / pi on each window's last token, averaged
  angular_all_tokens   the same averaged over every token
  ppl_baseline         exp(mean NLL) over the windows (every position but each window's first)
  ppl_without_layer    the same with layer l removed
  greedy               SLEB order: repeatedly remove the layer whose removal gives the lowest ppl
h[l] is the input of layer l and h[L] the last layer's output before the final norm.
Run with: /tmp/pyref/bin/python scripts/golden_scores.py
"""
import json
import math
import os

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "golden")
GREEDY_STEPS = 3


def nll_of(model, layers, windows, skip):
    kept = torch.nn.ModuleList([l for i, l in enumerate(layers) if i not in skip])
    model.model.layers = kept
    model.config.num_hidden_layers = len(kept)
    for j, l in enumerate(kept):
        l.self_attn.layer_idx = j
    total, count = 0.0, 0
    with torch.no_grad():
        for x in windows:
            logits = model(x, use_cache=False).logits[0, :-1].double()
            lp = torch.log_softmax(logits, -1)
            tgt = x[0, 1:]
            total += -lp[torch.arange(len(tgt)), tgt].sum().item()
            count += len(tgt)
    model.model.layers = layers
    model.config.num_hidden_layers = len(layers)
    for j, l in enumerate(layers):
        l.self_attn.layer_idx = j
    return total / count


def scores(arch):
    d = os.path.join(ROOT, arch)
    model = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    tokens = load_file(os.path.join(d, "golden.safetensors"))["tokens"]
    windows = [tokens[i:i + 1] for i in range(tokens.shape[0])]
    layers = model.model.layers
    L = len(layers)
    pre_norm = {}
    model.model.norm.register_forward_hook(lambda m, inp, out: pre_norm.__setitem__("h", inp[0]))
    bi_sum = torch.zeros(L, dtype=torch.float64)
    ang_last = torch.zeros(L, L, dtype=torch.float64)
    ang_all = torch.zeros(L, L, dtype=torch.float64)
    n_tok = 0
    with torch.no_grad():
        for x in windows:
            out = model(x, output_hidden_states=True, use_cache=False)
            hs = [h[0].double() for h in list(out.hidden_states[:L]) + [pre_norm["h"]]]
            for l in range(L):
                bi_sum[l] += (1 - torch.nn.functional.cosine_similarity(hs[l], hs[l + 1], dim=-1)).sum()
            for n in range(1, L + 1):
                for l in range(L - n + 1):
                    cos = torch.nn.functional.cosine_similarity(hs[l], hs[l + n], dim=-1).clamp(-1, 1)
                    dist = torch.arccos(cos) / math.pi
                    ang_last[n - 1, l] += dist[-1]
                    ang_all[n - 1, l] += dist.sum()
            n_tok += hs[0].shape[0]
    base = math.exp(nll_of(model, layers, windows, set()))
    without = [math.exp(nll_of(model, layers, windows, {l})) for l in range(L)]
    removed, greedy = [], []
    for _ in range(GREEDY_STEPS):
        cand = [(math.exp(nll_of(model, layers, windows, set(removed) | {c})), c) for c in range(L) if c not in removed]
        ppl, c = min(cand, key=lambda t: (t[0], -t[1]))
        removed.append(c)
        greedy.append({"layer": c, "ppl": ppl})
    return {
        "windows": len(windows),
        "ctx": tokens.shape[1],
        "bi": (bi_sum / n_tok).tolist(),
        "angular_last_token": [(ang_last[n - 1, : L - n + 1] / len(windows)).tolist() for n in range(1, L + 1)],
        "angular_all_tokens": [(ang_all[n - 1, : L - n + 1] / n_tok).tolist() for n in range(1, L + 1)],
        "ppl_baseline": base,
        "ppl_without_layer": without,
        "greedy": greedy,
    }


for arch in ["llama", "mistral", "qwen2", "qwen3"]:
    out = os.path.join(ROOT, arch, "scores_expected.json")
    with open(out, "w") as f:
        json.dump(scores(arch), f, indent=1)
    print("wrote", out)
