//! Distillation (`--heal kd`) on the post-norm families (Gemma 2, Gemma 3, OLMo 2; issue 23):
//! the map trains before the `post_feedforward_layernorm`, the norm's scale with it, and both
//! fold into the checkpoint (`down_proj` and the norm's weight). Held-out KL never ends above
//! the closed-form start, the guard keeps that start when training only hurts, low-rank updates
//! train too, and the written checkpoint reloads with the in-memory logits and verifies. The
//! gradients and the fold itself are checked in `src/heal/kd/tests.rs`.

mod common;

use common::golden::{flat_logits, max_diff};
use common::s;
use depthprune::heal::postnorm::norm_name;
use depthprune::heal::{self, down_proj_name, Healing, KdOptions};
use depthprune::model::Model;
use depthprune::progress::Silent;
use std::path::PathBuf;

const CTX: usize = common::GUARD_CTX;
const SAMPLES: usize = common::GUARD_SAMPLES;
const POST_NORM: &[&str] = &["gemma2", "gemma3", "olmo2"];
const REMOVED: &[usize] = &[2, 3];

fn dir(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden/families")
        .join(arch)
}

fn kd(lr: f64, rank: usize) -> KdOptions {
    KdOptions {
        steps: 24,
        lr,
        eval_every: 4,
        patience: 0,
        rank,
        lowrank_lr: 1e-2,
        time_limit: None,
    }
}

/// The closed-form heal of `arch` without layers 2 and 3, validated as the guard tests are, with
/// per-block maps, so that the only fold site is layer 1 (`auto` would add every kept layer
/// after the cut on these families).
fn start(arch: &str, tokens: &[u32]) -> Healing {
    let opts = heal::HealOptions {
        maps: heal::Maps::PerBlock,
        ..common::guarded()
    };
    heal::heal(&dir(arch), REMOVED, tokens, &opts, &Silent).unwrap()
}

#[test]
fn distillation_trains_the_map_before_the_norm_and_its_scale_and_never_ends_worse() {
    let t = common::golden_tokens(SAMPLES);
    for arch in POST_NORM {
        let start = start(arch, &t);
        let out = heal::distil(&dir(arch), &t, &start, &kd(1e-2, 0), &Silent).unwrap();
        let d = out.distillation.as_ref().unwrap();
        eprintln!("{arch}: {}", d.describe());
        assert!(d.post_norm_gains, "{arch}");
        assert_eq!(d.fold_layers, [1], "{arch}");
        assert!(d.best_kl <= d.start_kl, "{arch}: {d:?}");
        assert!(
            d.curve.iter().all(|p| p.validation_kl >= d.best_kl),
            "{arch}"
        );
        assert!(d.kept(), "{arch}: {d:?}");
        assert!(d.best_kl < d.start_kl, "{arch}: {d:?}");
        assert!(d.describe().contains("before the post-MLP norm"), "{arch}");
        // What changed: layer 1's `down_proj` and its post-MLP norm, both away from the start.
        let names: Vec<&String> = out.tensors.keys().collect();
        assert_eq!(names, [&down_proj_name(1), &norm_name(1)], "{arch}");
        for name in [down_proj_name(1), norm_name(1)] {
            assert_ne!(
                out.tensors.get(&name),
                start.tensors.get(&name),
                "{arch}: `{name}` did not train"
            );
        }
        assert_eq!(out.method(), "kd");
        // The folded checkpoint is what was validated: its held-out KL is the best one.
        let reloaded = heal::open_healed(&dir(arch), &out.tensors).unwrap();
        let kl = held_out_kl(arch, &reloaded, &t);
        assert!(
            (kl - d.best_kl).abs() < 1e-4 * d.best_kl.max(1.0),
            "{arch}: folded model's held-out KL {kl}, student's {}",
            d.best_kl
        );
    }
}

