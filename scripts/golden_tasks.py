"""Records transformers' multiple-choice log-likelihoods for the tiny golden models.

Writes tests/fixtures/golden/tasks.jsonl (a small task file in depthprune's own format) and
tests/fixtures/golden/tasks_expected.json:
  requests        per question, per choice: {"context": ids, "continuation": ids}, split as
                  lm-evaluation-harness's _encode_pair does with the llama fixture's tokenizer
                  (whitespace at the end of the context moved to the continuation, the whole
                  string encoded without special tokens, the continuation being the tokens after
                  the context's own count)
  choice_chars    per question, each choice's length in characters (acc_norm's divisor)
  gold            per question
  runs            for each run: "256" (the model's max_len), "12" (forcing left truncation),
                  and "256-skip1,2" (max_len 256 with layers 1 and 2 deleted from model.layers):
                  for each of llama, mistral, qwen2, qwen3 (all share the 300-token vocabulary, so
                  the llama tokenizer's ids serve them all): the summed log-probability of each
                  continuation, from one forward of (context + continuation)[-(max_len + 1):][:-1],
                  and acc / acc_norm / their standard errors computed as lm-eval does.
Run with: /tmp/pyref/bin/python scripts/golden_tasks.py

With `--smollm2 GGUF_PATH` it instead reads tests/fixtures/smollm2/tasks.jsonl (our format and
hand-written HellaSwag, PIQA, ARC and BoolQ records, mapped here to prompts independently of the
Rust parser, as lm-eval's task configs do), loads SmolLM2-135M-Instruct from the Q4_1 GGUF with
transformers (dequantized, tokenizer from the GGUF vocabulary) and writes
tests/fixtures/smollm2/tasks_expected.json with the same fields (one run, max_len 8192).
"""
import json
import math
import os
import re
import sys

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "golden")
ARCHS = ["llama", "mistral", "qwen2", "qwen3"]
RUNS = [("256", 256, []), ("12", 12, []), ("256-skip1,2", 256, [1, 2])]

ITEMS = [
    {"id": "lamp", "context": "The lamp still turned every", "choices": ["night", "day", "week"], "gold": 0},
    # Ends with a space: it moves into the continuation.
    {"id": "baker", "context": "In the village below, the baker rose at ", "choices": ["four", "noon"], "gold": 0},
    # Ends with a newline.
    {"id": "bell", "context": "Question: what fell into the square?\nAnswer:\n", "choices": ["the bell", "the roof", "a ship"], "gold": 0},
    # A multi-byte choice: characters, not bytes, divide acc_norm.
    {"id": "sea", "context": "The sea liked to know the", "choices": ["time", "tíme ü", "weather of the harbour"], "gold": 2},
    {"id": "ships", "context": "Children ran along the sea wall collecting shells, and counted the ships that passed without", "choices": ["stopping", "the"], "gold": 1},
]


def encode_pair(tok, context, continuation):
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    return ctx, whole[len(ctx):]


def loglikelihood(model, ctx, cont, max_len):
    inp = (ctx + cont)[-(max_len + 1):][:-1]
    with torch.no_grad():
        logits = model(torch.tensor([inp]), use_cache=False).logits[0]
    lp = torch.log_softmax(logits.double(), -1)[len(inp) - len(cont):]
    return float(lp[torch.arange(len(cont)), torch.tensor(cont)].sum())


def stderr(xs):
    n = len(xs)
    mu = sum(xs) / n
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1) / n)


