//! Config surgery: the `config.json` of a pruned model. `num_hidden_layers` is the obvious field;
//! the rest are the per-layer settings that tools often forget (issue: mergekit and friends do not
//! slice `layer_types`). Rules, in order:
//!
//! - `layer_types` and every other top-level array with one entry per layer are sliced to the kept
//!   layers (reported, so the user sees what was treated as per-layer);
//! - `max_window_layers` (qwen: layers below it use full attention) becomes the number of kept
//!   layers below the old value;
//! - layer-index lists (`mlp_only_layers`, …) are renumbered and removed layers dropped;
//! - qwen MoE's `decoder_sparse_step` pattern is kept when the kept layers still follow it, and
//!   otherwise replaced by an explicit `mlp_only_layers` list with step 1;
//! - Gemma's sliding/global pattern: each kept layer keeps its type, with `layer_types` written
//!   out when the kept layers break the family's rule ([`crate::arch::families::fix_layer_pattern`]).
//!
//! Key order is preserved (serde_json `preserve_order`).

use crate::arch::ArchConfig;
use crate::select::Removal;
use serde_json::{Map, Value};

/// Top-level keys holding lists of layer indices.
const LAYER_INDEX_LISTS: &[&str] = &[
    "mlp_only_layers",
    "attn_layer_indices",
    "full_attn_idxs",
    "swa_layers",
];

/// Top-level arrays that are never per-layer, even when their length happens to match.
const NOT_PER_LAYER: &[&str] = &[
    "architectures",
    "bad_words_ids",
    "eos_token_id",
    "bos_token_id",
    "pad_token_id",
    "begin_suppress_tokens",
    "suppress_tokens",
];

/// Settings with layer structure that depthprune cannot keep consistent; it warns about them.
const UNHANDLED: &[&str] = &[
    "sliding_window_pattern",
    "first_k_dense_replace",
    "moe_layer_freq",
    "global_attn_every_n_layers",
    "interleave_moe_layer_step",
];

/// The pruned config and what was done to it.
#[derive(Debug, Clone)]
pub struct ConfigSurgery {
    pub config: Value,
    /// One line per field changed, for the CLI, the card and `pruning.json`.
    pub changes: Vec<String>,
    pub warnings: Vec<String>,
}