/// The mean next-token KL(dense ‖ `model` without [`REMOVED`]) over the held-out windows of
/// `tokens` (every fourth window of [`CTX`]).
fn held_out_kl(arch: &str, model: &Model, tokens: &[u32]) -> f64 {
    let dense = Model::open(&dir(arch)).unwrap();
    let vocab = dense.vocab_size();
    let (mut sum, mut n) = (0f64, 0usize);
    for (i, w) in tokens.chunks(CTX).enumerate() {
        if (i + 1) % common::GUARD_HOLDOUT != 0 {
            continue;
        }
        let p = flat_logits(&dense, &[], w);
        let q = flat_logits(model, REMOVED, w);
        // Every position but the window's last, as the guard scores them.
        for (a, b) in p.chunks(vocab).zip(q.chunks(vocab)).take(CTX - 1) {
            let (la, lb) = (lse(a), lse(b));
            sum += a
                .iter()
                .zip(b)
                .map(|(&x, &y)| {
                    let lp = f64::from(x) - la;
                    lp.exp() * (lp - (f64::from(y) - lb))
                })
                .sum::<f64>();
            n += 1;
        }
    }
    sum / n as f64
}

fn lse(x: &[f32]) -> f64 {
    let m = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    m + x
        .iter()
        .map(|&v| (f64::from(v) - m).exp())
        .sum::<f64>()
        .ln()
}

#[test]
fn post_norm_distillation_that_only_hurts_keeps_the_closed_form_heal() {
    let t = common::golden_tokens(SAMPLES);
    for arch in POST_NORM {
        let start = start(arch, &t);
        // A learning rate this large throws the map and the scale far off at the first step.
        let out = heal::distil(&dir(arch), &t, &start, &kd(10.0, 0), &Silent).unwrap();
        let d = out.distillation.as_ref().unwrap();
        assert!(!d.kept(), "{arch}: {d:?}");
        assert!(
            d.curve[1..].iter().all(|p| p.validation_kl > d.start_kl),
            "{arch}: {d:?}"
        );
        assert_eq!(out.tensors, start.tensors, "{arch}");
        assert_eq!(out.method(), "lstsq");
    }
}

#[test]
fn post_norm_low_rank_distillation_merges_every_adapted_weight() {
    let t = common::golden_tokens(SAMPLES);
    let start = start("gemma3", &t);
    let out = heal::distil(&dir("gemma3"), &t, &start, &kd(1e-2, 2), &Silent).unwrap();
    let d = out.distillation.as_ref().unwrap();
    assert!(d.kept(), "{d:?}");
    assert!(d.best_kl < d.start_kl, "{d:?}");
    // Layers 1, 4 and 5 kept from the fold layer on, seven weights each, and layer 1's norm.
    assert_eq!(d.lowrank_tensors.len(), 21, "{:?}", d.lowrank_tensors);
    assert_eq!(out.tensors.len(), 22);
    assert!(out.tensors.contains_key(&norm_name(1)));
    let reloaded = heal::open_healed(&dir("gemma3"), &out.tensors).unwrap();
    let kl = held_out_kl("gemma3", &reloaded, &t);
    assert!((kl - d.best_kl).abs() < 1e-4, "{kl} vs {}", d.best_kl);
}

#[test]
fn prune_heal_kd_on_gemma3_writes_down_proj_and_norm_reloads_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("gemma3");
    common::with_llama_tokenizer(
        &dir("gemma3"),
        &["tokenizer.json", "tokenizer_config.json"],
        &model,
    );
    let calib = common::golden_text();
    let flags = common::guarded_flags(&[
        "--drop",
        "2,3",
        "--heal",
        "kd",
        "--calib",
        s(&calib),
        "--steps",
        "24",
        "--lr",
        "1e-2",
        "--kd-eval-every",
        "4",
        "--patience",
        "0",
        "--rank",
        "0",
        "--maps",
        "per-block",
    ]);
    let out = tmp.path().join("kd");
    let o = common::prune(&model, &flags, &out);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let stdout = common::stdout(&o);
    assert!(stdout.contains("before the post-MLP norm"), "{stdout}");
    let prov = common::read_json(&out.join("pruning.json"));
    let h = &prov["healing"];
    assert_eq!(h["method"], "kd", "{h}");
    assert_eq!(h["distillation"]["kept"], true, "{h}");
    assert_eq!(h["distillation"]["post_norm_gains"], true, "{h}");
    let listed: Vec<&str> = h["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            "model.layers.1.mlp.down_proj.weight",
            "model.layers.1.post_feedforward_layernorm.weight"
        ]
    );
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains("trained per-channel scale"), "{card}");

    let t = common::golden_tokens(SAMPLES);
    let mem = heal::distil(
        &dir("gemma3"),
        &t,
        &start("gemma3", &t),
        &kd(1e-2, 0),
        &Silent,
    )
    .unwrap();
    let in_memory = heal::open_healed(&dir("gemma3"), &mem.tensors).unwrap();
    let reloaded = Model::open(&out).unwrap();
    let window = &t[..CTX];
    let diff = max_diff(
        &flat_logits(&in_memory, REMOVED, window),
        &flat_logits(&reloaded, &[], window),
    );
    assert!(diff < 1e-4, "reloaded logits differ by {diff}");

    let o = common::run_in(&["verify", "kd", "--source", s(&model)], tmp.path());
    assert!(o.status.success(), "{}", common::stderr(&o));
    let v = common::stdout(&o);
    assert!(v.contains("2 healed (not compared)"), "{v}");
}

