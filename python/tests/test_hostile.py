"""convert, verify and synth against the command line, and hostile keyword values (issue 25):
``None`` where an option has no absent form, values JSON cannot hold, and non-finite results all
raise a ``depthprune.Error`` subclass naming the keyword, never a ``PanicException``."""

import json
import math
import pathlib
import shutil
import struct

import pytest

import depthprune as dp


TINY_LLAMA = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 3,
    "hidden_size": 32, "intermediate_size": 48, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 64, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "torch_dtype": "float32",
}


def test_convert_matches_cli(cli, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_LLAMA))
    model = tmp_path / "tiny"
    dp.synth(config=tmp_path / "config.json", out=model, dtype="f32", seed=1)
    gguf_py = tmp_path / "py.gguf"
    got = dp.convert(model, to="gguf", dtype="f16", out=gguf_py)
    code, out, err = cli("convert", model, "--to", "gguf", "--dtype", "f16", "--json",
                         "--out", tmp_path / "cli.gguf")
    assert code == 0, err
    want = json.loads(out)
    assert got["tensors"] == want["tensors"] and got["bytes"] == want["bytes"]
    assert gguf_py.read_bytes() == (tmp_path / "cli.gguf").read_bytes()
    # And back: the GGUF into an HF folder, as the command writes it.
    back = dp.convert(gguf_py, to="hf", out=tmp_path / "hf-py")
    code, _, err = cli("convert", gguf_py, "--to", "hf", "--out", tmp_path / "hf-cli")
    assert code == 0, err
    assert back["tensors"] > 0
    assert ((tmp_path / "hf-py" / "model.safetensors").read_bytes()
            == (tmp_path / "hf-cli" / "model.safetensors").read_bytes())
    with pytest.raises(dp.InvalidRequestError, match="already a GGUF"):
        dp.convert(gguf_py, to="gguf", out=tmp_path / "again.gguf")
    with pytest.raises(dp.InvalidRequestError, match="`dtype`"):
        dp.convert(model, to="gguf", dtype="f8", out=tmp_path / "x.gguf")
    # Quantized output: the keyword is the flag, byte for byte.
    dp.convert(model, to="gguf", quant="q8_0", out=tmp_path / "q-py.gguf")
    code, _, err = cli("convert", model, "--to", "gguf", "--quant", "q8_0", "--out", tmp_path / "q-cli.gguf")
    assert code == 0, err
    assert (tmp_path / "q-py.gguf").read_bytes() == (tmp_path / "q-cli.gguf").read_bytes()
    assert (tmp_path / "q-py.gguf").stat().st_size < gguf_py.stat().st_size
    with pytest.raises(dp.InvalidRequestError, match="`quant`"):
        dp.convert(gguf_py, to="hf", quant="q8_0", out=tmp_path / "q-hf")
    with pytest.raises(dp.InvalidRequestError, match="`quant`"):
        dp.convert(model, to="gguf", quant="q3_k", out=tmp_path / "q3.gguf")


def test_verify_matches_cli(model, cli, tmp_path):
    dp.prune(model, drop="1", out=tmp_path / "pruned")
    got = dp.verify(tmp_path / "pruned", source=model)
    code, out, err = cli("verify", tmp_path / "pruned", "--source", model, "--json")
    assert code == 0, err
    assert got == json.loads(out)
    assert got["checks"] and all(c["ok"] for c in got["checks"])
    # A changed byte is a failed check, reported (the command exits 1 on it), not raised.
    st = tmp_path / "pruned" / "model.safetensors"
    b = bytearray(st.read_bytes())
    b[-1] ^= 0xFF
    st.write_bytes(bytes(b))
    bad = dp.verify(tmp_path / "pruned", source=model)
    code, out, _ = cli("verify", tmp_path / "pruned", "--source", model, "--json")
    assert code == 1 and bad == json.loads(out)
    assert not all(c["ok"] for c in bad["checks"])


