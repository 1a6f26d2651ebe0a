//! The dense families beyond the llama layout (issue 17): Gemma 2, Gemma 3 (text), Phi-3 and
//! OLMo 2. What sets each apart, in one place:
//!
//! | family | norms per layer | attention | MLP |
//! |---|---|---|---|
//! | llama, mistral, qwen2/3 | before attention and MLP | separate q/k/v | SwiGLU |
//! | Gemma 2 / 3 | before *and* after attention and MLP, scale `1 + w` | sliding and global layers, softcap (2), per-head q/k norm (3) | GELU-tanh |
//! | Phi-3 | as llama | fused `qkv_proj`, LongRoPE | fused `gate_up_proj` |
//! | OLMo 2 | after attention and MLP only | q/k norm over the whole projection | SwiGLU |
//!
//! Gemma's layer pattern (which layers use a sliding window) comes from `layer_types` when the
//! config has it, else from the family's rule: Gemma 2 alternates sliding, global; Gemma 3 has
//! `sliding_window_pattern − 1` sliding layers then one global (transformers' defaults). Pruning
//! can break that rule, so [`fix_layer_pattern`] writes the kept layers' types out explicitly.

use super::config::ArchConfig;
use crate::select::Removal;
use serde_json::{Map, Value};

/// The layer layout a `model_type` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// llama, mistral, qwen2, qwen3 and their MoE relatives.
    Llama,
    Gemma2,
    Gemma3,
    Phi3,
    Olmo2,
}

impl Family {
    /// The family of a `model_type` ([`super::registry`]); unknown ones are read as llama.
    pub fn of(model_type: &str) -> Self {
        super::registry::by_model_type(model_type).map_or(Family::Llama, |r| r.family)
    }

    /// Gemma 2 or Gemma 3.
    pub fn is_gemma(self) -> bool {
        matches!(self, Family::Gemma2 | Family::Gemma3)
    }

    /// Whether q/k/v and gate/up are stored fused (`qkv_proj`, `gate_up_proj`).
    pub fn fused(self) -> bool {
        self == Family::Phi3
    }
}

/// The tensors (after `model.layers.{i}.`) each layer of a family must hold, for the families
/// of issue 17: the HF side of the family's GGUF name table, which names every tensor of a layer.
/// Empty for the rest, whose layouts the forward pass checks as it loads.
pub fn required_layer_tensors(cfg: &ArchConfig) -> Vec<&'static str> {
    super::registry::by_model_type(&cfg.model_type)
        .and_then(|r| r.gguf_arch)
        .and_then(super::gguf_names::tables)
        .into_iter()
        .flatten()
        .flat_map(|t| t.iter().map(|&(hf, _)| hf))
        .collect()
}

/// The RMSNorm parameters of one layer implied by the config.
pub fn layer_norm_params(cfg: &ArchConfig) -> u64 {
    let h = cfg.hidden_size as u64;
    let d = cfg.head_dim as u64;
    match Family::of(&cfg.model_type) {
        Family::Gemma2 => 4 * h,
        Family::Gemma3 => 4 * h + 2 * d,
        Family::Olmo2 => {
            2 * h + (cfg.num_attention_heads as u64 + cfg.num_key_value_heads as u64) * d
        }
        Family::Llama | Family::Phi3 => 2 * h + if cfg.qk_norm { 2 * d } else { 0 },
    }
}

/// The family's rule for `n` layers: `true` where a layer uses the sliding window. `None` for
/// families without a rule.
fn pattern_types(cfg: &ArchConfig, n: usize) -> Option<Vec<bool>> {
    let period = match Family::of(&cfg.model_type) {
        Family::Gemma2 => 2,
        Family::Gemma3 => cfg.family.sliding_window_pattern,
        _ => return None,
    };
    Some((0..n).map(|i| !(i + 1).is_multiple_of(period)).collect())
}

/// Which layers use the sliding window, for families that mix sliding and global layers:
/// `layer_types` when given, else the family's rule. `None` for other families.
pub fn sliding_layers(cfg: &ArchConfig) -> Option<Vec<bool>> {
    let family = Family::of(&cfg.model_type);
    if !family.is_gemma() {
        return None;
    }
    match &cfg.layer_types {
        Some(types) => Some(types.iter().map(|t| t == "sliding_attention").collect()),
        None => pattern_types(cfg, cfg.num_hidden_layers),
    }
}

