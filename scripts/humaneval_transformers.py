#!/usr/bin/env python3
"""HumanEval pass@1 of a model generating with transformers, as the reference for
`depthprune eval --tasks humaneval=...`: lm-eval's `humaneval` task (the raw prompt, greedy,
`max_gen_toks` 1024, cut at the first of its stop sequences or EOS), each program run against the
problem's own tests in a subprocess with a time limit.

Usage (in a venv with torch, transformers and, for GGUF, gguf):
  scripts/humaneval_transformers.py MODEL_DIR [--gguf FILE] --data HumanEval.jsonl.gz --limit 20
      [--ours eval.json] --out ref.json

MODEL_DIR is an HF folder, or with --gguf the folder holding FILE (transformers dequantizes it).
With --ours (the `--json --per-item` output of `depthprune eval`), it also prints, per problem,
whether the two completions are the same text and whether each passed.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile

UNTIL = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]


def problems(path, limit):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[:limit]


def passes(problem, completion, timeout=10.0):
    program = problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})\n"
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "program.py")
        open(p, "w").write(program)
        try:
            r = subprocess.run([sys.executable, p], cwd=d, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return r.returncode == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--gguf")
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--max-gen-toks", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--ours")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if a.threads:
        torch.set_num_threads(a.threads)
    kw = {"gguf_file": a.gguf} if a.gguf else {}
    tok = AutoTokenizer.from_pretrained(a.model, **kw)
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32, **kw).eval()
    eos = tok.eos_token_id
    rows = []
    for pr in problems(a.data, a.limit):
        ids = tok(pr["prompt"], return_tensors="pt").input_ids
        out = []
        past = None
        x = ids
        with torch.no_grad():
            for _ in range(a.max_gen_toks):
                o = model(input_ids=x, past_key_values=past, use_cache=True)
                past = o.past_key_values
                t = int(o.logits[0, -1].argmax())
                if t == eos:
                    break
                out.append(t)
                tail = tok.decode(out[-12:])
                if any(u in tail for u in UNTIL):
                    break
                x = torch.tensor([[t]])
        text = tok.decode(out)
        cut = min([text.find(u) for u in UNTIL if u in text] or [len(text)])
        completion = text[:cut]
        ok = passes(pr, completion)
        rows.append({"id": pr["task_id"], "completion": completion, "passed": ok})
        print(f"{pr['task_id']}: {'pass' if ok else 'fail'}", file=sys.stderr, flush=True)
    p1 = sum(r["passed"] for r in rows) / len(rows)
    json.dump({"model": os.path.basename(a.gguf or a.model), "pass@1": p1, "n": len(rows), "items": rows},
              open(a.out, "w"), indent=1)
    print(f"transformers pass@1 {p1:.3f} (n {len(rows)})")
    if a.ours:
        ours = json.load(open(a.ours))["tasks"][0]
        same = 0
        for r, o in zip(rows, ours["items"]):
            eq = r["completion"] == o["outputs"][0]
            same += eq
            print(f"{r['id']}: same text {eq}, transformers {'pass' if r['passed'] else 'fail'}, ours {'pass' if o['score'] == 1.0 else 'fail'}")
        print(f"ours pass@1 {ours['metrics']['pass@1']:.3f}; same completion on {same} of {len(rows)}")


if __name__ == "__main__":
    main()