def first_argmax(xs):
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def main():
    tok = PreTrainedTokenizerFast.from_pretrained(os.path.join(ROOT, "llama"))
    requests = [[encode_pair(tok, it["context"], " " + c) for c in it["choices"]] for it in ITEMS]
    chars = [[len(c) for c in it["choices"]] for it in ITEMS]
    runs = {}
    for name, max_len, skip in RUNS:
        per_arch = {}
        for arch in ARCHS:
            model = AutoModelForCausalLM.from_pretrained(
                os.path.join(ROOT, arch), dtype=torch.float32, attn_implementation="eager"
            )
            model.eval()
            kept = [l for i, l in enumerate(model.model.layers) if i not in skip]
            model.model.layers = torch.nn.ModuleList(kept)
            model.config.num_hidden_layers = len(kept)
            for j, l in enumerate(kept):
                l.self_attn.layer_idx = j
            lls = [[loglikelihood(model, c, k, max_len) for c, k in item] for item in requests]
            acc = [float(first_argmax(l) == it["gold"]) for l, it in zip(lls, ITEMS)]
            norm = [
                float(first_argmax([x / n for x, n in zip(l, ch)]) == it["gold"])
                for l, ch, it in zip(lls, chars, ITEMS)
            ]
            per_arch[arch] = {
                "loglikelihoods": lls,
                "acc": sum(acc) / len(acc),
                "acc_stderr": stderr(acc),
                "acc_norm": sum(norm) / len(norm),
                "acc_norm_stderr": stderr(norm),
            }
        runs[name] = {"max_len": max_len, "skip": skip, "archs": per_arch}
    with open(os.path.join(ROOT, "tasks.jsonl"), "w") as f:
        for it in ITEMS:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    out = {
        "requests": [[{"context": c, "continuation": k} for c, k in item] for item in requests],
        "choice_chars": chars,
        "gold": [it["gold"] for it in ITEMS],
        "runs": runs,
    }
    with open(os.path.join(ROOT, "tasks_expected.json"), "w") as f:
        json.dump(out, f, indent=1)
    print("wrote tasks.jsonl and tasks_expected.json")


def hellaswag_clean(text):
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def to_item(r):
    """(context, choices, gold) of a record, as lm-eval's task configs build them."""
    if "context" in r:
        return r["context"], r["choices"], int(r["gold"])
    if "endings" in r:
        ctx = r["ctx_a"] + " " + r["ctx_b"].capitalize()
        return (
            hellaswag_clean(r["activity_label"] + ": " + ctx),
            [hellaswag_clean(e) for e in r["endings"]],
            int(r["label"]),
        )
    if "goal" in r:
        return f"Question: {r['goal']}\nAnswer:", [r["sol1"], r["sol2"]], int(r["label"])
    if "passage" in r:
        return f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:", ["no", "yes"], int(r["answer"])
    q = r["question"]["stem"] if isinstance(r["question"], dict) else r["question"]
    ch = r["choices"]
    if isinstance(ch, dict):
        texts, labels = ch["text"], ch["label"]
    else:
        texts, labels = [c["text"] for c in ch], [c["label"] for c in ch]
    return f"Question: {q}\nAnswer:", texts, labels.index(r["answerKey"])


def smollm2(gguf_path):
    from transformers import AutoTokenizer

    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    d = os.path.join(ROOT, "..", "smollm2")
    with open(os.path.join(d, "tasks.jsonl")) as f:
        items = [to_item(json.loads(line)) for line in f if line.strip()]
    folder, name = os.path.split(os.path.abspath(gguf_path))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    max_len = model.config.max_position_embeddings
    requests = [[encode_pair(tok, c, " " + x) for x in ch] for c, ch, _ in items]
    chars = [[len(x) for x in ch] for _, ch, _ in items]
    gold = [g for _, _, g in items]
    lls = [[loglikelihood(model, c, k, max_len) for c, k in item] for item in requests]
    acc = [float(first_argmax(l) == g) for l, g in zip(lls, gold)]
    norm = [float(first_argmax([x / n for x, n in zip(l, ch)]) == g) for l, ch, g in zip(lls, chars, gold)]
    out = {
        "contexts": [c for c, _, _ in items],
        "requests": [[{"context": c, "continuation": k} for c, k in item] for item in requests],
        "choice_chars": chars,
        "gold": gold,
        "runs": {
            str(max_len): {
                "max_len": max_len,
                "skip": [],
                "archs": {
                    "smollm2": {
                        "loglikelihoods": lls,
                        "acc": sum(acc) / len(acc),
                        "acc_stderr": stderr(acc),
                        "acc_norm": sum(norm) / len(norm),
                        "acc_norm_stderr": stderr(norm),
                    }
                },
            }
        },
    }
    with open(os.path.join(d, "tasks_expected.json"), "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
    print("wrote tests/fixtures/smollm2/tasks_expected.json")


if len(sys.argv) == 3 and sys.argv[1] == "--smollm2":
    smollm2(sys.argv[2])
else:
    main()
