//! Healing on the dense families of issues 17 and 23. Phi-3 folds a general map into
//! `down_proj` (its MLP output reaches the residual stream unnormalised). Gemma 2/3 and OLMo 2
//! normalise the MLP output first, so they take a rotation folded into `down_proj` and a scale
//! folded into `post_feedforward_layernorm`: the fold is exact, the guard judges it, and the
//! healed HF folder and GGUF reload with the in-memory logits. Distillation on them is in
//! `tests/families_kd.rs`.

mod common;

use common::golden::{dist, max_diff};
use depthprune::checkpoint::atomic::Overwrite;
use depthprune::checkpoint::gguf::{GgmlType, GgufModel};
use depthprune::checkpoint::hf::HfCheckpoint;
use depthprune::checkpoint::hf_prune::{prune_hf, PruneOptions};
use depthprune::convert::to_gguf::hf_to_gguf;
use depthprune::heal::fit::{Fit, Solver};
use depthprune::heal::gguf::{write_healed_gguf, GgufHealOptions};
use depthprune::heal::postnorm::{norm_name, PostNorm};
use depthprune::heal::rotation::{polar, Rotation};
use depthprune::heal::{self, down_proj_name, HealOptions, Healing, Maps, Objective, Prior};
use depthprune::model::Model;
use depthprune::progress::Silent;
use depthprune::select::Removal;
use std::path::{Path, PathBuf};

const CTX: usize = 16;
const POST_NORM: &[&str] = &["gemma2", "gemma3", "olmo2"];

fn dir(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden/families")
        .join(arch)
}

/// Calibration tokens: the golden text under the llama fixture's tokenizer (the family
/// fixtures share its 300-token vocabulary).
fn tokens() -> Vec<u32> {
    common::golden_tokens(8 * CTX)
}

/// Layer `layer`'s output over `tokens` in windows of `CTX`, skipping `skip`.
fn stream(model: &Model, skip: &[usize], layer: usize, tokens: &[u32]) -> Vec<f32> {
    common::golden::stream(model, skip, layer, tokens, CTX)
}

fn values(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn fixed() -> HealOptions {
    HealOptions::fixed(Objective::Lstsq, 1e-3, Prior::Identity, CTX)
}

#[test]
fn phi3_heals_by_folding_into_down_proj() {
    let tokens = tokens();
    let h = heal::heal(&dir("phi3"), &[2, 3], &tokens, &fixed(), &Silent).unwrap();
    let names: Vec<&str> = h.tensors.keys().map(String::as_str).collect();
    assert_eq!(names, ["model.layers.1.mlp.down_proj.weight"]);
    // The healed model reconstructs layer 3's output better than plain skipping does.
    let dense = Model::open(&dir("phi3")).unwrap();
    let y = stream(&dense, &[], 3, &tokens);
    let plain = stream(&dense, &[2, 3], 1, &tokens);
    let healed_model = heal::open_healed(&dir("phi3"), &h.tensors).unwrap();
    let healed = stream(&healed_model, &[2, 3], 1, &tokens);
    let (e_plain, e_healed) = (dist(&plain, &y), dist(&healed, &y));
    assert!(
        e_healed < 0.95 * e_plain,
        "healing did not help: {e_healed} vs {e_plain}"
    );
}

/// A known `Q·diag(s)` folded into layer 1's `down_proj` and post-MLP norm gives the layer's
/// dense output with its MLP contribution `n·diag(g)` replaced by `n·Q·diag(s)`.
#[test]
fn a_rotation_and_scale_fold_exactly_into_down_proj_and_the_norm() {
    let toks = &tokens()[..CTX];
    for arch in POST_NORM {
        let dense = Model::open(&dir(arch)).unwrap();
        let post = PostNorm::of(dense.config()).unwrap();
        let h = dense.config().arch.hidden_size;
        let mut x = 0.3f64;
        let m: Vec<f64> = (0..h * h)
            .map(|_| {
                x = (x * 997.0 + 0.123).fract();
                x - 0.5
            })
            .collect();
        let q = polar(&m, h).unwrap();
        let s: Vec<f64> = (0..h).map(|j| 0.5 + (j % 7) as f64 * 0.3).collect();
        let (mut u, mut out) = (Vec::new(), Vec::new());
        dense
            .forward_hidden(&dense.tokens(&[toks]).unwrap(), &[], None, &mut |tap| {
                if tap.layer == 1 {
                    u = values(&tap.parts.mlp);
                    out = values(&tap.parts.output);
                }
                Ok(())
            })
            .unwrap();
        let gain = post.gain(dense.source().as_ref(), 1).unwrap();
        let (n, r) = post.normalize(&u, &gain);
        let mut want = Vec::with_capacity(out.len());
        for (nr, (o, r)) in n.chunks(h).zip(out.chunks(h).zip(r.chunks(h))) {
            for j in 0..h {
                let nq: f64 = (0..h).map(|i| f64::from(nr[i]) * q[i * h + j]).sum();
                want.push(o[j] - r[j] + (nq * s[j]) as f32);
            }
        }
        let name = down_proj_name(1);
        let w = values(&dense.source().tensor(&name).unwrap());
        let fit = Fit {
            t: Vec::new(),
            hidden: h,
            ridge: 0.0,
            relative_residual: 0.0,
            relative_residual_identity: 0.0,
            solver: Solver::Polar,
            rotation: Some(Rotation { q, s }),
        };
        let tensors = post.fold(&fit, &[(w, name.clone())], 1).unwrap();
        assert_eq!(
            tensors.keys().collect::<Vec<_>>(),
            [&name, &norm_name(1)],
            "{arch}"
        );
        let healed = heal::open_healed(&dir(arch), &tensors).unwrap();
        let got = stream(&healed, &[2, 3, 4, 5], 1, toks);
        let e = max_diff(&got, &want);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            e < 1e-5 * scale.max(1.0),
            "{arch}: folded output off by {e}"
        );
    }
}