def test_synth_matches_cli_byte_for_byte(model, cli, tmp_path):
    config = pathlib.Path(model) / "config.json"
    got = dp.synth(config=config, out=tmp_path / "py", dtype="f32", seed=3, max_shard_size="1MB")
    assert pathlib.Path(got) == tmp_path / "py"
    code, _, err = cli("synth", "--config", config, "--out", tmp_path / "cli", "--dtype", "f32",
                       "--seed", "3", "--max-shard-size", "1MB")
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "py").iterdir())
    for n in names:
        assert (tmp_path / "py" / n).read_bytes() == (tmp_path / "cli" / n).read_bytes(), n
    for bad in (0, -1, "5XB", 1.5):
        with pytest.raises(dp.InvalidRequestError, match="`max_shard_size`"):
            dp.synth(config=config, out=tmp_path / "bad", max_shard_size=bad)


def test_none_is_not_a_value(model, text):
    with pytest.raises(dp.InvalidRequestError, match="`metric` is None"):
        dp.score(model, metric=None, calib=text, ctx=16, samples=2)
    with pytest.raises(dp.InvalidRequestError, match="`ctx` is None"):
        dp.eval(model, text=text, ctx=None)
    # An option that may be absent takes None as absent.
    assert dp.eval(model, text=text, ctx=16, stride=None)["perplexity"] > 1


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_keywords_are_named(model, tmp_path, long_text, value):
    with pytest.raises(dp.InvalidRequestError, match="`lr`"):
        dp.heal(model, model, out=tmp_path / "h", calib=long_text, method="kd", lr=value)
    with pytest.raises(dp.InvalidRequestError, match="`alpha`"):
        dp.prune(model, drop="1", out=tmp_path / "p", heal="lstsq", calib=long_text,
                 alpha=[1e-3, value])
    with pytest.raises(dp.InvalidRequestError, match="`temperature`"):
        dp.generate(model, "hi", temperature=value)


def test_values_without_json_form_are_named(model, text):
    with pytest.raises(dp.InvalidRequestError, match="`ctx`"):
        dp.eval(model, text=text, ctx=object())
    with pytest.raises(dp.InvalidRequestError, match="`batch`"):
        dp.eval(model, text=text, batch={1, 2})


def test_huge_counts_raise_errors_not_panics(model, long_text, tmp_path):
    huge = 2**64 - 1
    with pytest.raises(dp.InvalidRequestError, match="`ci_resamples`"):
        dp.sweep(model, eval=long_text, strategies=["last"], remove="0..2", ci_resamples=huge,
                 eval_samples=2, ctx=16)
    with pytest.raises(dp.InvalidRequestError, match="`samples`"):
        dp.score(model, metric="bi", calib=long_text, ctx=16, samples=huge)
    with pytest.raises(dp.InvalidRequestError, match="`max_new_tokens`"):
        dp.generate(model, "hi", max_new_tokens=huge)
    # Past u64, the keyword still names itself.
    with pytest.raises(dp.InvalidRequestError, match="`samples`"):
        dp.score(model, metric="bi", calib=long_text, samples=2**70)


def test_a_result_that_is_not_finite_is_an_error(model, text, tmp_path):
    nan = tmp_path / "nan"
    shutil.copytree(model, nan)
    st = nan / "model.safetensors"
    b = bytearray(st.read_bytes())
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    start, end = header["model.norm.weight"]["data_offsets"]
    b[8 + n + start:8 + n + end] = struct.pack("<f", math.nan) * ((end - start) // 4)
    st.write_bytes(bytes(b))
    with pytest.raises(dp.InvalidRequestError, match="is not finite") as e:
        dp.eval(nan, text=text, ctx=16)
    assert "nan" in str(e.value) and "\n" not in str(e.value)


def test_heal_from_another_model_is_refused(model, long_text, tmp_path):
    dp.prune(model, drop="1", out=tmp_path / "pruned")
    other = tmp_path / "other"
    cfg = json.loads((pathlib.Path(model) / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (tmp_path / "other.json").write_text(json.dumps(cfg))
    dp.synth(config=tmp_path / "other.json", out=other, dtype="f32")
    shutil.copy(pathlib.Path(model) / "tokenizer.json", other)
    with pytest.raises(dp.InvalidRequestError, match="cannot have been pruned from"):
        dp.heal(tmp_path / "pruned", other, out=tmp_path / "h", calib=long_text, ctx=16,
                heal_samples=64, holdout=0)
    assert not (tmp_path / "h").exists()
