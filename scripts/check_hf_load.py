#!/usr/bin/env python3
"""Checks that transformers loads the HF folder written by `depthprune convert FILE.gguf --to hf`.

Converts the GGUF with the given depthprune binary, loads the folder with
`AutoModelForCausalLM` and `AutoTokenizer` (no GGUF code involved), and compares it with
transformers loading the GGUF itself: the same ids on a few strings and logits within 1e-3 on a
short text. Prints one line per check and exits non-zero on a failure. Not run by CI (it needs
PyTorch); results are noted in the branch's report.

Result on SmolLM2-135M-Instruct.Q4_1.gguf (transformers 5.24, torch CPU): the folder loads as
LlamaForCausalLM with a 49,152-token TokenizersBackend tokenizer; ids equal on the strings;
logits max |converted folder - GGUF| = 0.0; the chat template renders the same.

Usage: scripts/check_hf_load.py DEPTHPRUNE_BIN GGUF_PATH
(needs: torch, transformers, gguf)
"""

import os
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

STRINGS = [
    "In 2024, 1234567 people paid $3.14.",
    "Hello world! How are you?",
    "<|im_start|>user\nHi<|im_end|>",
]

binary, gguf_path = sys.argv[1], sys.argv[2]
folder, name = os.path.split(os.path.abspath(gguf_path))
torch.set_num_threads(2)
failed = False
with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "hf")
    subprocess.run([binary, "convert", gguf_path, "--to", "hf", "--out", out], check=True)
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    ref_tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    ref = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32).eval()
    print(f"loaded {out}: {type(model).__name__}, {model.config.num_hidden_layers} layers, "
          f"tokenizer {type(tok).__name__} ({len(tok)} tokens)")
    for s in STRINGS:
        a = tok(s, add_special_tokens=False).input_ids
        b = ref_tok(s, add_special_tokens=False).input_ids
        ok = a == b
        failed |= not ok
        print(f"ids {'same' if ok else 'DIFFER'}: {s!r} {a if not ok else ''} {b if not ok else ''}")
    ids = torch.tensor([ref_tok("The capital of France is Paris. It is known for", add_special_tokens=False).input_ids])
    with torch.no_grad():
        d = (model(ids).logits - ref(ids).logits).abs().max().item()
    print(f"logits max |converted folder - GGUF| = {d:.3e}")
    failed |= not d < 1e-3
    if tok.chat_template is None:
        print("no chat template in the folder")
        failed = True
    else:
        msgs = [{"role": "user", "content": "Hi"}]
        same = tok.apply_chat_template(msgs, tokenize=False) == ref_tok.apply_chat_template(msgs, tokenize=False)
        failed |= not same
        print(f"chat template renders {'the same' if same else 'DIFFERENTLY'}")
sys.exit(1 if failed else 0)
