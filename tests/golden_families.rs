//! The families beyond llama against transformers: a tiny random model of each under
//! `tests/fixtures/golden/families/` (Gemma 2, Gemma 3, Phi-3, OLMo 2 from
//! `scripts/make_golden.py families`; the registry's later rows from
//! `scripts/make_golden_registry_families.py`) and what transformers computed for it.
//! Logits within 1e-4 and every layer tap within 1e-5; skipping layers equals deleting them in
//! transformers; the checkpoint `prune` writes gives the logits transformers computed when it
//! loaded that same prune's output; greedy generation matches, with and without the cache (for
//! Phi-3 the generation crosses LongRoPE's switch to the long factors).

mod common;

use candle_core::Tensor;
use common::golden::{self, check, check_head, check_taps, ids, logits};
use depthprune::model::Model;
use std::collections::HashMap;
use std::path::PathBuf;

const LOGITS_TOL: f32 = 1e-4;
const TAP_TOL: f32 = 1e-5;
const SKIP: &[usize] = &[1, 2];

/// Every fixture under `families/` (one folder per family, written by
/// `scripts/make_golden_families.py` or `scripts/make_golden_registry_families.py`): a family
/// added with its fixture is tested here without a line of this file changing.
fn families() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(golden::dir("families"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("golden.safetensors").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn dir(arch: &str) -> PathBuf {
    golden::dir(&format!("families/{arch}"))
}

fn load(arch: &str) -> HashMap<String, Tensor> {
    golden::load(&format!("families/{arch}"))
}

#[test]
fn logits_and_every_layer_tap_match_transformers() {
    for arch in &families() {
        let g = load(arch);
        let model = Model::open(&dir(arch)).unwrap();
        let rows = ids(&g["tokens"]);
        let rows: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let embed = model.embed(&model.tokens(&rows).unwrap()).unwrap();
        check(arch, "embed", &embed, &g["embed"], TAP_TOL);
        let (hidden, worst) = check_taps(arch, &model, &g, TAP_TOL, &mut |_, _| {});
        let e = check_head(arch, &model, &g, &hidden, (TAP_TOL, LOGITS_TOL));
        eprintln!("{arch}: max |Δ| logits {e:.2e}, layer taps {worst:.2e}");
    }
}

/// Every row of the architecture registry has a tiny model here or beside the other goldens
/// (`tests/fixtures/golden/<model_type>/`) with what transformers computed for it, so no
/// family is supported untested; the fixtures named here are the ones this file tests.
#[test]
fn every_registry_row_has_a_transformers_golden() {
    let mut covered = Vec::new();
    for sub in ["", "families"] {
        for e in std::fs::read_dir(golden::dir(sub)).unwrap() {
            let config = e.unwrap().path().join("config.json");
            if let Ok(text) = std::fs::read_to_string(&config) {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                covered.push(v["model_type"].as_str().unwrap().to_string());
            }
        }
    }
    for row in depthprune::arch::registry::ARCHES {
        assert!(
            covered.iter().any(|m| m == row.model_type),
            "`{}` has no golden fixture (covered: {covered:?})",
            row.model_type
        );
    }
    assert!(families().len() >= 6, "{:?}", families());
}

#[test]
fn skipping_layers_equals_deleting_them_in_transformers() {
    for arch in &families() {
        golden::check_skip(arch, &format!("families/{arch}"), SKIP, LOGITS_TOL);
    }
}

/// `prune --drop 1,2` writes a checkpoint whose logits are those transformers computed when it
/// loaded the same command's output (the fixture script checked that they equal the dense model
/// with the layers deleted): config surgery kept every layer's type, RoPE and window.
#[test]
fn pruned_checkpoints_give_the_logits_transformers_gives_them() {
    let tmp = tempfile::tempdir().unwrap();
    for arch in &families() {
        let g = load(arch);
        let out = tmp.path().join(arch);
        let o = common::run(&[
            "prune",
            dir(arch).to_str().unwrap(),
            "--drop",
            "1,2",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{arch}: {}", common::stderr(&o));
        let pruned = Model::open(&out).unwrap();
        assert_eq!(pruned.n_layers(), 4);
        let e = check(
            arch,
            "pruned logits",
            &logits(&pruned, &ids(&g["tokens"]), &[]),
            &g["pruned.logits"],
            LOGITS_TOL,
        );
        eprintln!("{arch}: max |Δ| pruned checkpoint vs transformers loading it {e:.2e}");
    }
}

#[test]
fn gemma3_pruned_config_spells_out_the_broken_pattern() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("g3");
    let o = common::run(&[
        "prune",
        dir("gemma3").to_str().unwrap(),
        "--drop",
        "1,2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let text = std::fs::read_to_string(out.join("config.json")).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Layers 0, 3, 4, 5 of a 2:1 pattern are sliding, sliding, sliding, global; the pattern
    // would make the fourth sliding and the third global.
    assert_eq!(
        cfg["layer_types"],
        serde_json::json!([
            "sliding_attention",
            "sliding_attention",
            "sliding_attention",
            "full_attention"
        ])
    );
    assert!(cfg.get("sliding_window_pattern").is_none());
    assert!(
        !common::stderr(&o).contains("sliding_window_pattern` describes"),
        "no warning for a handled pattern: {}",
        common::stderr(&o)
    );
}

#[test]
fn greedy_generation_matches_transformers_with_and_without_cache() {
    let families = families();
    let names: Vec<&str> = families.iter().map(String::as_str).collect();
    golden::check_generations("families/", &names);
}

/// `plan` counts parameters from `config.json` alone; for every family that count must be the
/// one the tensors give, component by component (fused Phi-3 matrices and Gemma's extra norms
/// included).
#[test]
fn parameter_counts_from_the_config_equal_the_tensors() {
    use depthprune::arch::ParamCounts;
    use depthprune::checkpoint::hf::HfCheckpoint;
    for arch in &families() {
        let ckpt = HfCheckpoint::open(&dir(arch)).unwrap();
        let from_config = ParamCounts::from_config(&ckpt.arch);
        assert_eq!(from_config, ckpt.param_counts(), "{arch}");
    }
}

/// Twelve tokens stay within Phi-3's original context (16), so LongRoPE takes its short factors
/// there, while the 24-token goldens take the long ones.
#[test]
fn short_sequences_match_transformers() {
    for arch in &families() {
        let g = load(arch);
        let model = Model::open(&dir(arch)).unwrap();
        let want = &g["short.logits"];
        let short: Vec<Vec<u32>> = ids(&g["tokens"])
            .into_iter()
            .map(|r| r[..want.dim(1).unwrap()].to_vec())
            .collect();
        let e = check(
            arch,
            "short logits",
            &logits(&model, &short, &[]),
            want,
            LOGITS_TOL,
        );
        eprintln!("{arch}: max |Δ| logits of a short sequence {e:.2e}");
    }
}
