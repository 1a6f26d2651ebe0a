#!/usr/bin/env python3
"""Records lm-evaluation-harness's own per-item results on the tiny llama fixture, so that
tests/lmeval_fidelity.rs can check `eval --tasks NAME=PATH` against lm-eval without PyTorch.

For each registry task it writes small data files in the Hub dataset's schema under
tests/fixtures/lmeval/<task>/ (test.jsonl and, for few-shot, dev.jsonl or train.jsonl), a task
YAML that `include`s lm-eval's own task file with `dataset_path: json` and those `data_files`,
runs lm_eval.simple_evaluate offline on tests/fixtures/golden/llama (transformers, f32, CPU,
batch 1) with log_samples, and writes tests/fixtures/lmeval/expected.json:

  {task: {"num_fewshot": n, "max_gen_toks": m or null,
          "metrics": {"acc": .., "acc_norm": .., "perplexity": .., "exact_match,strict-match": ..},
          "items": [{"doc_id": i, "lls": [...], "greedy": [...], "outputs": [...]}]}}

plus "lm_eval_version" and "transformers_version". "mmlu@chat" is mmlu again with
--apply_chat_template (the fixture's own Jinja template, few-shot examples in one user turn). Run from the repository root with a Python
that has lm_eval, transformers and torch (CPU is enough):

    HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 python scripts/golden_lmeval.py

CI never runs this; it only reads what it wrote.
"""

import json
import math
import os
import sys
import tempfile

import lm_eval
import transformers
from lm_eval.tasks import TaskManager

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "lmeval")
MODEL = os.path.join(ROOT, "tests", "fixtures", "golden", "llama")
TASKS_DIR = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")


def mmlu(q, choices, answer, subject="anatomy"):
    return {"question": q, "subject": subject, "choices": choices, "answer": answer}


def arc(i, q, texts, key, labels="ABCD"):
    return {"id": f"q{i}", "question": q, "choices": {"text": texts, "label": list(labels[: len(texts)])}, "answerKey": key}


DATA = {
    "mmlu": {
        "test": [
            mmlu("  Which bone is in the arm? ", ["femur", "humerus", "tibia", "skull"], 1),
            mmlu("What does the heart pump?", ["air", "blood", "bile", "water"], 1),
            mmlu("Where is the tibia?", ["leg", "arm", "head", "hand"], 0),
        ],
        "dev": [
            mmlu("How many lungs?", ["one", "two", "three", "four"], 1),
            mmlu("Skin is an", ["organ", "bone", "cell", "gas"], 0),
            mmlu("Off-subject", ["a", "b", "c", "d"], 2, subject="virology"),
        ],
    },
    "arc_easy": {
        "test": [
            arc(0, "Which is a gas?", ["ice", "steam", "rock"], "B"),
            arc(1, "What do plants need?", ["light", "noise", "salt", "sand"], "A"),
            arc(2, "Which is warmest?", ["snow", "sun"], "2", labels="12"),
        ]
    },
    "hellaswag": {
        "test": [
            {"activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow.", "ctx_b": "then [header] he", "ctx": "", "endings": [", the man [step] wipes.", "Wipe. [title] Clean  it.", " drives away.", " sings."], "label": "1"},
            {"activity_label": "Baking", "ctx_a": "A woman puts dough in a pan.", "ctx_b": "she", "ctx": "", "endings": [" bakes it.", " eats the pan.", " sleeps.", " runs."], "label": "0"},
        ]
    },
    "winogrande": {
        "test": [
            {"sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.", "option1": "Sarah", "option2": "Maria", "answer": "1"},
            {"sentence": "The cup did not fit in the box because the _ was too big.", "option1": "cup", "option2": "box", "answer": "1"},
        ]
    },
    "piqa": {
        "test": [
            {"goal": "Open a jar", "sol1": "twist the lid", "sol2": "pull the lid", "label": 0},
            {"goal": "Dry wet hands", "sol1": "use a towel", "sol2": "use a sponge full of water", "label": 0},
        ]
    },
    "boolq": {
        "test": [
            {"passage": "Water is wet.", "question": "is water wet", "label": 1, "idx": 0},
            {"passage": "The sun is cold.", "question": "is the sun hot", "label": 0, "idx": 1},
        ]
    },
    "openbookqa": {
        "test": [
            {"id": "7", "question_stem": "The sun is", "choices": {"text": ["a star", "a planet", "a moon", "a rock"], "label": ["A", "B", "C", "D"]}, "answerKey": "A"},
            {"id": "8", "question_stem": "Ice melts when", "choices": {"text": ["cold", "warm", "dark", "loud"], "label": ["A", "B", "C", "D"]}, "answerKey": "B"},
        ]
    },
    "lambada_openai": {
        "test": [
            {"text": "The lamp still turned every night"},
            {"text": "In the village below, the baker rose at four"},
            {"text": "Children ran along the sea  wall"},
        ]
    },
    "gsm8k": {
        "test": [
            {"question": "Tom has 3 apples and buys 2. How many?", "answer": "3 + 2 = 5\n#### 5"},
            {"question": "A box holds 4 cups. How many in 2 boxes?", "answer": "2 * 4 = 8\n#### 8"},
        ],
        "train": [
            {"question": "What is 1 + 1?", "answer": "1 + 1 = 2\n#### 2"},
            {"question": "What is 2 * 3?", "answer": "2 * 3 = 6\n#### 6"},
            {"question": "What is 9 - 4?", "answer": "9 - 4 = 5\n#### 5"},
        ],
    },
}

