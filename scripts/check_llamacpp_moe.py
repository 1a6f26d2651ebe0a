#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) as the judge of depthprune's MoE GGUF files (issue 17). By hand,
not in CI.

For each MoE fixture (tests/fixtures/golden/<arch>/), copies it with the llama fixture's
tokenizer (same 300-token vocabulary), converts it with `depthprune convert --to gguf` (f32),
removes its dense layers with `depthprune prune --drop` (llama.cpp's qwen2moe and qwen3moe expect
experts in every layer; golden metadata `sparse_only_drop`), loads the result in llama.cpp and
compares llama.cpp's logits on the golden tokens (first row) with transformers' logits of the
same model with those layers deleted (`sparse_only.logits`). Mixtral's fixture has an 8-token
sliding window that llama.cpp's `llama` architecture does not apply, so only its first 8
positions are compared. llama.cpp's qwen2moe also needs `output.weight`, so a tied fixture is
untied first (lm_head.weight = the embeddings, which leaves the logits unchanged). The KV cache
is kept in F32 (llama.cpp's default F16 cache alone moves these logits by ~1e-3); the bound is
1e-4.

Result (llama-cpp-python 0.3.36, transformers 5.24 fixtures): qwen2_moe 7.6e-6, qwen3_moe 1.7e-6,
mixtral 1.4e-6 (first 8 positions).

Usage: LLAMACPP_VENV/bin/python scripts/check_llamacpp_moe.py DEPTHPRUNE_BIN
(needs: llama-cpp-python, numpy; reads golden.safetensors with a small parser, no torch)
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
from llama_cpp import Llama

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "golden")
DTYPES = {"F32": np.float32, "I64": np.int64}


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {"__metadata__": header.get("__metadata__", {})}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(data[a:b], dtype=DTYPES[v["dtype"]]).reshape(v["shape"])
    return out


def untie(folder):
    """Writes lm_head.weight (a copy of the embeddings) and sets tie_word_embeddings false."""
    path = os.path.join(folder, "model.safetensors")
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    emb = header["model.embed_tokens.weight"]
    a, b = emb["data_offsets"]
    header["lm_head.weight"] = dict(emb, data_offsets=[len(data), len(data) + b - a])
    data += data[a:b]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
    cfg_path = os.path.join(folder, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["tie_word_embeddings"] = False
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)


def main():
    binary = sys.argv[1]
    failed = False
    for arch, positions in [("qwen2_moe", None), ("qwen3_moe", None), ("mixtral", 8)]:
        golden = load_safetensors(os.path.join(ROOT, arch, "golden.safetensors"))
        tokens = [int(t) for t in golden["tokens"][0]]
        want = golden["sparse_only.logits"][0]
        drop = golden["__metadata__"]["sparse_only_drop"]
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, arch)
            os.mkdir(src)
            for f in ("config.json", "model.safetensors"):
                shutil.copy(os.path.join(ROOT, arch, f), src)
            for f in ("tokenizer.json", "tokenizer_config.json"):
                shutil.copy(os.path.join(ROOT, "llama", f), src)
            with open(os.path.join(src, "config.json")) as f:
                if json.load(f).get("tie_word_embeddings"):
                    untie(src)
            gguf = os.path.join(tmp, f"{arch}.gguf")
            subprocess.run([binary, "convert", src, "--to", "gguf", "--out", gguf], check=True,
                           stdout=subprocess.DEVNULL)
            if drop:
                pruned = os.path.join(tmp, f"{arch}-sparse.gguf")
                subprocess.run([binary, "prune", gguf, "--drop", drop, "--out", pruned], check=True,
                               stdout=subprocess.DEVNULL)
                gguf = pruned
            llm = Llama(model_path=gguf, n_ctx=64, logits_all=True, type_k=0, type_v=0, verbose=os.environ.get("VERBOSE") == "1", n_threads=2)
            llm.eval(tokens)
            got = np.array(llm.scores[: len(tokens)])
        n = positions or len(tokens)
        d = float(np.abs(got[:n] - want[:n]).max())
        ok = d < 1e-4
        failed |= not ok
        print(f"{arch} (dense layers [{drop}] removed): llama.cpp loaded the GGUF; "
              f"max |logits - transformers| over {n} positions = {d:.2e}"
              f" {'ok' if ok else 'FAILED'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
