"""Shared fixtures: the repository's tiny golden llama, its text, and the CLI binary built by
`cargo test`, so every Python call can be checked against the command line's `--json`."""

import json
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "fixtures" / "golden"


def _binary() -> pathlib.Path:
    if os.environ.get("DEPTHPRUNE_BIN"):
        return pathlib.Path(os.environ["DEPTHPRUNE_BIN"])
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "depthprune"


@pytest.fixture(scope="session")
def model() -> str:
    return str(GOLDEN / "llama")


@pytest.fixture(scope="session")
def text() -> str:
    return str(GOLDEN / "eval.txt")


@pytest.fixture(scope="session")
def long_text(tmp_path_factory) -> str:
    """The golden text repeated, for calls that need more tokens."""
    p = tmp_path_factory.mktemp("text") / "long.txt"
    p.write_text((GOLDEN / "eval.txt").read_text() * 40)
    return str(p)


@pytest.fixture(scope="session")
def cli():
    """Runs the CLI; returns (exit code, stdout, stderr)."""
    binary = _binary()
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `cargo build` first (or set DEPTHPRUNE_BIN)")

    def run(*args, cwd=None):
        p = subprocess.run(
            [str(binary), *map(str, args)], capture_output=True, text=True, cwd=cwd
        )
        return p.returncode, p.stdout, p.stderr

    return run


@pytest.fixture(scope="session")
def cli_json(cli):
    """Runs the CLI with --json and parses stdout, failing on a non-zero exit."""

    def run(*args):
        code, out, err = cli(*args, "--json")
        assert code == 0, err
        return json.loads(out)

    return run
