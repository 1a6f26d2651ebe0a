//! Low-rank distillation (issue 23) on the golden llama fixture (4 layers, layer 2 removed): the
//! rank-r updates on the kept layers' linear weights lower the held-out KL and are merged into
//! the weights, every changed tensor is listed, the guard keeps the closed-form heal when
//! training only hurts, and the written checkpoint reloads with the in-memory logits and passes
//! `verify --source`. The gradient is checked against finite differences in
//! `src/heal/kd/tests.rs`.

mod common;

use common::golden::{flat_logits, max_diff};
use common::{golden_llama, golden_tokens, heal_golden};
use depthprune::heal::{self, KdOptions};
use depthprune::model::Model;
use depthprune::progress::Silent;

use common::guarded as opts;

const CTX: usize = common::GUARD_CTX;
const SAMPLES: usize = common::GUARD_SAMPLES;

fn kd(lr: f64, lowrank_lr: f64) -> KdOptions {
    KdOptions {
        steps: 24,
        lr,
        eval_every: 4,
        patience: 0,
        rank: 4,
        lowrank_lr,
        time_limit: None,
    }
}

/// The seven linear weights of each kept layer from the fold layer (1) on: layers 1 and 3.
fn adapted() -> Vec<String> {
    let mut v: Vec<String> = [1, 3]
        .iter()
        .flat_map(|l| {
            heal::lowrank::TARGETS
                .iter()
                .map(move |t| format!("model.layers.{l}.{t}.weight"))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn low_rank_updates_lower_the_held_out_kl_and_are_merged_into_every_adapted_weight() {
    let t = golden_tokens(SAMPLES);
    let start = heal_golden(&t, &opts()).unwrap();
    let maps_only = heal::distil(
        &golden_llama(),
        &t,
        &start,
        &KdOptions {
            rank: 0,
            ..kd(1e-2, 1e-2)
        },
        &Silent,
    )
    .unwrap();
    let out = heal::distil(&golden_llama(), &t, &start, &kd(1e-2, 1e-2), &Silent).unwrap();
    let d = out.distillation.as_ref().unwrap();
    assert!(d.kept(), "{d:?}");
    assert_eq!(d.rank, 4);
    let (h, i) = (32, 64);
    // A (4, in) and B (out, 4) for q, k, v, o (32×32, 16×32 twice, 32×32), gate, up, down.
    let per_layer = 4 * (32 + 32) + 2 * 4 * (32 + 16) + 4 * (32 + 32) + 3 * 4 * (h + i);
    assert_eq!(d.lowrank_parameters, 2 * per_layer);
    let mut listed = d.lowrank_tensors.clone();
    listed.sort();
    assert_eq!(listed, adapted());
    // Every adapted weight changed and is among the healed tensors; nothing else was added.
    let (_, source) = depthprune::model::open_checkpoint(&golden_llama()).unwrap();
    for name in adapted() {
        let now = &out.tensors[&name];
        let before: Vec<f32> = source
            .tensor(&name)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_ne!(now, &before, "`{name}` did not change");
    }
    let mut keys: Vec<&String> = out.tensors.keys().collect();
    keys.sort();
    assert_eq!(keys.len(), adapted().len());
    // More trainable values fit the held-out windows better than the maps alone.
    let m = maps_only.distillation.as_ref().unwrap();
    assert!(
        d.best_kl < m.best_kl,
        "{} vs maps only {}",
        d.best_kl,
        m.best_kl
    );
    assert!(
        d.describe().contains("rank-4 updates on 14 weights"),
        "{}",
        d.describe()
    );
}

#[test]
fn low_rank_training_that_only_hurts_keeps_the_closed_form_heal() {
    let t = golden_tokens(SAMPLES);
    let start = heal_golden(&t, &opts()).unwrap();
    // Learning rates this large throw the maps and the factors far off at the first step.
    let out = heal::distil(&golden_llama(), &t, &start, &kd(10.0, 50.0), &Silent).unwrap();
    let d = out.distillation.as_ref().unwrap();
    assert!(!d.kept(), "{d:?}");
    assert!(
        d.curve[1..].iter().all(|p| p.validation_kl > d.start_kl),
        "{d:?}"
    );
    assert!(d.lowrank_tensors.is_empty());
    assert_eq!(out.tensors, start.tensors);
    assert_eq!(out.method(), "lstsq");
}

#[test]
fn a_time_budget_stops_training_and_a_bad_one_is_refused() {
    let t = golden_tokens(SAMPLES);
    let start = heal_golden(&t, &opts()).unwrap();
    let quick = KdOptions {
        steps: 100_000,
        time_limit: Some(1e-9),
        ..kd(1e-2, 1e-2)
    };
    let out = heal::distil(&golden_llama(), &t, &start, &quick, &Silent).unwrap();
    let d = out.distillation.as_ref().unwrap();
    assert!(d.steps <= 1, "{d:?}");
    let bad = KdOptions {
        time_limit: Some(-1.0),
        ..kd(1e-2, 1e-2)
    };
    let e = heal::distil(&golden_llama(), &t, &start, &bad, &Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`time_limit`"), "{e}");
}

#[test]
fn prune_heal_kd_with_low_rank_reloads_with_the_in_memory_logits_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = common::guarded_flags(&[
        "--heal",
        "kd",
        "--steps",
        "24",
        "--lr",
        "1e-2",
        "--lowrank-lr",
        "1e-2",
        "--rank",
        "4",
        "--kd-eval-every",
        "4",
        "--patience",
        "0",
    ]);
    let (stdout, prov) = common::prune_golden_ok(tmp.path(), &flags, "lr");
    assert!(stdout.contains("rank-4 updates on 14 weights"), "{stdout}");
    let h = &prov["healing"];
    assert_eq!(h["distillation"]["kept"], true, "{h}");
    // Provenance lists every changed tensor under its pruned name (layer 3 is now 2).
    let listed: Vec<&str> = h["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 14, "{listed:?}");
    assert!(listed.contains(&"model.layers.2.self_attn.q_proj.weight"));
    assert!(listed.contains(&"model.layers.1.mlp.up_proj.weight"));

    let t = golden_tokens(SAMPLES);
    let start = heal_golden(&t, &opts()).unwrap();
    let mem = heal::distil(&golden_llama(), &t, &start, &kd(1e-2, 1e-2), &Silent).unwrap();
    let in_memory = heal::open_healed(&golden_llama(), &mem.tensors).unwrap();
    let reloaded = Model::open(&tmp.path().join("lr")).unwrap();
    let window = &t[..CTX];
    let diff = max_diff(
        &flat_logits(&in_memory, &[2], window),
        &flat_logits(&reloaded, &[], window),
    );
    assert!(diff < 1e-5, "reloaded logits differ by {diff}");

    let dense = golden_llama();
    let o = common::run_in(&["verify", "lr", "--source", common::s(&dense)], tmp.path());
    assert!(o.status.success(), "{}", common::stderr(&o));
    let out = common::stdout(&o);
    assert!(out.contains("14 healed (not compared)"), "{out}");
}
