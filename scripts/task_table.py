#!/usr/bin/env python3
"""Renders the papers' table (benchmarks x layers removed) from `depthprune eval --json` outputs.

Usage: scripts/task_table.py MANIFEST.json [--into DOC.md | --check DOC.md]

Prints the table; with --into, writes it into DOC.md between the lines
`<!-- table: MANIFEST -->` and `<!-- end table -->`; with --check, exits 1 when DOC.md's table
differs from what the data gives (the Python tests run this, so the docs cannot drift).

The manifest lists the rows, each with its label and the eval outputs it reads (paths relative to
the manifest):

    {"columns": [{"file": "mm", "title": "MMLU acc (0-shot)"}, ...],
     "rows": [{"label": "dense", "removed": "", "heal": "", "files": {"mm": "mm_dense.json", ...}}]}

A task output gives its headline metric with lm-eval's standard error and n; a perplexity output
gives the perplexity with its 95% bootstrap interval, and with a reference the mean KL. A missing
file is a dash, so the table says what was not measured.
"""
import json
import os
import sys


def cell(path):
    if path is None or not os.path.exists(path) or os.path.getsize(path) == 0:
        return "–"
    d = json.load(open(path))
    if d.get("tasks"):
        t = d["tasks"][0]
        h = t["headline"]
        m = t["metrics"]
        se = m.get(f"{h}_stderr")
        se = f" ± {se:.3f}" if se is not None else ""
        return f"{m[h]:.3f}{se} (n {t['n']})"
    if d.get("divergence"):
        k = d["divergence"]
        return f"{k['mean_kl']:.3f} (top-1 {k['top1_agreement']:.3f})"
    lo, hi = d["perplexity_ci"]
    return f"{d['perplexity']:.2f} [{lo:.2f}, {hi:.2f}]"


def table(manifest):
    base = os.path.dirname(os.path.abspath(manifest))
    m = json.load(open(manifest))
    cols = m["columns"]
    head = ["model", "removed", "heal"] + [c["title"] for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * len(cols)]
    for r in m["rows"]:
        files = r.get("files", {})
        cells = [
            cell(os.path.join(base, files[c["file"]]) if c["file"] in files else None)
            for c in cols
        ]
        row = [r["label"], r.get("removed", ""), r.get("heal", "")] + cells
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def spliced(doc_text, manifest, body):
    start = f"<!-- table: {manifest} -->\n"
    end = "<!-- end table -->\n"
    a = doc_text.find(start)
    b = doc_text.find(end, a)
    if a < 0 or b < 0:
        sys.exit(f"error: no `{start.strip()}` ... `{end.strip()}` block in the document")
    return doc_text[: a + len(start)] + body + doc_text[b:]


def main():
    if len(sys.argv) not in (2, 4) or (len(sys.argv) == 4 and sys.argv[2] not in ("--into", "--check")):
        sys.exit(__doc__)
    manifest = sys.argv[1]
    body = table(manifest)
    if len(sys.argv) == 2:
        sys.stdout.write(body)
        return
    doc = sys.argv[3]
    text = open(doc).read()
    new = spliced(text, manifest, body)
    if sys.argv[2] == "--into":
        open(doc, "w").write(new)
    elif new != text:
        sys.exit(f"error: `{doc}`: the table from `{manifest}` differs; run scripts/task_table.py {manifest} --into {doc}")


if __name__ == "__main__":
    main()
