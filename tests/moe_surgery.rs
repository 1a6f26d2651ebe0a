//! Config surgery for the MoE families (issue 17): after every possible removal, each kept layer
//! is sparse or dense exactly as before, as transformers decides it from the pruned config
//! (`layer_idx not in mlp_only_layers and (layer_idx + 1) % decoder_sparse_step == 0`), and every
//! per-layer field (`layer_types`, `mlp_only_layers`, `max_window_layers`) is sliced or renumbered.

use depthprune::arch::ArchConfig;
use depthprune::checkpoint::config_surgery::prune_config;
use depthprune::select::Removal;
use serde_json::{json, Value};
use std::path::PathBuf;

fn fixture(arch: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(arch)
        .join("config.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// transformers' rule, read from the raw JSON as transformers reads it (defaults: step 1, no
/// dense layers; Mixtral is sparse everywhere).
fn hf_is_sparse(cfg: &Value, i: usize) -> bool {
    if cfg["model_type"] == "mixtral" {
        return true;
    }
    let step = cfg["decoder_sparse_step"].as_u64().unwrap_or(1) as usize;
    let only: Vec<u64> = cfg["mlp_only_layers"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    !only.contains(&(i as u64)) && (i + 1).is_multiple_of(step)
}

/// Checks every removal of at least one layer that keeps at least one, returning how many needed the explicit
/// `mlp_only_layers` form.
fn check_every_removal(cfg: &Value) -> usize {
    let arch = ArchConfig::from_value(cfg).unwrap();
    let n = arch.num_hidden_layers;
    let mut rewritten = 0;
    for mask in 1u32..(1 << n) - 1 {
        let removed: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
        let removal = Removal::from_layers(n, removed.clone()).unwrap();
        let kept = removal.kept();
        let s = prune_config(cfg, &arch, &removal, None);
        let out = &s.config;
        assert_eq!(out["num_hidden_layers"], kept.len());
        for (j, &i) in kept.iter().enumerate() {
            assert_eq!(
                hf_is_sparse(out, j),
                hf_is_sparse(cfg, i),
                "removing {removed:?}: kept layer {i} (now {j}) changed kind; config {out}"
            );
        }
        // The library reads the pruned config the same way.
        let pruned = ArchConfig::from_value(out).unwrap();
        for (j, &i) in kept.iter().enumerate() {
            assert_eq!(pruned.layer_is_sparse(j), arch.layer_is_sparse(i));
        }
        if let Some(types) = cfg["layer_types"].as_array() {
            let want: Vec<&Value> = kept.iter().map(|&i| &types[i]).collect();
            assert_eq!(
                out["layer_types"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .collect::<Vec<_>>(),
                want
            );
        }
        if let Some(mwl) = cfg["max_window_layers"].as_u64() {
            let below = kept.iter().filter(|&&i| (i as u64) < mwl).count();
            assert_eq!(out["max_window_layers"], below);
        }
        if out["decoder_sparse_step"] != cfg["decoder_sparse_step"] {
            assert_eq!(out["decoder_sparse_step"], 1);
            rewritten += 1;
        }
    }
    rewritten
}

#[test]
fn qwen2_moe_fixture_keeps_layer_kinds_under_every_removal() {
    let cfg = fixture("qwen2_moe");
    assert_eq!(cfg["decoder_sparse_step"], 2);
    // Most removals shift sparse layers off the step; they get the explicit form.
    assert!(check_every_removal(&cfg) > 0);
}

#[test]
fn qwen3_moe_fixture_renumbers_mlp_only_layers_under_every_removal() {
    let cfg = fixture("qwen3_moe");
    assert_eq!(check_every_removal(&cfg), 0, "step 1 never needs rewriting");
    let arch = ArchConfig::from_value(&cfg).unwrap();
    let s = prune_config(&cfg, &arch, &Removal::from_layers(4, [0]).unwrap(), None);
    assert_eq!(s.config["mlp_only_layers"], json!([]));
    let s = prune_config(&cfg, &arch, &Removal::from_layers(4, [1]).unwrap(), None);
    assert_eq!(s.config["mlp_only_layers"], json!([0]));
}

#[test]
fn mixtral_fixture_has_no_layer_pattern_to_keep() {
    let cfg = fixture("mixtral");
    assert_eq!(check_every_removal(&cfg), 0);
    let arch = ArchConfig::from_value(&cfg).unwrap();
    let s = prune_config(&cfg, &arch, &Removal::from_layers(4, [1, 2]).unwrap(), None);
    assert!(s.config.get("mlp_only_layers").is_none());
    assert!(s.config.get("decoder_sparse_step").is_none());
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

/// Larger qwen patterns: steps 2 and 3 with dense layers listed, sliding-window layer types and
/// `max_window_layers`, under all 2^8 - 2 removals.
#[test]
fn qwen_step_patterns_with_listed_dense_layers_survive_every_removal() {
    for (model_type, step, only) in [
        ("qwen2_moe", 2, json!([3])),
        ("qwen3_moe", 3, json!([0, 5])),
        ("qwen2_moe", 1, json!([1, 2, 7])),
    ] {
        let types: Vec<&str> = (0..8)
            .map(|i| {
                if i % 2 == 0 {
                    "sliding_attention"
                } else {
                    "full_attention"
                }
            })
            .collect();
        let cfg = json!({"model_type": model_type, "num_hidden_layers": 8, "hidden_size": 8,
            "num_attention_heads": 2, "intermediate_size": 16, "moe_intermediate_size": 4,
            "num_experts": 4, "num_experts_per_tok": 2, "vocab_size": 10,
            "decoder_sparse_step": step, "mlp_only_layers": only, "layer_types": types,
            "use_sliding_window": true, "sliding_window": 4, "max_window_layers": 5});
        let rewritten = check_every_removal(&cfg);
        assert_eq!(rewritten > 0, step > 1, "{model_type} step {step}");
    }
}

/// A config with no `decoder_sparse_step` (transformers' default, 1) and no `mlp_only_layers`
/// keeps every layer sparse without gaining either key.
#[test]
fn defaults_stay_implicit() {
    let cfg = json!({"model_type": "qwen3_moe", "num_hidden_layers": 4, "hidden_size": 8,
        "num_attention_heads": 2, "intermediate_size": 16, "moe_intermediate_size": 4,
        "num_experts": 4, "vocab_size": 10});
    assert_eq!(check_every_removal(&cfg), 0);
    let arch = ArchConfig::from_value(&cfg).unwrap();
    let s = prune_config(&cfg, &arch, &Removal::from_layers(4, [1]).unwrap(), None);
    assert!(s.config.get("mlp_only_layers").is_none());
}
