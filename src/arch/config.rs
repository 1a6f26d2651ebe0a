//! The architecture described by an HF `config.json`: the fields depthprune needs, read with clear
//! errors, and the families whose per-layer settings it knows.

use super::families::Family;
use super::family_config::FamilyConfig;
use super::fields;
use super::rope::RopeScaling;
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// Mixture-of-experts settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MoeConfig {
    pub num_experts: usize,
    pub num_experts_per_tok: usize,
    pub moe_intermediate_size: usize,
    pub shared_expert_intermediate_size: usize,
    /// Layers that use a dense MLP instead of experts (qwen MoE).
    pub mlp_only_layers: Vec<usize>,
    /// Every `decoder_sparse_step`-th layer is sparse (qwen MoE).
    pub decoder_sparse_step: usize,
}

/// What depthprune reads from `config.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ArchConfig {
    pub model_type: String,
    pub architectures: Vec<String>,
    pub num_hidden_layers: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: Option<usize>,
    /// Bias on q/k/v projections.
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Per-head RMSNorm on queries and keys (qwen3).
    pub qk_norm: bool,
    pub sliding_window: Option<usize>,
    pub use_sliding_window: bool,
    pub max_window_layers: Option<usize>,
    pub layer_types: Option<Vec<String>>,
    pub torch_dtype: Option<String>,
    pub moe: Option<MoeConfig>,
    /// The RoPE scaling (for Gemma 3, of the global layers).
    #[serde(skip)]
    pub rope_scaling: RopeScaling,
    /// The family-specific fields.
    #[serde(skip)]
    pub family: FamilyConfig,
}

/// The attention kinds a `layer_types` entry may name.
pub const LAYER_TYPES: &[&str] = &["full_attention", "sliding_attention"];

/// A list of layer numbers (`mlp_only_layers`); empty when absent or not a list of numbers
/// (the config was checked when it was read).
pub(crate) fn get_usize_list(obj: &Map<String, Value>, key: &str) -> Vec<usize> {
    fields::list(obj, key, |v| v.as_u64().map(|x| x as usize))
        .ok()
        .flatten()
        .unwrap_or_default()
}