/// Produces the config of the pruned model. `dtype` (e.g. `bfloat16`) replaces `torch_dtype`.
pub fn prune_config(
    raw: &Value,
    arch: &ArchConfig,
    removal: &Removal,
    dtype: Option<&str>,
) -> ConfigSurgery {
    let n = removal.n_layers();
    let kept = removal.kept();
    let mut changes = Vec::new();
    let mut warnings = Vec::new();
    let mut out = raw.as_object().cloned().unwrap_or_default();

    out.insert("num_hidden_layers".into(), Value::from(kept.len()));
    changes.push(format!("num_hidden_layers: {n} -> {}", kept.len()));

    for (key, value) in out.iter_mut() {
        if NOT_PER_LAYER.contains(&key.as_str()) || key == "num_hidden_layers" {
            continue;
        }
        if let Value::Array(items) = value {
            if n >= 2 && items.len() == n && !LAYER_INDEX_LISTS.contains(&key.as_str()) {
                let sliced: Vec<Value> = kept.iter().map(|&i| items[i].clone()).collect();
                *items = sliced;
                changes.push(format!(
                    "{key}: sliced per layer ({n} -> {} entries)",
                    kept.len()
                ));
            }
        }
    }

    if let Some(mwl) = out.get("max_window_layers").and_then(Value::as_u64) {
        let new = kept.iter().filter(|&&i| (i as u64) < mwl).count();
        if new as u64 != mwl {
            changes.push(format!("max_window_layers: {mwl} -> {new}"));
        }
        out.insert("max_window_layers".into(), Value::from(new));
    }

    for key in LAYER_INDEX_LISTS {
        if let Some(Value::Array(items)) = out.get(*key) {
            let old: Vec<u64> = items.iter().filter_map(Value::as_u64).collect();
            let new: Vec<usize> = old
                .iter()
                .filter_map(|&i| removal.new_index(i as usize))
                .collect();
            changes.push(format!("{key}: {old:?} -> {new:?}"));
            out.insert(key.to_string(), Value::from(new));
        }
    }

    if arch.moe.is_some() && out.contains_key("decoder_sparse_step") {
        fix_sparse_step(&mut out, arch, removal, &mut changes);
    }

    // SmolLM3 without `no_rope_layers` derives them from an interval that pruning breaks: write
    // the kept layers' switches out.
    if let Some(rope) = &arch.family.rope_layers {
        if !out.contains_key("no_rope_layers") {
            let kept: Vec<u8> = removal.kept().iter().map(|&i| u8::from(rope[i])).collect();
            changes.push(format!(
                "no_rope_layers: written out ({} entries) for the kept layers",
                kept.len()
            ));
            out.insert("no_rope_layers".into(), Value::from(kept));
        }
    }
    let pattern_fixed =
        crate::arch::families::fix_layer_pattern(&mut out, arch, removal, &mut changes);
    for key in UNHANDLED {
        if pattern_fixed && *key == "sliding_window_pattern" {
            continue;
        }
        if out.contains_key(*key) {
            warnings.push(format!(
                "`{key}` describes a layer pattern that pruning may break; check it by hand"
            ));
        }
    }
    if !arch.is_supported() {
        warnings.push(format!(
            "architecture `{}` is not one depthprune knows; per-layer config fields other than arrays of length {n} were not checked",
            arch.model_type
        ));
    }

    if let Some(d) = dtype {
        let key = if out.contains_key("torch_dtype") || !out.contains_key("dtype") {
            "torch_dtype"
        } else {
            "dtype"
        };
        out.insert(key.into(), Value::from(d));
        changes.push(format!("{key}: {d}"));
    }

    ConfigSurgery {
        config: Value::Object(out),
        changes,
        warnings,
    }
}