# task -> (lm-eval file to include, extra YAML lines, num_fewshot)
SETUP = {
    "mmlu": ("mmlu/default/_default_template_yaml",
             ['description: "The following are multiple choice questions (with answers) about anatomy.\\n\\n"'], 2),
    "arc_easy": ("arc/arc_easy.yaml", ["dataset_name: null"], 0),
    "hellaswag": ("hellaswag/hellaswag.yaml", [], 0),
    "winogrande": ("winogrande/default.yaml", ["dataset_name: null"], 0),
    "piqa": ("piqa/piqa.yaml", [], 0),
    "boolq": ("super_glue/boolq/default.yaml", ["dataset_name: null"], 0),
    "openbookqa": ("openbookqa/openbookqa.yaml", ["dataset_name: null"], 0),
    "lambada_openai": ("lambada/lambada_openai.yaml", ["dataset_name: null"], 0),
    "gsm8k": ("gsm8k/gsm8k.yaml", ["dataset_name: null",
                                   "generation_kwargs:",
                                   "  until: [\"Question:\", \"</s>\", \"<|im_end|>\"]",
                                   "  do_sample: false",
                                   "  temperature: 0.0",
                                   "  max_gen_toks: 24"], 2),
}
# The split each task scores, as the registry (and the Hub dataset) names it.
SCORED = {"hellaswag": "validation", "winogrande": "validation", "piqa": "validation", "boolq": "validation"}


def split_name(task, split):
    return SCORED.get(task, "test") if split == "test" else split


def write_data():
    for task, splits in DATA.items():
        d = os.path.join(OUT, task)
        os.makedirs(d, exist_ok=True)
        for split, rows in splits.items():
            with open(os.path.join(d, f"{split_name(task, split)}.jsonl"), "w") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_yaml(tmp, task):
    include, extra, _ = SETUP[task]
    files = {split_name(task, s): os.path.join(OUT, task, f"{split_name(task, s)}.jsonl") for s in DATA[task]}
    lines = [
        f"include: {os.path.join(TASKS_DIR, include)}",
        f"task: golden_{task}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
    ] + [f"    {s}: {p}" for s, p in files.items()] + [
        f"test_split: {split_name(task, 'test')}",
        "validation_split: null",
        "training_split: null",
    ]
    if "dev" in files:
        lines.append("fewshot_split: dev")
    if "train" in files:
        lines.append("fewshot_split: train")
    lines += extra
    # The included file's `tag`s would register our copy under the real groups.
    lines.append("tag: []")
    with open(os.path.join(tmp, f"golden_{task}.yaml"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    write_data()
    expected = {
        "lm_eval_version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else "?",
        "transformers_version": transformers.__version__,
        "tasks": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for task in SETUP:
            write_yaml(tmp, task)
        tm = TaskManager(include_path=tmp)
        runs = [(t, t, False) for t in SETUP] + [("mmlu@chat", "mmlu", True)]
        for run_key, task, chat in runs:
            shots = SETUP[task][2]
            res = lm_eval.simple_evaluate(
                model="hf",
                model_args=f"pretrained={MODEL},dtype=float32",
                tasks=[f"golden_{task}"],
                num_fewshot=shots,
                batch_size=1,
                device="cpu",
                task_manager=tm,
                log_samples=True,
                apply_chat_template=chat,
            )
            name = f"golden_{task}"
            metrics = {}
            for k, v in res["results"][name].items():
                if isinstance(v, (int, float)) and "," in k and not k.startswith("alias"):
                    metric, filt = k.split(",", 1)
                    if metric.endswith("_stderr"):
                        continue
                    key = metric if filt == "none" else f"{metric},{filt}"
                    metrics[key] = v if not (isinstance(v, float) and math.isnan(v)) else None
            items = []
            seen = set()
            # Generation tasks log each question once per filter; the responses are the same.
            for s in sorted(res["samples"][name], key=lambda s: s["doc_id"]):
                if s["doc_id"] in seen:
                    continue
                seen.add(s["doc_id"])
                item = {"doc_id": s["doc_id"]}
                resps = [r[0] for r in s["resps"]]
                if isinstance(resps[0], (list, tuple)):
                    item["lls"] = [float(r[0]) for r in resps]
                    item["greedy"] = [bool(r[1]) for r in resps]
                else:
                    item["outputs"] = [str(r) for r in resps]
                item["arguments"] = [list(a) if isinstance(a, (list, tuple)) else a for a in s["arguments"]][:1]
                items.append(item)
            gen = SETUP[task][1]
            max_gen = next((int(l.split(":")[1]) for l in gen if l.strip().startswith("max_gen_toks")), None)
            expected["tasks"][run_key] = {
                "num_fewshot": shots,
                "max_gen_toks": max_gen,
                "metrics": metrics,
                "items": items,
            }
            print(run_key, metrics, file=sys.stderr)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
