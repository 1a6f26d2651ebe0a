//! The architecture described by an HF `config.json`: the fields depthprune needs, read with clear
//! errors, and the families whose per-layer settings it knows.

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// Architectures whose layout and per-layer config fields are checked.
pub const SUPPORTED: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "qwen2_moe",
    "qwen3_moe",
    "mixtral",
    "gemma2",
    "gemma3_text",
    "phi3",
    "olmo2",
];

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
}

fn get_usize(obj: &Map<String, Value>, key: &str) -> Option<usize> {
    obj.get(key).and_then(Value::as_u64).map(|v| v as usize)
}

/// A list of non-negative integers (`mlp_only_layers`); empty when absent, skipping other values.
pub(crate) fn get_usize_list(obj: &Map<String, Value>, key: &str) -> Vec<usize> {
    obj.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64().map(|x| x as usize))
                .collect()
        })
        .unwrap_or_default()
}

fn get_bool(obj: &Map<String, Value>, key: &str) -> Option<bool> {
    obj.get(key).and_then(Value::as_bool)
}

impl ArchConfig {
    /// Reads and parses a `config.json` file.
    pub fn from_file(path: &Path) -> Result<(Self, Value)> {
        let text = crate::checkpoint::limits::read_text_capped(
            path,
            crate::checkpoint::limits::MAX_JSON_BYTES,
        )?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| Error::config(path, format!("not valid JSON: {e}")))?;
        let cfg = Self::from_value(&value).map_err(|msg| Error::config(path, msg))?;
        Ok((cfg, value))
    }

    /// Parses a `config.json` value. The error is a message without the file name.
    pub fn from_value(value: &Value) -> std::result::Result<Self, String> {
        let obj = value
            .as_object()
            .ok_or_else(|| "the top level is not a JSON object".to_string())?;
        let need = |key: &str| -> std::result::Result<usize, String> {
            match obj.get(key) {
                None => Err(format!("missing `{key}`")),
                Some(v) => v
                    .as_u64()
                    .map(|v| v as usize)
                    .ok_or_else(|| format!("`{key}` must be a non-negative integer, found {v}")),
            }
        };
        let model_type = obj
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or("missing `model_type`")?
            .to_string();
        if model_type == "gemma3" && obj.contains_key("text_config") {
            return Err("`model_type` `gemma3` is the multimodal Gemma 3 (a vision tower and a `text_config`); depthprune reads the text model alone (`gemma3_text`, `Gemma3ForCausalLM`)".into());
        }
        let architectures = obj
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let num_hidden_layers = need("num_hidden_layers")?;
        let hidden_size = need("hidden_size")?;
        let num_attention_heads = need("num_attention_heads")?;
        if num_hidden_layers == 0 || hidden_size == 0 || num_attention_heads == 0 {
            return Err(
                "`num_hidden_layers`, `hidden_size` and `num_attention_heads` must be positive"
                    .into(),
            );
        }
        let num_key_value_heads =
            get_usize(obj, "num_key_value_heads").unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(format!(
                "`num_attention_heads` ({num_attention_heads}) is not a multiple of `num_key_value_heads` ({num_key_value_heads})"
            ));
        }
        let head_dim = match obj.get("head_dim") {
            Some(Value::Null) | None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(format!(
                        "no `head_dim`, and `hidden_size` ({hidden_size}) is not a multiple of `num_attention_heads` ({num_attention_heads})"
                    ));
                }
                hidden_size / num_attention_heads
            }
            Some(_) => need("head_dim")?,
        };
        let is_qwen = model_type.starts_with("qwen");
        let attention_bias = get_bool(obj, "attention_bias").unwrap_or(false);
        let (qkv_bias, o_bias) = match model_type.as_str() {
            "qwen2" => (true, false),
            // transformers 5 writes `qkv_bias` for qwen2_moe (true by default).
            "qwen2_moe" => (get_bool(obj, "qkv_bias").unwrap_or(true), false),
            "qwen3" | "qwen3_moe" => (attention_bias, attention_bias),
            "mistral" | "mixtral" => (false, false),
            _ => (attention_bias, attention_bias),
        };
        let rope_theta = obj
            .get("rope_theta")
            .and_then(Value::as_f64)
            .or_else(|| {
                obj.get("rope_parameters")
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(Value::as_f64)
            })
            .unwrap_or(10000.0);
        let layer_types = obj.get("layer_types").and_then(Value::as_array).map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        });
        if let Some(lt) = &layer_types {
            if lt.len() != num_hidden_layers {
                return Err(format!(
                    "`layer_types` has {} entries but `num_hidden_layers` is {num_hidden_layers}",
                    lt.len()
                ));
            }
        }
        let num_experts =
            get_usize(obj, "num_experts").or_else(|| get_usize(obj, "num_local_experts"));
        let intermediate_size = get_usize(obj, "intermediate_size").unwrap_or(0);
        let moe = match num_experts {
            Some(e) if e > 0 => Some(MoeConfig {
                num_experts: e,
                // transformers' defaults when the key is absent.
                num_experts_per_tok: get_usize(obj, "num_experts_per_tok").unwrap_or(
                    match model_type.as_str() {
                        "qwen2_moe" => 4,
                        "qwen3_moe" => 8,
                        _ => 2,
                    },
                ),
                moe_intermediate_size: get_usize(obj, "moe_intermediate_size")
                    .unwrap_or(intermediate_size),
                shared_expert_intermediate_size: get_usize(obj, "shared_expert_intermediate_size")
                    .unwrap_or(0),
                mlp_only_layers: get_usize_list(obj, "mlp_only_layers"),
                decoder_sparse_step: get_usize(obj, "decoder_sparse_step").unwrap_or(1).max(1),
            }),
            _ => None,
        };
        if moe.is_none() && intermediate_size == 0 {
            return Err("missing `intermediate_size`".into());
        }
        Ok(ArchConfig {
            model_type: model_type.clone(),
            architectures,
            num_hidden_layers,
            hidden_size,
            intermediate_size,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: need("vocab_size")?,
            tie_word_embeddings: get_bool(obj, "tie_word_embeddings").unwrap_or(false),
            rms_norm_eps: obj
                .get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6),
            rope_theta,
            max_position_embeddings: get_usize(obj, "max_position_embeddings"),
            qkv_bias,
            o_bias,
            mlp_bias: get_bool(obj, "mlp_bias").unwrap_or(false),
            qk_norm: matches!(model_type.as_str(), "qwen3" | "qwen3_moe" | "gemma3_text"),
            sliding_window: get_usize(obj, "sliding_window"),
            use_sliding_window: get_bool(obj, "use_sliding_window")
                .unwrap_or(model_type == "mistral" || model_type == "mixtral"),
            max_window_layers: if is_qwen {
                get_usize(obj, "max_window_layers")
            } else {
                None
            },
            layer_types,
            torch_dtype: obj
                .get("torch_dtype")
                .or_else(|| obj.get("dtype"))
                .and_then(Value::as_str)
                .map(String::from),
            moe,
        })
    }

    /// Whether depthprune knows this family's layout and per-layer config fields.
    pub fn is_supported(&self) -> bool {
        SUPPORTED.contains(&self.model_type.as_str())
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
}