fn fix_sparse_step(
    out: &mut Map<String, Value>,
    arch: &ArchConfig,
    removal: &Removal,
    changes: &mut Vec<String>,
) {
    let Some(moe) = &arch.moe else { return };
    let kept = removal.kept();
    let sparse_new: Vec<bool> = kept.iter().map(|&i| arch.layer_is_sparse(i)).collect();
    let step = moe.decoder_sparse_step;
    let only = crate::arch::config::get_usize_list(out, "mlp_only_layers");
    let follows = sparse_new
        .iter()
        .enumerate()
        .all(|(j, &s)| s == (!only.contains(&j) && (j + 1) % step == 0));
    if !follows {
        let dense: Vec<usize> = sparse_new
            .iter()
            .enumerate()
            .filter(|(_, &s)| !s)
            .map(|(j, _)| j)
            .collect();
        changes.push(format!(
            "decoder_sparse_step: {step} -> 1 with mlp_only_layers {dense:?} (the kept layers no longer follow the step)"
        ));
        out.insert("decoder_sparse_step".into(), Value::from(1));
        out.insert("mlp_only_layers".into(), Value::from(dense));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::LayerSpec;
    use serde_json::json;

    fn run(cfg: Value, spec: &str) -> ConfigSurgery {
        let arch = ArchConfig::from_value(&cfg).unwrap();
        let n = arch.num_hidden_layers;
        let removal = Removal::drop(&LayerSpec::parse(spec).unwrap(), n).unwrap();
        prune_config(&cfg, &arch, &removal, None)
    }

    #[test]
    fn slices_layer_types_and_window_layers_keeping_order() {
        let cfg = json!({"model_type":"qwen2","num_hidden_layers":6,"hidden_size":8,"num_attention_heads":2,
            "intermediate_size":16,"vocab_size":10,"use_sliding_window":true,"max_window_layers":4,
            "layer_types":["full_attention","full_attention","full_attention","full_attention","sliding_attention","sliding_attention"],
            "zzz":1});
        let s = run(cfg, "1..3");
        let c = &s.config;
        assert_eq!(c["num_hidden_layers"], 4);
        assert_eq!(c["max_window_layers"], 2);
        assert_eq!(
            c["layer_types"],
            json!([
                "full_attention",
                "full_attention",
                "sliding_attention",
                "sliding_attention"
            ])
        );
        let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
        assert_eq!(keys.first().unwrap().as_str(), "model_type");
        assert_eq!(keys.last().unwrap().as_str(), "zzz");
    }

    #[test]
    fn moe_sparse_step_becomes_explicit_when_broken() {
        let cfg = json!({"model_type":"qwen3_moe","num_hidden_layers":6,"hidden_size":8,"num_attention_heads":2,
            "intermediate_size":16,"moe_intermediate_size":4,"num_experts":4,"vocab_size":10,
            "decoder_sparse_step":2,"mlp_only_layers":[]});
        // Sparse layers are 1, 3, 5. Dropping layer 0 shifts them to 0, 2, 4.
        let s = run(cfg, "0");
        assert_eq!(s.config["decoder_sparse_step"], 1);
        assert_eq!(s.config["mlp_only_layers"], json!([1, 3]));
    }

    #[test]
    fn smollm3_nope_layers_are_written_out_when_derived() {
        let v = json!({"model_type":"smollm3","num_hidden_layers":8,"hidden_size":8,
            "num_attention_heads":2,"intermediate_size":16,"vocab_size":10});
        let arch = ArchConfig::from_value(&v).unwrap();
        let removal = Removal::drop(&LayerSpec::parse("1,2").unwrap(), 8).unwrap();
        let s = prune_config(&v, &arch, &removal, None);
        assert_eq!(s.config["no_rope_layers"], json!([1, 0, 1, 1, 1, 0]));
    }

    #[test]
    fn renumbers_index_lists() {
        let cfg = json!({"model_type":"qwen3_moe","num_hidden_layers":6,"hidden_size":8,"num_attention_heads":2,
            "intermediate_size":16,"moe_intermediate_size":4,"num_experts":4,"vocab_size":10,
            "decoder_sparse_step":1,"mlp_only_layers":[0, 2, 5]});
        let s = run(cfg, "2..4");
        assert_eq!(s.config["mlp_only_layers"], json!([0, 3]));
        assert_eq!(s.config["decoder_sparse_step"], 1);
    }

    #[test]
    fn warns_on_unknown_architecture() {
        let cfg = json!({"model_type":"starcoder2","num_hidden_layers":4,"hidden_size":8,"num_attention_heads":2,
            "intermediate_size":16,"vocab_size":10});
        let s = run(cfg, "1");
        assert!(s.warnings.iter().any(|w| w.contains("starcoder2")));
    }

    #[test]
    fn phi3_and_olmo2_have_no_per_layer_fields_beyond_the_count() {
        for model_type in ["phi3", "olmo2"] {
            let v = json!({"model_type":model_type,"num_hidden_layers":6,"hidden_size":8,
                "num_attention_heads":2,"intermediate_size":16,"vocab_size":10,"sliding_window":4});
            let a = ArchConfig::from_value(&v).unwrap();
            let removal = Removal::drop(&LayerSpec::parse("1,2").unwrap(), 6).unwrap();
            let s = prune_config(&v, &a, &removal, None);
            assert_eq!(s.changes, ["num_hidden_layers: 6 -> 4"], "{model_type}");
            assert!(s.warnings.is_empty(), "{model_type}: {:?}", s.warnings);
            assert_eq!(s.config["sliding_window"], json!(4));
        }
    }
}
