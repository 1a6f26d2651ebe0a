#!/usr/bin/env python3
"""Golden fixtures for depthprune's ggml dequantizers (tests/quant_golden.rs).

For every format depthprune decodes, this writes under tests/fixtures/quant/:
  <name>.bin      the raw block bytes, as they sit in a GGUF tensor
  <name>.ref.f32  the reference dequantization, little-endian f32
  <name>.in.f32   (quantizable formats only) the f32 input the bytes were quantized from
and manifest.json describing them.

References:
  F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: the input is quantized with gguf-py's
    gguf.quants.quantize (bit-exact ports of ggml's quantize_row_*_ref) and dequantized with
    gguf.quants.dequantize.
  Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: gguf-py cannot quantize these, so the blocks are random bytes with
    finite f16 super-block scales, and gguf.quants.dequantize is the reference.
  Q8_K: gguf-py has no Q8_K at all; the reference is ggml's dequantize_row_q8_K (y = d * q, d an
    f32) evaluated in numpy float32.

Regenerate (needs numpy and the `gguf` package):
  python scripts/make_quant_fixtures.py
The output is deterministic: the same gguf-py version gives byte-identical files.
"""

import json
import pathlib
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "quant"
SEED = 20240601

QUANTIZED = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
RANDOM_K = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
LEGACY_BLOCKS = 8
K_BLOCKS = 3


def legacy_input(rng: np.random.Generator, n_blocks: int) -> np.ndarray:
    """Blocks with different shapes: plain normal, tiny, all zero (scale 0), one outlier,
    all positive (min > 0 for the _1 kinds), all negative, a constant, and wide uniform."""
    b = 32
    parts = [
        rng.standard_normal(b),
        rng.standard_normal(b) * 1e-3,
        np.zeros(b),
        np.concatenate([rng.standard_normal(b - 1) * 0.05, [3.5]]),
        rng.uniform(0.5, 2.0, b),
        -rng.uniform(0.5, 2.0, b),
        np.full(b, 0.75),
        rng.uniform(-40.0, 40.0, b),
    ]
    assert len(parts) == n_blocks
    return np.concatenate(parts).astype(np.float32)


def float_input(rng: np.random.Generator) -> np.ndarray:
    """Values that exercise rounding and the edges of f16 / bf16."""
    special = [0.0, -0.0, 1.0, -2.5, 65504.0, 65520.0, 1e5, -1e5, 6e-8, 1e-8, 3e-5,
               1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8,
               np.inf, -np.inf, np.nan, 3.0e38, 1e-40]
    body = rng.standard_normal(256 - len(special)) * rng.choice([1e-3, 1.0, 100.0], 256 - len(special))
    return np.concatenate([special, body]).astype(np.float32)


def f16_scales(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """n finite f16 values as bytes (n, 2)."""
    return (rng.standard_normal(n) * scale).astype(np.float16).view(np.uint8).reshape(n, 2)


def random_k_blocks(rng: np.random.Generator, t: T, n_blocks: int) -> np.ndarray:
    """Random block bytes with finite f16 scales at the offsets each layout uses."""
    _, size = GGML_QUANT_SIZES[t]
    blocks = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    if t == T.Q2_K:  # scales[16], qs[64], d, dmin
        blocks[:, 80:82] = f16_scales(rng, n_blocks, 0.02)
        blocks[:, 82:84] = f16_scales(rng, n_blocks, 0.02)
    elif t == T.Q3_K:  # hmask[32], qs[64], scales[12], d
        blocks[:, 108:110] = f16_scales(rng, n_blocks, 0.02)
    elif t in (T.Q4_K, T.Q5_K):  # d, dmin, ...
        blocks[:, 0:2] = f16_scales(rng, n_blocks, 0.02)
        blocks[:, 2:4] = f16_scales(rng, n_blocks, 0.02)
    elif t == T.Q6_K:  # ql[128], qh[64], scales[16], d
        blocks[:, 208:210] = f16_scales(rng, n_blocks, 0.002)
    else:
        raise ValueError(t)
    return blocks


def q8_k(rng: np.random.Generator, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Q8_K blocks (f32 d, 256 i8 quants, 16 i16 bsums) and ggml's dequantization of them."""
    d = (rng.standard_normal(n_blocks) * 0.01).astype(np.float32)
    qs = rng.integers(-128, 128, size=(n_blocks, 256), dtype=np.int8)
    bsums = qs.reshape(n_blocks, 16, 16).astype(np.int16).sum(axis=2, dtype=np.int16)
    blocks = np.concatenate(
        [d.reshape(-1, 1).view(np.uint8), qs.view(np.uint8), bsums.view(np.uint8)], axis=1
    )
    ref = (d.reshape(-1, 1) * qs.astype(np.float32)).astype(np.float32)
    return blocks, ref.reshape(-1)


def write(name: str, t: T, n: int, data: np.ndarray, ref: np.ndarray, source: str,
          inp: np.ndarray | None, manifest: list) -> None:
    data = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    ref = np.ascontiguousarray(ref, dtype="<f4").reshape(-1)
    block, size = GGML_QUANT_SIZES[t]
    assert ref.size == n and data.size == n // block * size, name
    (OUT / f"{name}.bin").write_bytes(data.tobytes())
    (OUT / f"{name}.ref.f32").write_bytes(ref.tobytes())
    entry = {
        "name": t.name,
        "type_id": int(t),
        "n_elements": n,
        "data": f"{name}.bin",
        "reference": f"{name}.ref.f32",
        "reference_source": source,
    }
    if inp is not None:
        inp = np.ascontiguousarray(inp, dtype="<f4")
        (OUT / f"{name}.in.f32").write_bytes(inp.tobytes())
        entry["input"] = f"{name}.in.f32"
    manifest.append(entry)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    manifest: list = []
    for t in QUANTIZED:
        x = float_input(rng) if t in (T.F32, T.F16, T.BF16) else legacy_input(rng, LEGACY_BLOCKS)
        with np.errstate(over="ignore", invalid="ignore"):
            data = quants.quantize(x, t)
        ref = quants.dequantize(np.ascontiguousarray(data).view(np.uint8), t)
        write(t.name.lower(), t, x.size, data, ref, "gguf-py quantize + dequantize", x, manifest)
    for t in RANDOM_K:
        blocks = random_k_blocks(rng, t, K_BLOCKS)
        ref = quants.dequantize(blocks, t)
        assert np.isfinite(ref).all(), t
        write(t.name.lower(), t, K_BLOCKS * 256, blocks, ref, "random bytes + gguf-py dequantize",
              None, manifest)
    blocks, ref = q8_k(rng, K_BLOCKS)
    write("q8_k", T.Q8_K, K_BLOCKS * 256, blocks, ref,
          "random bytes + ggml dequantize_row_q8_K in numpy", None, manifest)
    from importlib.metadata import version

    meta = {
        "generator": "scripts/make_quant_fixtures.py",
        "seed": SEED,
        "gguf_py_version": version("gguf"),
        "numpy_version": np.__version__,
        "fixtures": manifest,
    }
    (OUT / "manifest.json").write_text(json.dumps(meta, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(manifest)} fixtures, {total} bytes, to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
