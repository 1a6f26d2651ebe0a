#!/usr/bin/env python3
"""The reference experiment of issue 23 for the post-norm families, in transformers.

Removes the layers START..END of a Gemma 2/3 (or OLMo 2) HF folder and fits a map Q·diag(s) on
the normalised MLP output of layer START-1 (Q orthogonal, s a per-channel scale), so that
`n·Q·diag(s) ≈ Y − X + r`:
- n: layer START-1's `down_proj` output divided by its RMS (before the post-MLP norm's scale);
- r: what the post-MLP norm adds to the stream (n times the norm's scale);
- X: layer START-1's output; Y: the dense model's output of layer END-1.

The fit alternates ITERS times an orthogonal Procrustes step for Q (s fixed) with a per-channel
least-squares step for s (Q fixed). `--procrustes` picks the Q step:
- `cross`: Q = polar(NᵀZ·diag(s)), the cross term alone (exact when NᵀN is a multiple of I);
- `rescaled`: Q = polar(NᵀZ·diag(1/s)), the exact Procrustes solution of ‖N·Q − Z·diag(1/s)‖;
- `plain`: Q = polar(NᵀZ) once, then the scale alone.
Q folds into `down_proj` (W ← QᵀW) and s into `post_feedforward_layernorm` (Gemma stores s − 1).

Calibration: WINDOWS windows of CTX tokens from token OFFSET of the text, each window's first
position left out of the fit. Evaluation: the first EVAL windows of CTX tokens from token 0,
every position but each window's first predicting the next token (as `scripts/hf_perplexity.py`).
Prints the unhealed and healed perplexities; `--out DIR` saves the healed, pruned folder.

Usage: scripts/ref_postnorm_fold.py FOLDER TEXT --drop 6..12 [--procrustes cross] [--iters 20]
(needs: torch, transformers; not run by CI)
"""

import argparse
import math

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def polar(x):
    u, _, vh = torch.linalg.svd(x)
    return u @ vh


def fit(n, z, iters, procrustes):
    """Q, s with n·Q·diag(s) ≈ z (f64 rows), and the relative residual."""
    g, c = n.T @ n, n.T @ z
    h = n.shape[1]

    def scale(q):
        quad = torch.einsum("ij,ik,kj->j", q, g, q)
        cross = torch.einsum("ij,ij->j", q, c)
        return cross / quad.clamp_min(1e-30)

    q = torch.eye(h, dtype=n.dtype)
    if procrustes == "plain":
        q = polar(c)
        s = scale(q)
    else:
        s = scale(q)
        for _ in range(iters):
            d = s if procrustes == "cross" else 1.0 / s
            q = polar(c * d[None, :])
            s = scale(q)
    res = ((n @ q) * s - z).pow(2).sum() / z.pow(2).sum()
    return q, s, res.item()


def windows(ids, offset, ctx, count):
    return [ids[offset + w * ctx : offset + (w + 1) * ctx] for w in range(count)]


@torch.no_grad()
def perplexity(model, wins):
    nll, n = 0.0, 0
    for w in wins:
        x = torch.tensor([w])
        lp = torch.log_softmax(model(x, use_cache=False).logits[0, :-1].float(), -1)
        nll -= lp.gather(1, x[0, 1:, None]).sum().item()
        n += x.shape[1] - 1
    return math.exp(nll / n)


@torch.no_grad()
def collect(model, wins, start, end):
    """Rows n, z (f64) at the fold layer start-1, first position of each window left out."""
    layers = model.model.layers
    grab = {}
    hooks = [
        layers[start - 1].post_feedforward_layernorm.register_forward_hook(
            lambda m, a, o: grab.update(u=a[0][0].double(), r=o[0].double())
        ),
        layers[start - 1].register_forward_hook(lambda m, a, o: grab.update(x=o[0].double())),
        layers[end - 1].register_forward_hook(lambda m, a, o: grab.update(y=o[0].double())),
    ]
    ns, zs = [], []
    eps = model.config.rms_norm_eps
    for w in wins:
        model.model(torch.tensor([w]), use_cache=False)
        u = grab["u"]
        n = u / torch.sqrt(u.pow(2).mean(-1, keepdim=True) + eps)
        z = grab["y"] - grab["x"] + grab["r"]
        ns.append(n[1:])
        zs.append(z[1:])
    for h in hooks:
        h.remove()
    return torch.cat(ns), torch.cat(zs)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("text")
    p.add_argument("--drop", required=True, help="START..END, half-open")
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--windows", type=int, default=16, help="calibration windows")
    p.add_argument("--offset", type=int, default=65536)
    p.add_argument("--eval", type=int, default=16, help="evaluation windows from token 0")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--procrustes", default="cross", help="cross, rescaled or plain; a comma list tries each")
    p.add_argument("--skip-unhealed", action="store_true", help="do not evaluate the unhealed prune")
    p.add_argument("--out")
    a = p.parse_args()
    start, end = (int(v) for v in a.drop.split(".."))
    tok = AutoTokenizer.from_pretrained(a.folder)
    model = AutoModelForCausalLM.from_pretrained(a.folder, dtype=torch.float32)
    model.eval()
    with open(a.text, "rb") as f:
        ids = tok(f.read().decode("utf-8"))["input_ids"]
    n, z = collect(model, windows(ids, a.offset, a.ctx, a.windows), start, end)
    layer = model.model.layers[start - 1]
    plus_one = model.config.model_type.startswith("gemma")
    w0 = layer.post_feedforward_layernorm.weight.double() + (1.0 if plus_one else 0.0)
    res0 = (n * w0 - z).pow(2).sum() / z.pow(2).sum()
    kept = [i for i in range(model.config.num_hidden_layers) if not start <= i < end]
    cfg = model.config
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [cfg.layer_types[i] for i in kept]
    model.model.layers = torch.nn.ModuleList(model.model.layers[i] for i in kept)
    cfg.num_hidden_layers = len(kept)
    ev = windows(ids, 0, a.ctx, a.eval)
    if not a.skip_unhealed:
        print(f"unhealed perplexity {perplexity(model, ev):.4f}", flush=True)
    down0 = layer.mlp.down_proj.weight.detach().clone()
    shift = 1.0 if plus_one else 0.0
    for variant in a.procrustes.split(","):
        q, s, res = fit(n, z, a.iters, variant)
        print(f"{variant}: fit relative residual {res:.4f} (unhealed {res0.item():.4f})", flush=True)
        with torch.no_grad():
            layer.mlp.down_proj.weight.copy_((q.T @ down0.double()).float())
            layer.post_feedforward_layernorm.weight.copy_((s - shift).float())
        print(f"{variant}: healed perplexity {perplexity(model, ev):.4f} ({a.iters} iterations)", flush=True)
    if a.out:
        model.save_pretrained(a.out)
        tok.save_pretrained(a.out)


if __name__ == "__main__":
    main()
