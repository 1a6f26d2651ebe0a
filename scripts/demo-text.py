#!/usr/bin/env python3
"""Writes the demo's calibration and evaluation text, and a note about it, into DIR.

The text is the Python Language Reference that CPython ships in its standard library
(`pydoc_data.topics`): English prose about the language, with grammar rules and short code
examples. Every machine that runs the demo has it (pip needs Python), it needs no download, and
its licence (PSF) allows this use. The topics are joined in sorted order so that the file is the
same for the same Python version; the note records that version and the file's SHA-256.

Usage: demo-text.py DIR   ->  DIR/text.txt, DIR/TEXT.md
"""

import hashlib
import platform
import sys
from pathlib import Path

import pydoc_data.topics as topics


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(topics.topics)
    text = "\n\n".join(topics.topics[n].strip() for n in names) + "\n"
    data = text.encode("utf-8")
    (out / "text.txt").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    note = f"""Calibration and evaluation text come from the Python Language Reference that CPython
{platform.python_version()} ships in its standard library (`pydoc_data.topics`, {len(names)} topics
joined in sorted order; {len(data):,} bytes, SHA-256 `{digest}`). A fresh machine has it without a
download, which is why the demo uses it. Calibration, validation and evaluation windows are
disjoint slices of this file (see the offsets above).

Limits: this is technical English with grammar rules and code, not general web or encyclopaedic
text, so perplexities are not comparable with WikiText-2 or published figures, and the layers a
criterion picks on it can differ from those it picks on other text. Another Python version gives
a slightly different file (the hash above identifies it). For a study to publish, pass your own
text with `--calib` and `--eval` (for example WikiText-2).
"""
    (out / "TEXT.md").write_text(note, encoding="utf-8")
    print(out / "text.txt")


if __name__ == "__main__":
    main()