/// Keeps each kept layer's attention type after pruning. When the config has no `layer_types`
/// and the kept layers no longer follow the family's rule, an explicit `layer_types` is written;
/// and `sliding_window_pattern` is removed whenever it no longer describes the kept layers (so
/// no reader can rebuild the wrong types from it). Returns whether the family's pattern fields
/// were handled (nothing is left to warn about).
pub fn fix_layer_pattern(
    out: &mut Map<String, Value>,
    arch: &ArchConfig,
    removal: &Removal,
    changes: &mut Vec<String>,
) -> bool {
    let family = Family::of(&arch.model_type);
    let Some(before) = sliding_layers(arch) else {
        return false;
    };
    let kept: Vec<bool> = removal.kept().iter().map(|&i| before[i]).collect();
    let rule = pattern_types(arch, kept.len());
    let follows = rule.as_deref() == Some(kept.as_slice());
    if !out.contains_key("layer_types") && !follows {
        let types: Vec<Value> = kept
            .iter()
            .map(|&s| {
                Value::from(if s {
                    "sliding_attention"
                } else {
                    "full_attention"
                })
            })
            .collect();
        out.insert("layer_types".into(), Value::Array(types));
        changes.push(format!(
            "layer_types: written out ({} entries): the kept layers break the {} pattern",
            kept.len(),
            if family == Family::Gemma2 {
                "alternating".to_string()
            } else {
                format!("{}:1", arch.family.sliding_window_pattern - 1)
            }
        ));
    }
    // transformers 5 also saves its private copy, `_sliding_window_pattern`.
    for key in ["sliding_window_pattern", "_sliding_window_pattern"] {
        if !follows && out.remove(key).is_some() {
            changes.push(format!(
                "{key}: removed (the kept layers do not follow it; layer_types says each layer's type)"
            ));
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::LayerSpec;
    use serde_json::json;

    fn gemma3(extra: Value) -> (ArchConfig, Value) {
        let mut v = json!({"model_type":"gemma3_text","num_hidden_layers":6,"hidden_size":8,
            "num_attention_heads":2,"intermediate_size":16,"vocab_size":10,"head_dim":4});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        (ArchConfig::from_value(&v).unwrap(), v)
    }

    fn prune(arch: &ArchConfig, raw: &Value, drop: &str) -> (Map<String, Value>, Vec<String>) {
        let removal = Removal::drop(&LayerSpec::parse(drop).unwrap(), 6).unwrap();
        let mut out = raw.as_object().unwrap().clone();
        let mut changes = Vec::new();
        assert!(fix_layer_pattern(&mut out, arch, &removal, &mut changes));
        (out, changes)
    }

    #[test]
    fn gemma3_pattern_is_written_out_when_pruning_breaks_it() {
        let (a, raw) = gemma3(json!({"sliding_window_pattern": 3, "_sliding_window_pattern": 3}));
        assert_eq!(
            sliding_layers(&a).unwrap(),
            [true, true, false, true, true, false]
        );
        let (out, changes) = prune(&a, &raw, "1,2");
        assert_eq!(
            out["layer_types"],
            json!([
                "sliding_attention",
                "sliding_attention",
                "sliding_attention",
                "full_attention"
            ])
        );
        assert!(!out.contains_key("sliding_window_pattern"));
        assert!(!out.contains_key("_sliding_window_pattern"));
        assert_eq!(changes.len(), 3, "{changes:?}");
        // Dropping one whole period keeps the pattern: nothing to write.
        let (out, changes) = prune(&a, &raw, "3..6");
        assert!(!out.contains_key("layer_types"));
        assert_eq!(out["sliding_window_pattern"], json!(3));
        assert!(changes.is_empty());
    }

    #[test]
    fn gemma2_alternation_and_norm_counts() {
        let v = json!({"model_type":"gemma2","num_hidden_layers":6,"hidden_size":8,
            "num_attention_heads":2,"intermediate_size":16,"vocab_size":10,"head_dim":4});
        let a = ArchConfig::from_value(&v).unwrap();
        assert_eq!(
            sliding_layers(&a).unwrap(),
            [true, false, true, false, true, false]
        );
        let (out, _) = prune(&a, &v, "1");
        assert_eq!(out["layer_types"].as_array().unwrap().len(), 5);
        assert_eq!(layer_norm_params(&a), 32);
        let (g3, _) = gemma3(json!({}));
        assert_eq!(layer_norm_params(&g3), 40);
    }

    #[test]
    fn multimodal_gemma3_is_refused_with_what_to_prune_instead() {
        let v = json!({"model_type":"gemma3","text_config":{"model_type":"gemma3_text"}});
        let err = ArchConfig::from_value(&v).unwrap_err();
        assert!(err.contains("`gemma3_text`"), "{err}");
    }
}