/// The Gemma 3 fixture as llama.cpp describes it (a GGUF of its own config), without its global
/// layer 5 (the pattern holds): kd on the GGUF writes `ffn_down` and `post_ffw_norm`, and the
/// healed GGUF reloads with the in-memory logits.
#[test]
fn post_norm_distillation_on_a_gguf_reloads_with_the_in_memory_logits() {
    use depthprune::checkpoint::atomic::Overwrite;
    use depthprune::checkpoint::gguf::{GgmlType, GgufModel};
    use depthprune::heal::gguf::{write_healed_gguf, GgufHealOptions};
    use depthprune::select::Removal;
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("gemma3-cpp");
    std::fs::create_dir_all(&hf).unwrap();
    std::fs::copy(
        dir("gemma3").join("model.safetensors"),
        hf.join("model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir("gemma3").join("config.json")).unwrap())
            .unwrap();
    cfg["query_pre_attn_scalar"] = cfg["head_dim"].clone();
    let o = cfg.as_object_mut().unwrap();
    o.remove("sliding_window_pattern");
    o.insert("rope_local_base_freq".into(), 10000.0.into());
    std::fs::write(hf.join("config.json"), cfg.to_string()).unwrap();
    let gguf = tmp.path().join("gemma3.gguf");
    depthprune::convert::to_gguf::hf_to_gguf(&hf, &gguf, GgmlType::F32, Overwrite::Refuse).unwrap();

    let t = common::golden_tokens(SAMPLES);
    let removed = [5usize];
    let start = heal::heal(&gguf, &removed, &t, &common::guarded(), &Silent).unwrap();
    let out = heal::distil(&gguf, &t, &start, &kd(1e-2, 0), &Silent).unwrap();
    let d = out.distillation.as_ref().unwrap();
    assert!(d.kept(), "{d:?}");
    let names: Vec<&String> = out.tensors.keys().collect();
    assert_eq!(names, [&down_proj_name(4), &norm_name(4)]);
    let model = GgufModel::open(&gguf).unwrap();
    let removal = Removal::from_layers(6, removed).unwrap();
    let written = tmp.path().join("healed.gguf");
    let opts = GgufHealOptions {
        overwrite: Overwrite::Refuse,
        split_max_bytes: None,
        ty: GgmlType::F32,
        keep_types: true,
        metadata: Vec::new(),
    };
    write_healed_gguf(&model, &removal, &out, &written, &opts, &Silent).unwrap();
    let window = &t[..CTX];
    let mem = heal::open_healed(&gguf, &out.tensors).unwrap();
    let want = flat_logits(&mem, &removed, window);
    let got = flat_logits(&Model::open(&written).unwrap(), &[], window);
    let e = max_diff(&got, &want);
    assert!(e < 1e-4, "reloaded GGUF logits differ by {e}");
    let plain = flat_logits(
        &heal::open_healed(&gguf, &start.tensors).unwrap(),
        &removed,
        window,
    );
    assert!(
        max_diff(&plain, &want) > 1e-3,
        "distillation changed nothing"
    );
}