impl ArchConfig {
    /// Reads and parses a `config.json` file.
    pub fn from_file(path: &Path) -> Result<(Self, Value)> {
        let text =
            crate::base::limits::read_text_capped(path, crate::base::limits::MAX_JSON_BYTES)?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| Error::config(path, format!("not valid JSON: {e}")))?;
        let cfg = Self::from_value(&value).map_err(|msg| Error::config(path, msg))?;
        Ok((cfg, value))
    }

    /// Parses a `config.json` value. The error is a message without the file name.
    pub fn from_value(value: &Value) -> std::result::Result<Self, String> {
        let obj = super::rope::as_obj(value)?;
        let need = |key: &str| -> std::result::Result<usize, String> {
            fields::positive_uint(obj, key)?.ok_or_else(|| format!("missing `{key}`"))
        };
        let model_type = fields::string(obj, "model_type")?
            .ok_or("missing `model_type`")?
            .to_string();
        if model_type == "gemma3" && obj.contains_key("text_config") {
            return Err("`model_type` `gemma3` is the multimodal Gemma 3 (a vision tower and a `text_config`); depthprune reads the text model alone (`gemma3_text`, `Gemma3ForCausalLM`)".into());
        }
        let family = Family::of(&model_type);
        let row = super::registry::by_model_type(&model_type);
        let architectures = fields::list(obj, "architectures", |v| v.as_str().map(String::from))?
            .unwrap_or_default();
        let num_hidden_layers = fields::positive_uint(obj, "num_hidden_layers")
            .and_then(|n| match n {
                Some(n) if n as u64 > fields::MAX_LAYERS => Err(format!(
                    "`num_hidden_layers` ({n}) is larger than {}",
                    fields::MAX_LAYERS
                )),
                n => Ok(n),
            })?
            .ok_or("missing `num_hidden_layers`")?;
        let hidden_size = need("hidden_size")?;
        let num_attention_heads = need("num_attention_heads")?;
        let num_key_value_heads =
            fields::positive_uint(obj, "num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(format!(
                "`num_attention_heads` ({num_attention_heads}) is not a multiple of `num_key_value_heads` ({num_key_value_heads})"
            ));
        }
        let head_dim = match fields::positive_uint(obj, "head_dim")? {
            Some(d) => d,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(format!(
                        "no `head_dim`, and `hidden_size` ({hidden_size}) is not a multiple of `num_attention_heads` ({num_attention_heads})"
                    ));
                }
                hidden_size / num_attention_heads
            }
        };
        // Stated bias keys are checked whichever the row reads; a `model_type` without a row
        // is read as llama.
        for key in ["attention_bias", "qkv_bias"] {
            fields::boolean(obj, key)?;
        }
        let layout = row.or_else(|| super::registry::by_model_type("llama"));
        let bias = |b: Option<super::registry::Bias>| match b {
            Some(super::registry::Bias {
                key: Some(k),
                default,
            }) => Ok(fields::boolean(obj, k)?.unwrap_or(default)),
            Some(b) => Ok::<bool, String>(b.default),
            None => Ok(false),
        };
        let qkv_bias = bias(layout.map(|r| r.qkv_bias))?;
        let o_bias = bias(layout.map(|r| r.o_bias))?;
        let mut rope_theta =
            super::rope::rope_theta(obj)?.unwrap_or(row.map_or(10000.0, |r| r.rope_theta));
        let mut rope_scaling = super::rope::rope_scaling(obj)?;
        let (family_cfg, global_rope) =
            FamilyConfig::read(family, &model_type, num_hidden_layers, obj)?;
        if let Some((theta, scaling)) = global_rope {
            (rope_theta, rope_scaling) = (theta, scaling);
        }
        let layer_types = fields::list(obj, "layer_types", |v| {
            v.as_str()
                .filter(|s| LAYER_TYPES.contains(s))
                .map(String::from)
        })
        .map_err(|e| format!("{e} (known layer types: {})", LAYER_TYPES.join(", ")))?;
        if let Some(lt) = &layer_types {
            if lt.len() != num_hidden_layers {
                return Err(format!(
                    "`layer_types` has {} entries but `num_hidden_layers` is {num_hidden_layers}",
                    lt.len()
                ));
            }
        }
        let num_experts = match fields::uint(obj, "num_experts")? {
            Some(e) => Some(e),
            None => fields::uint(obj, "num_local_experts")?,
        };
        let intermediate_size = fields::uint(obj, "intermediate_size")?.unwrap_or(0);
        let top_k = fields::positive_uint(obj, "num_experts_per_tok")?;
        if let (Some(k), Some(e)) = (top_k, num_experts) {
            if k > e {
                return Err(format!(
                    "`num_experts_per_tok` ({k}) must be between 1 and the number of experts ({e})"
                ));
            }
        }
        let moe = match num_experts {
            Some(e) if e > 0 => Some(MoeConfig {
                num_experts: e,
                // transformers' defaults when the key is absent.
                num_experts_per_tok: top_k.unwrap_or(row.map_or(2, |r| r.top_k.max(1))),
                moe_intermediate_size: match fields::positive_uint(obj, "moe_intermediate_size")? {
                    Some(m) => m,
                    None if intermediate_size > 0 => intermediate_size,
                    None => return Err("missing `moe_intermediate_size`".into()),
                },
                shared_expert_intermediate_size: fields::uint(
                    obj,
                    "shared_expert_intermediate_size",
                )?
                .unwrap_or(0),
                mlp_only_layers: fields::layer_list(obj, "mlp_only_layers", num_hidden_layers)?
                    .unwrap_or_default(),
                decoder_sparse_step: fields::positive_uint(obj, "decoder_sparse_step")?
                    .unwrap_or(1),
            }),
            _ => None,
        };
        if moe.is_none() && intermediate_size == 0 {
            return Err(if obj.contains_key("intermediate_size") {
                "`intermediate_size` must be positive, found 0".into()
            } else {
                "missing `intermediate_size`".into()
            });
        }
        let rms_norm_eps =
            fields::positive(obj, "rms_norm_eps")?.unwrap_or(row.map_or(1e-6, |r| r.rms_norm_eps));
        let use_sliding_window = fields::boolean(obj, "use_sliding_window")?
            .unwrap_or(model_type == "mistral" || model_type == "mixtral");
        // transformers saves `sliding_window: 0` for qwen configs that do not use it; a window
        // of 0 on layers that do use one would attend to nothing.
        let windowed = use_sliding_window || family.is_gemma() || model_type == "phi3";
        let sliding_window = match fields::uint(obj, "sliding_window")? {
            Some(0) if windowed => return Err("`sliding_window` must be positive, found 0".into()),
            Some(0) => None,
            w => w,
        };
        let max_window_layers = fields::uint_max(obj, "max_window_layers", u64::MAX)?;
        let torch_dtype = match fields::string(obj, "torch_dtype")? {
            Some(d) => Some(d),
            None => fields::string(obj, "dtype")?,
        }
        .map(String::from);
        Ok(ArchConfig {
            architectures,
            num_hidden_layers,
            hidden_size,
            intermediate_size,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: need("vocab_size")?,
            tie_word_embeddings: fields::boolean(obj, "tie_word_embeddings")?.unwrap_or(false),
            rms_norm_eps,
            rope_theta,
            max_position_embeddings: fields::uint_max(obj, "max_position_embeddings", u64::MAX)?,
            qkv_bias,
            o_bias,
            mlp_bias: fields::boolean(obj, "mlp_bias")?.unwrap_or(false),
            qk_norm: row.is_some_and(|r| r.qk_norm),
            sliding_window,
            use_sliding_window,
            max_window_layers: if model_type.starts_with("qwen") {
                max_window_layers
            } else {
                None
            },
            layer_types,
            torch_dtype,
            moe,
            rope_scaling,
            family: family_cfg,
            model_type,
        })
    }

    /// Whether depthprune knows this family's layout and per-layer config fields.
    pub fn is_supported(&self) -> bool {
        super::registry::by_model_type(&self.model_type).is_some()
    }

    /// How healing folds its maps into this architecture's checkpoint: its registry row's
    /// [`HealFold`](super::registry::HealFold) (a `model_type` without a row is read as llama, so
    /// it folds into `down_proj`).
    pub fn heal_fold(&self) -> super::registry::HealFold {
        super::registry::by_model_type(&self.model_type)
            .map_or(super::registry::HealFold::DownProj, |r| r.heal_fold)
    }

    /// Whether layer `i` uses experts (for MoE families).
    pub fn layer_is_sparse(&self, i: usize) -> bool {
        match &self.moe {
            None => false,
            Some(m) => {
                if self.model_type == "mixtral" {
                    return true;
                }
                !m.mlp_only_layers.contains(&i) && (i + 1).is_multiple_of(m.decoder_sparse_step)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_rope_parameters_form() {
        let v = json!({"model_type":"llama","num_hidden_layers":2,"hidden_size":8,"num_attention_heads":2,
            "intermediate_size":16,"vocab_size":10,"rope_parameters":{"rope_theta":500000.0,"rope_type":"default"}});
        assert_eq!(ArchConfig::from_value(&v).unwrap().rope_theta, 500000.0);
    }

    #[test]
    fn names_missing_field() {
        let v = json!({"model_type":"llama","num_hidden_layers":2,"num_attention_heads":2});
        assert_eq!(
            ArchConfig::from_value(&v).unwrap_err(),
            "missing `hidden_size`"
        );
    }

    #[test]
    fn rejects_bad_head_counts() {
        let v = json!({"model_type":"llama","num_hidden_layers":2,"hidden_size":8,"num_attention_heads":3,
            "num_key_value_heads":2,"intermediate_size":16,"vocab_size":10});
        assert!(ArchConfig::from_value(&v).unwrap_err().contains("multiple"));
    }

    #[test]
    fn heal_fold_is_the_registry_row_s() {
        use super::super::registry::HealFold::{DownProj, PostNorm};
        for (model_type, fold) in [
            ("llama", DownProj),
            ("qwen2", DownProj),
            ("gemma2", PostNorm),
            ("gemma3_text", PostNorm),
            ("olmo2", PostNorm),
            ("an_unknown_type", DownProj),
        ] {
            let v = json!({"model_type":model_type,"num_hidden_layers":2,"hidden_size":8,
                "num_attention_heads":2,"intermediate_size":16,"vocab_size":10,"head_dim":4});
            let a = ArchConfig::from_value(&v).unwrap();
            assert_eq!(a.heal_fold(), fold, "{model_type}");
        }
    }

    #[test]
    fn attention_biases_follow_the_registry_row() {
        let t = true;
        let f = false;
        for (model_type, extra, want) in [
            ("llama", json!({}), (f, f)),
            ("llama", json!({"attention_bias": true}), (t, t)),
            ("an_unknown_type", json!({"attention_bias": true}), (t, t)),
            ("qwen2", json!({"attention_bias": false}), (t, f)),
            ("qwen2_moe", json!({}), (t, f)),
            ("qwen2_moe", json!({"qkv_bias": false}), (f, f)),
            ("mistral", json!({"attention_bias": true}), (f, f)),
            ("mixtral", json!({}), (f, f)),
            ("granite", json!({"attention_bias": true}), (t, t)),
        ] {
            let mut v = json!({"model_type":model_type,"num_hidden_layers":2,"hidden_size":8,
                "num_attention_heads":2,"intermediate_size":16,"vocab_size":10,"head_dim":4});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            let a = ArchConfig::from_value(&v).unwrap();
            assert_eq!((a.qkv_bias, a.o_bias), want, "{model_type} {extra}");
        }
    }
}