#[test]
fn post_norm_families_heal_by_a_rotation_and_scale() {
    let tokens = tokens();
    for arch in POST_NORM {
        let h = heal::heal(&dir(arch), &[2, 3], &tokens, &fixed(), &Silent).unwrap();
        let names: Vec<&str> = h.tensors.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "model.layers.1.mlp.down_proj.weight",
                "model.layers.1.post_feedforward_layernorm.weight"
            ],
            "{arch}"
        );
        assert_eq!(h.blocks[0].objective, Some(Objective::Rotation), "{arch}");
        assert_eq!(h.blocks[0].solver, Solver::Polar, "{arch}");
        let dense = Model::open(&dir(arch)).unwrap();
        let y = stream(&dense, &[], 3, &tokens);
        let plain = stream(&dense, &[2, 3], 1, &tokens);
        let healed_model = heal::open_healed(&dir(arch), &h.tensors).unwrap();
        let healed = stream(&healed_model, &[2, 3], 1, &tokens);
        let (e_plain, e_healed) = (dist(&plain, &y), dist(&healed, &y));
        eprintln!("{arch}: layer-3 error {e_plain:.4} unhealed, {e_healed:.4} healed");
        assert!(
            e_healed < 0.95 * e_plain,
            "{arch}: healing did not help: {e_healed} vs {e_plain}"
        );
    }
}

/// With validation, each block keeps the rotation, the scale alone or nothing, whichever gives
/// the lowest held-out KL, never above the unhealed one.
#[test]
fn the_guard_judges_post_norm_maps_by_held_out_kl() {
    let tokens = common::golden_tokens(16 * CTX);
    for arch in POST_NORM {
        let opts = HealOptions {
            maps: Maps::PerBlock,
            ..HealOptions::validated(CTX)
        };
        let h = heal::heal(&dir(arch), &[2, 3], &tokens, &opts, &Silent).unwrap();
        assert_eq!(
            h.options.objectives,
            [Objective::Rotation, Objective::Gain],
            "{arch}"
        );
        let b = &h.blocks[0];
        let v = b.validation.as_ref().unwrap();
        let names: Vec<_> = v.candidates.iter().map(|c| c.objective).collect();
        assert_eq!(names, [Objective::Rotation, Objective::Gain], "{arch}");
        let best = v
            .candidates
            .iter()
            .min_by(|a, b| a.validation_kl.total_cmp(&b.validation_kl))
            .unwrap();
        match b.objective {
            Some(o) => {
                assert_eq!(o, best.objective, "{arch}");
                assert!(best.validation_kl < v.unhealed_kl, "{arch}");
                assert_eq!(h.tensors.len(), 2, "{arch}");
            }
            None => {
                assert!(best.validation_kl >= v.unhealed_kl, "{arch}");
                assert!(h.tensors.is_empty(), "{arch}");
            }
        }
        eprintln!("{arch}: {}", b.describe());
    }
}

/// `Healing` written as an HF prune of `arch` without `removed`, into `out`.
fn write_hf(arch: &str, removed: &[usize], h: &Healing, out: &Path) {
    let ckpt = HfCheckpoint::open(&dir(arch)).unwrap();
    let removal = Removal::from_layers(6, removed.iter().copied()).unwrap();
    let opts = PruneOptions {
        dtype: None,
        max_shard_size: u64::MAX,
        overwrite: Overwrite::Refuse,
        command: Vec::new(),
        method: serde_json::Value::Null,
        how_chosen: "test".into(),
        base_model: None,
        hub: None,
        replace: h.tensors.clone(),
        healing: None,
    };
    prune_hf(&ckpt, &removal, out, &opts, &Silent).unwrap();
}

fn logits(model: &Model, skip: &[usize], toks: &[u32]) -> Vec<f32> {
    common::golden::flat_logits(model, skip, toks)
}

