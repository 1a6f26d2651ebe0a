//! The golden fixtures made by transformers (`scripts/make_golden*.py`): where they are, how to
//! read them, and the comparisons every golden test makes, so each family's test says only what
//! is particular to it.

use candle_core::{DType, Device, Tensor};
use depthprune::model::{HfFolder, Model, WeightSource};
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

/// Asserts that the fixture `sub` run with `skip`ped layers gives transformers' logits with those
/// layers deleted (`skip.logits`) within `tol`, with every layer loaded and with the skipped
/// layers never loaded (and only those).
pub fn check_skip(arch: &str, sub: &str, skip: &[usize], tol: f32) {
    let g = load(sub);
    let (rows, want) = (ids(&g["tokens"]), &g["skip.logits"]);
    let dense = Model::open(&dir(sub)).unwrap();
    let e = check(arch, "skip logits", &logits(&dense, &rows, skip), want, tol);
    let lean = Model::open_with(&dir(sub), skip).unwrap();
    for l in 0..dense.n_layers() {
        assert_eq!(
            lean.layer(l).is_err(),
            skip.contains(&l),
            "{arch}: layer {l}"
        );
    }
    let got = logits(&lean, &rows, skip);
    check(arch, "skip logits (not loaded)", &got, want, tol);
    eprintln!("{arch}: max abs error with layers {skip:?} skipped {e:.2e}");
}

/// [`check_generation`] for each of `archs`, the fixtures `PREFIX<arch>`.
pub fn check_generations(prefix: &str, archs: &[&str]) {
    for arch in archs {
        let sub = format!("{prefix}{arch}");
        check_generation(arch, &Model::open(&dir(&sub)).unwrap(), &load(&sub));
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

/// The logits of `model` on the one row `tokens` with `skip`ped layers, flattened.
pub fn flat_logits(model: &Model, skip: &[usize], tokens: &[u32]) -> Vec<f32> {
    let t = model.tokens(&[tokens]).unwrap();
    let l = model.forward(&t, skip, None).unwrap();
    l.flatten_all().unwrap().to_vec1().unwrap()
}

/// The residual stream after `layer` (its output), with `skip`ped layers, over the whole windows
/// of `ctx` tokens of `tokens`, concatenated.
pub fn stream(model: &Model, skip: &[usize], layer: usize, tokens: &[u32], ctx: usize) -> Vec<f32> {
    let mut all = Vec::new();
    for w in tokens.chunks(ctx).filter(|w| w.len() == ctx) {
        let t = model.tokens(&[w]).unwrap();
        model
            .forward_hidden(&t, skip, None, &mut |tap| {
                if tap.layer == layer {
                    all.extend(tap.parts.output.flatten_all()?.to_vec1::<f32>()?);
                }
                Ok(())
            })
            .unwrap();
    }
    all
}

/// The Euclidean distance between two equally long vectors.
pub fn dist(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The values of tensor `name` of the HF folder `f`, flattened to f32.
pub fn tensor_values(f: &HfFolder, name: &str) -> Vec<f32> {
    f.tensor(name)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}
