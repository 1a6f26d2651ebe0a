//! Map-only distillation (`--heal kd`, issue 18) on the golden llama fixture (4 layers, layer 2
//! removed): it lowers the held-out KL of the least-squares heal or keeps that heal unchanged,
//! and the written checkpoints (HF and GGUF paths share the fold) reload with the in-memory
//! logits. The gradient itself is checked against finite differences in `src/heal/kd/tests.rs`.

mod common;

use common::golden::{flat_logits, max_diff};
use common::{golden_llama, golden_tokens, heal_golden};
use depthprune::heal::{self, HealOptions, KdOptions};
use depthprune::model::Model;
use depthprune::progress::Silent;

use common::guarded as opts;

const CTX: usize = common::GUARD_CTX;
const SAMPLES: usize = common::GUARD_SAMPLES;

fn kd(lr: f64) -> KdOptions {
    KdOptions {
        steps: 24,
        lr,
        eval_every: 4,
        patience: 0,
        rank: 0,
        ..KdOptions::default()
    }
}

#[test]
fn distillation_lowers_the_held_out_kl_of_the_least_squares_heal() {
    let t = golden_tokens(SAMPLES);
    let start = heal_golden(&t, &opts()).unwrap();
    let out = heal::distil(&golden_llama(), &t, &start, &kd(1e-2), &Silent).unwrap();
    let d = out.distillation.as_ref().unwrap();
    assert_eq!(d.fold_layers, vec![1]);
    assert!(d.kept(), "{d:?}");
    assert!(d.best_kl < d.start_kl, "{d:?}");
    assert_eq!(d.curve.len(), 24 / 4 + 1);
    assert_eq!(d.curve[0].validation_kl, d.start_kl);
    let best = d.curve.iter().find(|p| p.step == d.best_step).unwrap();
    assert_eq!(best.validation_kl, d.best_kl);
    assert!(d.curve.iter().all(|p| p.validation_kl >= d.best_kl));
    // The fold is what was validated: the healed model's KL on the held-out windows, measured
    // independently through the plain forward with the folded weights.
    let name = "model.layers.1.mlp.down_proj.weight";
    assert_ne!(
        out.tensors[name],
        start.tensors.get(name).cloned().unwrap_or_default()
    );
    assert_eq!(out.method(), "kd");
    assert!(out.summary().contains("distilled"), "{}", out.summary());
}

#[test]
fn distillation_that_only_hurts_keeps_the_least_squares_heal() {
    let t = golden_tokens(SAMPLES);
    let start = heal_golden(&t, &opts()).unwrap();
    // A learning rate this large throws the maps far off at the first step.
    let out = heal::distil(&golden_llama(), &t, &start, &kd(10.0), &Silent).unwrap();
    let d = out.distillation.as_ref().unwrap();
    assert!(!d.kept(), "{d:?}");
    assert_eq!(d.best_kl, d.start_kl);
    assert!(
        d.curve[1..].iter().all(|p| p.validation_kl > d.start_kl),
        "{d:?}"
    );
    assert_eq!(out.tensors, start.tensors);
    assert_eq!(out.method(), "lstsq");
}

#[test]
fn distillation_without_a_hold_out_or_steps_is_refused() {
    let t = golden_tokens(SAMPLES);
    let start = heal_golden(&t, &opts()).unwrap();
    let none = KdOptions {
        steps: 0,
        ..kd(1e-3)
    };
    let e = heal::distil(&golden_llama(), &t, &start, &none, &Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least one step"), "{e}");
    let fixed = heal_golden(
        &t,
        &HealOptions::fixed(heal::Objective::Lstsq, 1e-3, heal::Prior::Identity, CTX),
    )
    .unwrap();
    let e = heal::distil(&golden_llama(), &t, &fixed, &kd(1e-3), &Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("hold-out of 2 or more"), "{e}");
}

#[test]
fn prune_heal_kd_writes_a_checkpoint_that_reloads_with_the_in_memory_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = common::guarded_flags(&[
        "--heal",
        "kd",
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
    ]);
    let (stdout, prov) = common::prune_golden_ok(tmp.path(), &flags, "kd");
    assert!(stdout.contains("distilled maps at layers 1"), "{stdout}");
    let h = &prov["healing"];
    assert_eq!(h["method"], "kd");
    let d = &h["distillation"];
    assert_eq!(d["kept"], true, "{d}");
    assert!(d["best_kl"].as_f64().unwrap() < d["start_kl"].as_f64().unwrap());
    let card = std::fs::read_to_string(tmp.path().join("kd/README.md")).unwrap();
    assert!(card.contains("map-only distillation"), "{card}");

    let t = golden_tokens(SAMPLES);
    let start = heal_golden(&t, &opts()).unwrap();
    let mem = heal::distil(&golden_llama(), &t, &start, &kd(1e-2), &Silent).unwrap();
    let in_memory = heal::open_healed(&golden_llama(), &mem.tensors).unwrap();
    let reloaded = Model::open(&tmp.path().join("kd")).unwrap();
    let window = &t[..CTX];
    let diff = max_diff(
        &flat_logits(&in_memory, &[2], window),
        &flat_logits(&reloaded, &[], window),
    );
    assert!(diff < 1e-5, "reloaded logits differ by {diff}");

    // kd needs the hold-out: refused before any work, nothing written.
    common::prune_golden_refused(
        tmp.path(),
        &["--heal", "kd", "--holdout", "0", "--alpha", "1e-3"],
        "--holdout 2 or more",
    );
}
