//! The MoE forward pass against transformers 5.24: tiny random qwen2_moe (shared expert, dense
//! and sparse layers by `decoder_sparse_step`), qwen3_moe (QK-norm, renormalised top-k, a dense
//! layer by `mlp_only_layers`) and mixtral (every layer sparse, sliding window), with the tensors
//! transformers computed for them (made by `scripts/make_golden_moe.py`, in the format of
//! `tests/golden_model.rs`). Logits agree within 1e-4 and every layer tap within 1e-5; skipping
//! layers equals deleting them; a pruned checkpoint's config keeps every kept layer's kind and its
//! logits equal those transformers computes after reloading that config.

mod common;

use candle_core::Tensor;
use common::golden;
use common::{run, stderr};
use depthprune::model::Model;
use std::collections::HashMap;

const LOGITS_TOL: f32 = 1e-4;
const TAP_TOL: f32 = 1e-5;
const ARCHS: &[&str] = &["qwen2_moe", "qwen3_moe", "mixtral"];
const SKIP: &[usize] = &[1, 2];

use golden::{check, check_head, check_taps, dir, ids, load as golden, max_err, meta};

fn logits_of(model: &Model, g: &HashMap<String, Tensor>, skip: &[usize]) -> Tensor {
    golden::logits(model, &ids(&g["tokens"]), skip)
}

#[test]
fn logits_and_every_layer_tap_match_transformers() {
    for arch in ARCHS {
        let g = golden(arch);
        let model = Model::open(&dir(arch)).unwrap();
        let (hidden, worst) = check_taps(arch, &model, &g, TAP_TOL, &mut |_, _| {});
        let e = check_head(arch, &model, &g, &hidden, (TAP_TOL, LOGITS_TOL));
        eprintln!("{arch}: max abs error logits {e:.2e}, layer taps {worst:.2e}");
    }
}

#[test]
fn skipping_layers_equals_deleting_them_in_transformers() {
    for arch in ARCHS {
        golden::check_skip(arch, arch, SKIP, LOGITS_TOL);
    }
}

#[test]
fn greedy_generation_matches_transformers_with_and_without_cache() {
    golden::check_generations("", ARCHS);
}

/// `depthprune prune` on each fixture: the per-layer fields are those the script reloaded in
/// transformers (which checked every kept layer's kind), and the logits equal transformers' logits
/// of that reloaded checkpoint.
#[test]
fn pruned_checkpoints_reload_as_transformers_does() {
    for arch in ARCHS {
        let g = golden(arch);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("pruned");
        let drop = meta(arch, "prune");
        let o = run(&[
            "prune",
            dir(arch).to_str().unwrap(),
            "--drop",
            &drop,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{arch}: {}", stderr(&o));
        let text = std::fs::read_to_string(out.join("config.json")).unwrap();
        let cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
        let want: serde_json::Value = serde_json::from_str(&meta(arch, "prune_config")).unwrap();
        for (key, value) in want.as_object().unwrap() {
            assert_eq!(&cfg[key], value, "{arch}: pruned config.json `{key}`");
        }
        let model = Model::open(&out).unwrap();
        let got = logits_of(&model, &g, &[]);
        let e = check(arch, "pruned logits", &got, &g["prune.logits"], LOGITS_TOL);
        // Removing the layers and skipping them are the same model.
        let dense = Model::open(&dir(arch)).unwrap();
        let skip: Vec<usize> = drop.split(',').map(|s| s.parse().unwrap()).collect();
        let skipped = logits_of(&dense, &g, &skip);
        assert_eq!(max_err(&got, &skipped), 0.0, "{arch}: pruned != skipped");
        eprintln!("{arch}: pruned (drop {drop}) logits vs transformers reload {e:.2e}");
    }
}

/// `inspect --json` counts what torch counts (ties once), from the tensors and from config.json
/// alone, and the parameters active per token: all but the routed experts a token skips.
#[test]
fn inspect_counts_total_and_active_parameters_as_torch_does() {
    for arch in ARCHS {
        let want: serde_json::Value = serde_json::from_str(&meta(arch, "params")).unwrap();
        for target in [dir(arch), dir(arch).join("config.json")] {
            let o = run(&["inspect", target.to_str().unwrap(), "--json"]);
            assert!(o.status.success(), "{arch}: {}", stderr(&o));
            let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let what = target.display();
            assert_eq!(got["total_params"], want["total"], "{what}");
            assert_eq!(got["active_params"], want["active"], "{what}");
            let m = &got["moe_params"];
            assert!(m["active_experts"].as_u64().unwrap() < m["experts"].as_u64().unwrap());
        }
        let o = run(&["inspect", dir(arch).to_str().unwrap()]);
        let text = common::stdout(&o);
        let active = want["active"].as_u64().unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("active per token"))
            .unwrap();
        assert!(line.contains(&depthprune::fmt::thousands(active)), "{line}");
        eprintln!(
            "{arch}: {} parameters, {active} active per token",
            want["total"]
        );
    }
}
