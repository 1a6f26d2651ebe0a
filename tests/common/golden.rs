//! The golden fixtures made by transformers (`scripts/make_golden*.py`): where they are, how to
//! read them, and the comparisons every golden test makes, so each family's test says only what
//! is particular to it.

use candle_core::{DType, Device, Tensor};
use depthprune::model::Model;
use std::collections::HashMap;
use std::path::PathBuf;

/// `tests/fixtures/golden/<sub>` (an architecture, or `families/<arch>`).
pub fn dir(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(sub)
}

/// The tensors transformers computed for the fixture in `dir(sub)`.
pub fn load(sub: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir(sub).join("golden.safetensors"), &Device::Cpu).unwrap()
}

/// A 2-D tensor of token ids as rows.
pub fn ids(t: &Tensor) -> Vec<Vec<u32>> {
    t.to_dtype(DType::U32).unwrap().to_vec2().unwrap()
}

/// A 1-D tensor of token ids.
pub fn ids1(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::U32).unwrap().to_vec1().unwrap()
}

/// The largest absolute difference between two tensors of the same shape.
pub fn max_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Asserts `got` is within `tol` of transformers' `want`; returns the difference.
pub fn check(arch: &str, what: &str, got: &Tensor, want: &Tensor, tol: f32) -> f32 {
    let e = max_err(got, want);
    assert!(e <= tol, "{arch}: {what} differs from transformers by {e}");
    e
}

/// The logits of `model` on `rows` with `skip`ped layers.
pub fn logits(model: &Model, rows: &[Vec<u32>], skip: &[usize]) -> Tensor {
    let rows: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
    model
        .forward(&model.tokens(&rows).unwrap(), skip, None)
        .unwrap()
}

/// Runs `model` on the fixture's tokens, checking every layer's four taps against `g` within
/// `tol` (and `on_layer` for anything a family adds); returns the final hidden states, before the
/// final norm, and the worst tap difference.
pub fn check_taps(
    arch: &str,
    model: &Model,
    g: &HashMap<String, Tensor>,
    tol: f32,
    on_layer: &mut dyn FnMut(usize, &Tensor),
) -> (Tensor, f32) {
    let rows = ids(&g["tokens"]);
    let rows: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
    let tokens = model.tokens(&rows).unwrap();
    let mut worst = 0f32;
    let hidden = model
        .forward_hidden(&tokens, &[], None, &mut |tap| {
            let i = tap.layer;
            for (name, t) in [
                ("input", tap.input),
                ("attn", &tap.parts.attn),
                ("mlp", &tap.parts.mlp),
                ("output", &tap.parts.output),
            ] {
                let want = &g[&format!("layer{i}.{name}")];
                worst = worst.max(check(arch, &format!("layer {i} {name}"), t, want, tol));
            }
            on_layer(i, &tap.parts.output);
            Ok(())
        })
        .unwrap();
    (hidden, worst)
}

/// Checks the final norm and the logits of `hidden` (from [`check_taps`]); returns the logits'
/// difference.
pub fn check_head(
    arch: &str,
    model: &Model,
    g: &HashMap<String, Tensor>,
    hidden: &Tensor,
    tols: (f32, f32),
) -> f32 {
    let n = model.n_layers();
    let normed = model.norm(hidden).unwrap();
    check(
        arch,
        "final norm",
        &normed,
        &g[&format!("hidden{n}")],
        tols.0,
    );
    check(
        arch,
        "logits",
        &model.logits(hidden).unwrap(),
        &g["logits"],
        tols.1,
    )
}

/// Asserts that greedy generation from the fixture's prompt gives transformers' tokens, with and
/// without the KV cache.
pub fn check_generation(arch: &str, model: &Model, g: &HashMap<String, Tensor>) {
    use depthprune::model::{generate, GenerateOpts, Sampler, Sampling};
    let (prompt, want) = (ids1(&g["generate.prompt"]), ids1(&g["generate.tokens"]));
    for cache in [true, false] {
        let mut s = Sampler::new(Sampling::greedy()).unwrap();
        let opts = GenerateOpts {
            max_new: want.len(),
            skip: &[],
            eos: &[],
            use_cache: cache,
        };
        let got = generate(model, &prompt, &opts, &mut s, &mut |_| Ok(true))
            .unwrap()
            .tokens;
        assert_eq!(
            got, want,
            "{arch}: generation (cache {cache}) differs from transformers"
        );
    }
}

/// A string from the fixture's `golden.safetensors` metadata.
pub fn meta(sub: &str, key: &str) -> String {
    let path = dir(sub).join("golden.safetensors");
    let f = depthprune::checkpoint::safetensors::SafetensorsFile::open(&path).unwrap();
    f.metadata[key].as_str().unwrap().to_string()
}

/// The largest absolute difference between two equally long slices.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
