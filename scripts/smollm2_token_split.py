#!/usr/bin/env python3
"""Token ids of the WikiText-2 test file under llama.cpp's `smollm` pre-tokenizer, for
tests/gguf_model_smollm2.rs (tests/fixtures/smollm2/tokens_llama_cpp.json).

transformers builds SmolLM2's tokenizer from the GGUF with GPT-2's byte-level regex alone
(`scripts/reference_smollm2.py` records its 304,839 tokens). llama.cpp's `smollm` pre-tokenizer
(`LLAMA_VOCAB_PRE_TYPE_SMOLLM`, shared with StarCoder) first isolates every `\\p{N}` character,
then applies GPT-2's regex; SmolLM2's own tokenizer.json does the same with `Digits`. `\\p{N}` is
every Unicode number, not only 0-9, and the GPT-2 regex then runs on each piece alone. On this
file that changes 11 places, 9 tokens in all (304,839 → 304,830):
- a line break and space before a number: "\r\n 1" is "čĊ" + "Ġ1…" for transformers (GPT-2's
  `\s+(?!\S)` leaves the space to ` ?\p{N}+`), but with the digit already split off the piece
  "\r\n " is whitespace to its end and becomes the single token "čĊĠ";
- "died 4 ½ months": `½` (category No) is isolated, so " ½" becomes "Ġ" + "Â½" instead of
  "ĠÂ" + "½".

This script rebuilds transformers' tokenizer from the GGUF, swaps in llama.cpp's chain written
literally (a `Split` on `\\p{N}`, isolated, then byte-level GPT-2), tokenizes the file as one
string without special tokens, and records the count, the SHA-256 of the ids (u32 LE), and the
places where transformers' ids differ.

Usage (needs transformers, tokenizers, gguf; offline):
  python scripts/smollm2_token_split.py GGUF_PATH WIKITEXT_PATH
"""

import copy
import hashlib
import json
import os
import pathlib
import sys

from tokenizers import Tokenizer
from transformers import AutoTokenizer

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/smollm2/tokens_llama_cpp.json"

gguf_path, text_path = sys.argv[1], sys.argv[2]
folder, name = os.path.split(os.path.abspath(gguf_path))
hf = AutoTokenizer.from_pretrained(folder, gguf_file=name)
spec = json.loads(hf.backend_tokenizer.to_str())
transformers_tok = Tokenizer.from_str(json.dumps(spec))
llama = copy.deepcopy(spec)
llama["pre_tokenizer"] = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{N}"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ],
}
llama_tok = Tokenizer.from_str(json.dumps(llama))

with open(text_path, "rb") as f:
    text = f.read().decode("utf-8")


class Encoding:
    """ids, tokens and offsets as plain lists (the binding rebuilds them on every access)."""

    def __init__(self, e):
        self.ids, self.tokens, self.offsets = e.ids, e.tokens, e.offsets


a = Encoding(transformers_tok.encode(text, add_special_tokens=False))
b = Encoding(llama_tok.encode(text, add_special_tokens=False))


def sha(ids):
    return hashlib.sha256(b"".join(i.to_bytes(4, "little") for i in ids)).hexdigest()


def regions(a, b):
    """Spans where the two tokenizations differ, resynchronised where both have a token
    boundary at the same character offset."""
    i = j = 0
    found = []
    while i < len(a.ids) and j < len(b.ids):
        if a.ids[i] == b.ids[j] and a.offsets[i] == b.offsets[j]:
            i += 1
            j += 1
            continue
        i0, j0 = i, j
        ea, eb = a.offsets[i][1], b.offsets[j][1]
        i += 1
        j += 1
        while ea != eb:
            if ea < eb:
                ea = a.offsets[i][1]
                i += 1
            else:
                eb = b.offsets[j][1]
                j += 1
        found.append((i0, i, j0, j))
    return found


diffs = []
for i1, i2, j1, j2 in regions(a, b):
    diffs.append({
        "text": text[a.offsets[i1][0]:a.offsets[i2 - 1][1]],
        "transformers": a.tokens[i1:i2],
        "llama_cpp": b.tokens[j1:j2],
    })
out = {
    "generated_by": "scripts/smollm2_token_split.py",
    "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    "n_tokens": len(b.ids),
    "tokens_sha256": sha(b.ids),
    "transformers_n_tokens": len(a.ids),
    "transformers_tokens_sha256": sha(a.ids),
    "differences": len(diffs),
    "first_differences": diffs[:20],
}
OUT.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
print(json.dumps(out, indent=1, ensure_ascii=False))
