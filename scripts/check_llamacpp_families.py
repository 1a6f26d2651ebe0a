#!/usr/bin/env python3
"""llama.cpp as the judge of the dense families' GGUF files (issue 17). Run by hand, not in CI.

Two stages, because llama-cpp-python and torch live in different environments here:

  python scripts/check_llamacpp_families.py prepare WORK DEPTHPRUNE_BIN   (torch + transformers)
  python scripts/check_llamacpp_families.py check WORK                    (llama-cpp-python)

`prepare` copies each family fixture of tests/fixtures/golden/families with the settings
llama.cpp fixes (Gemma's attention scale from head_dim, Gemma 3's 5:1 pattern and local RoPE
base 10000) and the llama fixture's tokenizer into WORK/<arch>, converts it with
`depthprune convert --to gguf`, prunes that GGUF with `depthprune prune` (layers that keep
llama.cpp's fixed Gemma pattern), and saves transformers' logits for fixed token ids, of the
folder and of the folder with those layers deleted. `check` loads each GGUF with llama.cpp (F32
KV cache), evaluates the same ids and prints the largest logit difference from transformers.

Result (llama-cpp-python 0.3.36, transformers 5.24, CPU), max |logit diff| vs transformers:
gemma2 5.2e-4, pruned 6.7e-4; gemma3 7.2e-4, pruned 6.5e-4; phi3 6.0e-7, pruned 6.0e-7;
olmo2 7.2e-7, pruned 9.5e-7. (Gemma's larger gap is llama.cpp's arithmetic, most likely its
GELU; depthprune's own GGUF logits equal its HF ones exactly, tests/gguf_families.rs.)
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "tests", "fixtures", "golden")
DROP = {"gemma2": [2, 3], "gemma3": [5], "phi3": [1, 2], "olmo2": [1, 2]}
TOKENS = [(i * 37 + 11) % 298 + 2 for i in range(20)]


def prepare(work, binary):
    import torch
    from transformers import AutoModelForCausalLM

    for arch, drop in DROP.items():
        d = os.path.join(work, arch)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        shutil.copy(os.path.join(FIX, "families", arch, "model.safetensors"), d)
        for f in os.listdir(os.path.join(FIX, "llama")):
            if f.startswith("tokenizer") or f == "special_tokens_map.json":
                shutil.copy(os.path.join(FIX, "llama", f), d)
        with open(os.path.join(FIX, "families", arch, "config.json")) as f:
            cfg = json.load(f)
        if arch.startswith("gemma"):
            cfg["query_pre_attn_scalar"] = cfg["head_dim"]
        if arch == "phi3":
            # llama.cpp ignores Phi-3's sliding window ("Phi SWA is currently disabled",
            # llama.cpp#13676); with the window, it differs from transformers by ~0.5 here.
            cfg["sliding_window"] = None
        if arch == "gemma3":
            cfg.pop("sliding_window_pattern", None)
            cfg["rope_local_base_freq"] = 10000.0
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        gguf = os.path.join(work, f"{arch}.gguf")
        subprocess.run([binary, "convert", d, "--to", "gguf", "--out", gguf, "--force"], check=True)
        pruned = os.path.join(work, f"{arch}-pruned.gguf")
        subprocess.run([binary, "prune", gguf, "--drop", ",".join(map(str, drop)), "--out", pruned, "--force"], check=True)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        ids = torch.tensor([TOKENS])
        with torch.no_grad():
            np.save(os.path.join(work, f"{arch}.npy"), model(ids, use_cache=False).logits[0].numpy())
            keep = [i for i in range(len(model.model.layers)) if i not in drop]
            model.model.layers = torch.nn.ModuleList([model.model.layers[i] for i in keep])
            model.config.num_hidden_layers = len(keep)
            if getattr(model.config, "layer_types", None):
                model.config.layer_types = [model.config.layer_types[i] for i in keep]
            np.save(os.path.join(work, f"{arch}-pruned.npy"), model(ids, use_cache=False).logits[0].numpy())
        print(f"prepared {arch}")


def check(work):
    from llama_cpp import Llama

    failed = False
    for arch in DROP:
        for name in (arch, f"{arch}-pruned"):
            llm = Llama(os.path.join(work, f"{name}.gguf"), n_ctx=64, logits_all=True, verbose=False,
                        type_k=0, type_v=0, flash_attn=False)
            llm.eval(TOKENS)
            got = np.array(llm.scores[: len(TOKENS)])
            want = np.load(os.path.join(work, f"{name}.npy"))
            d = float(np.abs(got - want).max())
            ok = d < 1e-3
            failed |= not ok
            print(f"{name}: llama.cpp vs transformers max |logit diff| = {d:.2e} {'ok' if ok else 'FAIL'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2], sys.argv[3])
    else:
        check(sys.argv[2])
