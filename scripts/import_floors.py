#!/usr/bin/env python3
"""Which top-level modules of src/ import which, and where the pipeline's floors are broken.

Every `crate::X` path (in `use` lines, `use crate::{..}` groups and inline paths; comments are
skipped) is an edge from the folder it appears in to module X. Prints the import circles that
span more than one folder and every import that climbs from a lower floor to a higher one.

    python3 scripts/import_floors.py [SRC_DIR] [--check]

With --check, exits 1 when a circle or a climb remains.
"""
import collections
import os
import re
import sys

# The floors, lowest first; a module may import only modules on its own floor or below.
FLOORS = [
    ["error", "fmt", "progress", "base"],
    ["select"],
    ["arch"],
    ["checkpoint"],
    ["quant", "tokenizer"],
    ["model"],
    ["convert", "hub", "heal", "eval"],
    ["score"],
    ["choose"],
    ["sweep"],
    ["report"],
    ["api"],
    ["cli", "fuzz_targets"],
]
FLOOR = {m: i for i, ms in enumerate(FLOORS) for m in ms}
# Imports that climb on purpose, each with its reason. They are printed, and left out of the
# circles and of --check.
ALLOWED = {
    ("error", "quant"): "`Error::Quant` wraps `QuantError`; see src/error.rs",
    ("error", "tokenizer"): "`Error::Vocab` wraps `VocabError`; see src/error.rs",
    ("error", "hub"): "`Error::Hub` wraps `HubError`; see src/error.rs",
}
# `crate::VERSION`, `crate::Error`, `crate::Result` live in lib.rs.
FLOOR.update(VERSION=0, Error=0, Result=0)


def edges_of(root):
    edges = collections.defaultdict(set)
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, root)
            if rel in ("lib.rs", "main.rs"):
                continue
            # A file at the root is a module of its own (`error.rs` is `error`).
            here = rel.split("/")[0].removesuffix(".rs")
            with open(path, encoding="utf-8") as fh:
                text = re.sub(r"//[^\n]*", "", fh.read())
            targets = set(re.findall(r"crate::([a-z_][a-z0-9_]*)", text))
            for group in re.findall(r"crate::\{([^;]*?)\}\s*;", text, re.S):
                targets |= set(re.findall(r"(?:^|[,{]\s*)([a-z_][a-z0-9_]*)", group))
            for t in targets - {here}:
                edges[(here, t)].add(rel)
    return edges


def circles(edges):
    graph = collections.defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(set(graph) | {b for _, b in edges}):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def main():
    args = [a for a in sys.argv[1:] if a != "--check"]
    root = args[0] if args else "src"
    edges = edges_of(root)
    for (a, b), why in sorted(ALLOWED.items()):
        if edges.pop((a, b), None):
            print(f"allowed: {a} -> {b}: {why}")
    found = circles(edges)
    print("circles across folders:", found if found else "none")
    unknown = sorted({m for e in edges for m in e if m not in FLOOR})
    if unknown:
        print("modules with no floor:", " ".join(unknown))
    climbs = [
        (a, b, sorted(files))
        for (a, b), files in sorted(edges.items())
        if FLOOR.get(a, 99) < FLOOR.get(b, 99)
    ]
    print("imports that climb:", sum(len(f) for *_, f in climbs))
    for a, b, files in climbs:
        print(f"  {a} -> {b}: {' '.join(files)}")
    if "--check" in sys.argv and (found or climbs or unknown):
        sys.exit(1)


if __name__ == "__main__":
    main()
