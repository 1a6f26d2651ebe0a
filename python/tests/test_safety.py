"""Never lose the user's data (issue 33): the Python functions refuse an output that is, holds
or lies inside an input, as the command line does, with a ``depthprune.Error`` subclass, and
leave the input's bytes as they were."""

import hashlib
import pathlib
import shutil

import pytest

import depthprune as dp


def _hashes(root: pathlib.Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def test_outputs_over_into_or_above_an_input_raise(model, long_text, tmp_path):
    models = tmp_path / "models"
    m = models / "m"
    shutil.copytree(model, m)
    (models / "notes.txt").write_text("keep me\n")
    (tmp_path / "link").symlink_to(m)
    before = _hashes(tmp_path)
    for out in [m, models, tmp_path / "link", m / "sub"]:
        with pytest.raises(dp.InvalidRequestError) as e:
            dp.prune(m, drop="1", out=out, force=True)
        assert str(out) in str(e.value) and str(m) in str(e.value)
        assert isinstance(e.value, dp.Error)
    with pytest.raises(dp.Error, match="lies inside the input"):
        dp.sweep(m, eval=long_text, strategies="last", remove="0..2", out=m / "study")
    with pytest.raises(dp.Error, match="is the input"):
        dp.synth(config=m / "config.json", out=m / "config.json")
    assert _hashes(tmp_path) == before
    assert issubclass(dp.StoppedError, dp.Error)
