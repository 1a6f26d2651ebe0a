"""Writes the parquet fixtures of `tests/fixtures/hubdata/` with Hugging Face `datasets`, as the
Hub's datasets are written (`push_to_hub`: Snappy, `ClassLabel` columns as integers, one folder
per config, `SPLIT-00000-of-00001.parquet`), from the JSON Lines fixtures of
`tests/fixtures/lmeval/` and two HumanEval problems given as a `.jsonl.gz` path.

    python scripts/make_parquet_fixtures.py path/to/HumanEval.jsonl.gz

Each task's folder mirrors its Hub dataset: `mmlu/all/test-00000-of-00001.parquet` is
`cais/mmlu`'s file of config `all`, split `test`; a task with no config uses `data/`, except
HumanEval, whose repo keeps its one config (`openai_humaneval`) in a folder of that name. The
tests check that each parquet file reads as exactly the records of the JSON Lines it came from.
"""

import gzip
import json
import pathlib
import sys

import datasets

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "tests/fixtures/lmeval"
OUT = ROOT / "tests/fixtures/hubdata"

# task -> (config folder, {split: JSON Lines fixture}, features or None)
MMLU = datasets.Features(
    {
        "question": datasets.Value("string"),
        "subject": datasets.Value("string"),
        "choices": datasets.Sequence(datasets.Value("string")),
        "answer": datasets.ClassLabel(names=["A", "B", "C", "D"]),
    }
)
TASKS = {
    "mmlu": ("all", ["test", "dev"], MMLU),
    "arc_easy": ("ARC-Easy", ["test"], None),
    "gsm8k": ("main", ["test", "train"], None),
    "hellaswag": ("data", ["validation"], None),
    "piqa": ("data", ["validation"], None),
    "boolq": ("boolq", ["validation"], None),
    "openbookqa": ("main", ["test"], None),
    "winogrande": ("winogrande_xl", ["validation"], None),
    "lambada_openai": ("default", ["test"], None),
}


def write(rows, features, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = datasets.Dataset.from_list(rows, features=features)
    ds.to_parquet(str(path))


def main():
    for task, (folder, splits, features) in TASKS.items():
        for split in splits:
            src = SRC / task / f"{split}.jsonl"
            rows = [json.loads(l) for l in src.read_text().splitlines() if l.strip()]
            write(rows, features, OUT / task / folder / f"{split}-00000-of-00001.parquet")
    with gzip.open(sys.argv[1], "rt") as f:
        rows = [json.loads(l) for _, l in zip(range(2), f)]
    (OUT / "humaneval").mkdir(parents=True, exist_ok=True)
    with open(OUT / "humaneval" / "test.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    write(rows, None, OUT / "humaneval" / "openai_humaneval" / "test-00000-of-00001.parquet")


if __name__ == "__main__":
    main()