#[test]
fn healed_post_norm_checkpoints_reload_with_the_in_memory_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = tokens();
    let toks = &tokens[..CTX];
    for arch in POST_NORM {
        let h = heal::heal(&dir(arch), &[2, 3], &tokens, &fixed(), &Silent).unwrap();
        let out = tmp.path().join(arch);
        write_hf(arch, &[2, 3], &h, &out);
        let mem = heal::open_healed(&dir(arch), &h.tensors).unwrap();
        let want = logits(&mem, &[2, 3], toks);
        let got = logits(&Model::open(&out).unwrap(), &[], toks);
        let e = max_diff(&got, &want);
        assert!(e < 1e-5, "{arch}: reloaded HF logits differ by {e}");
        let plain = logits(&Model::open(&dir(arch)).unwrap(), &[2, 3], toks);
        assert!(max_diff(&plain, &want) > 1e-3, "{arch}: nothing was healed");
    }
    // GGUF: Gemma 3 without its global layer 5 (llama.cpp's pattern holds), OLMo 2 without 2..4.
    for (arch, removed) in [("gemma3", &[5usize][..]), ("olmo2", &[2, 3][..])] {
        let hf = tmp.path().join(format!("{arch}-cpp"));
        std::fs::create_dir_all(&hf).unwrap();
        std::fs::copy(
            dir(arch).join("model.safetensors"),
            hf.join("model.safetensors"),
        )
        .unwrap();
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir(arch).join("config.json")).unwrap())
                .unwrap();
        if arch == "gemma3" {
            cfg["query_pre_attn_scalar"] = cfg["head_dim"].clone();
            let o = cfg.as_object_mut().unwrap();
            o.remove("sliding_window_pattern");
            o.insert("rope_local_base_freq".into(), 10000.0.into());
        }
        std::fs::write(hf.join("config.json"), cfg.to_string()).unwrap();
        let gguf = tmp.path().join(format!("{arch}.gguf"));
        hf_to_gguf(&hf, &gguf, GgmlType::F32, Overwrite::Refuse).unwrap();
        let h = heal::heal(&gguf, removed, &tokens, &fixed(), &Silent).unwrap();
        let from_hf = heal::heal(&hf, removed, &tokens, &fixed(), &Silent).unwrap();
        for (name, v) in &h.tensors {
            let d = max_diff(v, &from_hf.tensors[name]);
            assert!(
                d < 1e-5,
                "{arch}: `{name}` fitted on GGUF and HF differs by {d}"
            );
        }
        let model = GgufModel::open(&gguf).unwrap();
        let removal = Removal::from_layers(6, removed.iter().copied()).unwrap();
        let out = tmp.path().join(format!("{arch}-healed.gguf"));
        let opts = GgufHealOptions {
            overwrite: Overwrite::Refuse,
            split_max_bytes: None,
            ty: GgmlType::F32,
            keep_types: false,
            metadata: Vec::new(),
        };
        write_healed_gguf(&model, &removal, &h, &out, &opts, &Silent).unwrap();
        let mem = heal::open_healed(&gguf, &h.tensors).unwrap();
        let want = logits(&mem, removed, toks);
        let got = logits(&Model::open(&out).unwrap(), &[], toks);
        let e = max_diff(&got, &want);
        assert!(e < 1e-5, "{arch}: reloaded GGUF logits differ by {e}");
        let plain = logits(&Model::open(&gguf).unwrap(), removed, toks);
        assert!(max_diff(&plain, &want) > 1e-3, "{arch}: nothing was healed");
    }
}

/// `--maps auto` (the default) is per-layer on the post-norm families and per-block elsewhere:
/// the post-norm heal gets a site for every kept layer after the cut, the others only the block's.
#[test]
fn auto_maps_are_per_layer_on_post_norm_families_only() {
    let tokens = common::golden_tokens(16 * CTX);
    for (arch, want) in [
        ("gemma3", Maps::PerLayer),
        ("olmo2", Maps::PerLayer),
        ("phi3", Maps::PerBlock),
    ] {
        let opts = HealOptions::validated(CTX);
        assert_eq!(opts.maps, Maps::Auto);
        let h = heal::heal(&dir(arch), &[2, 3], &tokens, &opts, &Silent).unwrap();
        assert_eq!(h.options.maps, want, "{arch}");
        let n = Model::open(&dir(arch)).unwrap().n_layers();
        let kept_after = if want == Maps::PerLayer { n - 4 } else { 0 };
        assert_eq!(h.blocks.len(), 1, "{arch}");
        assert_eq!(h.layers.len(), kept_after, "{arch}: per-layer sites");
    }
    // `kd` starts from per-block maps unless asked otherwise; closed-form heals keep `auto`.
    use depthprune::api::heal::{HealFit, HealMethod};
    let fit = HealFit::default();
    assert_eq!(fit.maps, Maps::Auto);
    let maps = |m: HealMethod, fit: &HealFit| fit.options(m, CTX).unwrap().maps;
    assert_eq!(maps(HealMethod::Kd, &fit), Maps::PerBlock);
    assert_eq!(maps(HealMethod::Auto, &fit), Maps::Auto);
    assert_eq!(maps(HealMethod::Lstsq, &fit), Maps::Auto);
    let per_layer = HealFit {
        maps: Maps::PerLayer,
        ..HealFit::default()
    };
    assert_eq!(maps(HealMethod::Kd, &per_layer), Maps::PerLayer);
}
