"""The measured tables in the docs are rendered from the eval outputs kept beside them
(scripts/task_table.py), so a number in the docs cannot drift from its data."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

TABLES = [("docs/measurements/qwen2.5-coder-1.5b/manifest.json", "docs/tasks.md")]


def test_docs_tables_match_their_data():
    for manifest, doc in TABLES:
        r = subprocess.run(
            [sys.executable, "scripts/task_table.py", manifest, "--check", doc],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr


def test_a_changed_number_is_caught(tmp_path):
    manifest, doc = TABLES[0]
    text = (ROOT / doc).read_text()
    changed = tmp_path / "doc.md"
    # The dense MMLU row's first figure, altered: the check must refuse it.
    start = text.index(f"<!-- table: {manifest} -->")
    row = text.index("| dense |", start)
    cell = text.index("0.", row)
    changed.write_text(text[:cell] + "9" + text[cell + 1 :])
    r = subprocess.run(
        [sys.executable, "scripts/task_table.py", manifest, "--check", str(changed)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0
    assert "differs" in r.stderr
