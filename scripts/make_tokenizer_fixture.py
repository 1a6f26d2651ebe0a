#!/usr/bin/env python3
"""Reference token ids for the SmolLM2 GGUF tokenizer test (tests/gguf_tokenizer_smollm2.rs).

Reads the tokenizer metadata of a SmolLM2 GGUF file with gguf-py, builds the tokenizer the
`transformers` library makes from the same file (its own GGUF conversion, independent of
depthprune), and records the ids it gives for a set of strings into
tests/fixtures/tokenizer/smollm2_reference.json.

transformers splits SmolLM2 text with GPT-2's byte-level regex only, while llama.cpp's `smollm`
pre-tokenizer first isolates every digit. The two agree on this vocabulary because none of its
merges contains a digit; the script checks that, so the ids stand for llama.cpp's too. It also
checks a few ids published for llama.cpp's SmolLM2 tokenization.

Usage (needs gguf, transformers, tokenizers; works offline):
  python scripts/make_tokenizer_fixture.py /path/to/SmolLM2-135M-Instruct.Q4_1.gguf
"""

import json
import os
import pathlib
import re
import sys

import gguf

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tokenizer"

STRINGS = [
    "In 2024, 1234567 people paid $3.14.",
    "hello world",
    "Hello, we can use",
    "The capital of France is",
    "Hello world! 123",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\nand\n\n\nruns",
    "Ünïcödé façade — naïve café",
    "日本語のテキストと中文",
    "emoji 🙂👍🏽 and ZWJ 👨‍👩‍👧",
    'fn main() { println!("{}", 1 + 2); }',
    "x<=y && y>=z || a!=b",
    "I'm, you're, they've, we'll, she'd",
    "DON'T SHOUT",
    "0.000001 1e-9 -42 +7",
    "https://example.com/a?b=c&d=e#f",
    "Ελληνικά и русский",
    "a  b   c    d",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "def f(x):\n    return x ** 2  # square\n",
    "  multiple   spaces",
    "Café déjà vu.",
]

# Ids llama.cpp gives for SmolLM2 (as published by a third-party llama.cpp-compatible tokenizer's
# self-check); the reference must agree with them.
LLAMA_CPP_IDS = {
    "Hello, we can use": [19556, 28, 392, 416, 722],
    "The capital of France is": [504, 3575, 282, 4649, 314],
    "Hello world! 123": [19556, 905, 17, 216, 33, 34, 35],
    "  multiple   spaces": [216, 2701, 256, 5600],
    "Café déjà vu.": [51, 1939, 2756, 32564, 90, 16739, 386, 101, 30],
}


def field(reader: gguf.GGUFReader, key: str):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = pathlib.Path(sys.argv[1])
    reader = gguf.GGUFReader(path)
    pre = field(reader, "tokenizer.ggml.pre")
    merges = field(reader, "tokenizer.ggml.merges")
    tokens = field(reader, "tokenizer.ggml.tokens")
    if pre != "smollm":
        raise SystemExit(f"expected a `smollm` pre-tokenizer, found {pre!r}")
    digit_merges = [m for m in merges if re.search(r"\d", m)]
    if digit_merges:
        raise SystemExit(f"merges with digits make transformers a wrong reference: {digit_merges[:5]}")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    cases = []
    for text in STRINGS:
        ids = tok.encode(text, add_special_tokens=False)
        if text in LLAMA_CPP_IDS and ids != LLAMA_CPP_IDS[text]:
            raise SystemExit(f"transformers disagrees with llama.cpp on {text!r}: {ids}")
        cases.append({"text": text, "ids": ids})

    OUT.mkdir(parents=True, exist_ok=True)
    doc = {
        "generator": "scripts/make_tokenizer_fixture.py",
        "reference": "transformers GGUF tokenizer conversion, encode(add_special_tokens=False)",
        "gguf_file": path.name,
        "gguf_bytes": path.stat().st_size,
        "n_tokens": len(tokens),
        "n_merges": len(merges),
        "pre": pre,
        "bos_token_id": int(field(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field(reader, "tokenizer.ggml.eos_token_id")),
        "cases": cases,
    }
    out = OUT / "smollm2_reference.json"
    # One case per line keeps the file short and its diffs readable.
    head = json.dumps({k: v for k, v in doc.items() if k != "cases"}, ensure_ascii=False, indent=1)
    lines = [json.dumps(c, ensure_ascii=False) for c in cases]
    out.write_text(head[:-2] + ',\n "cases": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n")
    json.loads(out.read_text())
    print(f"wrote {len(cases)} cases to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
