//! Parameter accounting by component: embeddings, each layer's attention / MLP / norms, the final
//! norm and the LM head. Counts come either from tensor shapes (exact, for a real checkpoint) or
//! from `config.json` alone (for planning without weights).

use super::config::ArchConfig;
use super::naming::{component_of, Component};
use crate::select::Removal;
use serde::Serialize;

/// One layer's parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LayerParams {
    pub attention: u64,
    pub mlp: u64,
    pub norms: u64,
    pub other: u64,
}

impl LayerParams {
    pub fn total(&self) -> u64 {
        self.attention + self.mlp + self.norms + self.other
    }
}

/// A whole model's parameters by component.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ParamCounts {
    pub embeddings: u64,
    pub layers: Vec<LayerParams>,
    pub final_norm: u64,
    pub lm_head: u64,
    pub other: u64,
}

impl ParamCounts {
    pub fn layers_total(&self) -> u64 {
        self.layers.iter().map(LayerParams::total).sum()
    }

    pub fn total(&self) -> u64 {
        self.embeddings + self.layers_total() + self.final_norm + self.lm_head + self.other
    }

    /// Counts from tensor names and element counts (HF or GGUF names).
    pub fn from_tensors<'a>(tensors: impl IntoIterator<Item = (&'a str, u64)>) -> Self {
        let mut out = ParamCounts::default();
        let tensors: Vec<(&str, u64)> = tensors.into_iter().collect();
        // Every layer of a real model holds a tensor, so no layer number reaches the tensor
        // count; a hostile name (`blk.4000000000.x`) must not size the per-layer table. Such
        // tensors are counted under `other`, and the readers' layer checks reject the file.
        let max_layers = tensors.len();
        for (name, numel) in tensors {
            let (layer, comp) = component_of(name);
            if let Some(i) = layer.filter(|&i| i < max_layers) {
                if out.layers.len() <= i {
                    out.layers.resize(i + 1, LayerParams::default());
                }
                let l = &mut out.layers[i];
                match comp {
                    Component::Attention => l.attention += numel,
                    Component::Mlp => l.mlp += numel,
                    Component::Norms => l.norms += numel,
                    _ => l.other += numel,
                }
            } else {
                match comp {
                    Component::Embeddings => out.embeddings += numel,
                    Component::FinalNorm => out.final_norm += numel,
                    Component::LmHead => out.lm_head += numel,
                    _ => out.other += numel,
                }
            }
        }
        out
    }

    /// Counts derived from the config alone, for the families in [`super::registry::ARCHES`]
    /// (and any llama-like model).
    pub fn from_config(cfg: &ArchConfig) -> Self {
        let h = cfg.hidden_size as u64;
        let q = (cfg.num_attention_heads * cfg.head_dim) as u64;
        let kv = (cfg.num_key_value_heads * cfg.head_dim) as u64;
        let mut attention = h * q + 2 * h * kv + q * h;
        if cfg.qkv_bias {
            attention += q + 2 * kv;
        }
        if cfg.o_bias {
            attention += h;
        }
        let norms = super::families::layer_norm_params(cfg);
        let dense_mlp = |inter: u64| {
            let mut p = 3 * h * inter;
            if cfg.mlp_bias {
                p += 2 * inter + h;
            }
            p
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let mlp = match &cfg.moe {
                    Some(m) if cfg.layer_is_sparse(i) => {
                        let e = m.num_experts as u64;
                        let mut p = h * e + e * 3 * h * m.moe_intermediate_size as u64;
                        if m.shared_expert_intermediate_size > 0 {
                            p += 3 * h * m.shared_expert_intermediate_size as u64 + h;
                        }
                        p
                    }
                    _ => dense_mlp(cfg.intermediate_size as u64),
                };
                LayerParams {
                    attention,
                    mlp,
                    norms,
                    other: 0,
                }
            })
            .collect();
        let emb = cfg.vocab_size as u64 * h;
        ParamCounts {
            embeddings: emb,
            layers,
            final_norm: h,
            lm_head: if cfg.tie_word_embeddings { 0 } else { emb },
            other: 0,
        }
    }

    /// The counts after removing layers.
    pub fn after(&self, removal: &Removal) -> Self {
        let layers = self
            .layers
            .iter()
            .enumerate()
            .filter(|(i, _)| !removal.is_removed(*i))
            .map(|(_, l)| *l)
            .collect();
        ParamCounts {
            layers,
            ..self.clone()
        }
    }
}

/// Percent reduction from `before` to `after`.
pub fn reduction_pct(before: u64, after: u64) -> f64 {
    if before == 0 {
        0.0
    } else {
        100.0 * (before as f64 - after as f64) / before as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::LayerSpec;
    use serde_json::json;

    #[test]
    fn a_hostile_layer_number_does_not_size_the_table() {
        let c = ParamCounts::from_tensors([
            ("blk.0.attn_q.weight", 4),
            ("blk.4000000000.attn_q.weight", 8),
        ]);
        assert_eq!(c.layers.len(), 1);
        assert_eq!(c.other, 8);
        assert_eq!(c.total(), 12);
    }

    /// The seed card's model: a Qwen3-4B with a 146,260-token vocabulary and tied embeddings.
    /// These figures are the card's; the config is worked out from them.
    #[test]
    fn qwen3_4b_seed_card_totals() {
        let v = json!({"model_type":"qwen3","num_hidden_layers":36,"hidden_size":2560,"intermediate_size":9728,
            "num_attention_heads":32,"num_key_value_heads":8,"head_dim":128,"vocab_size":146260,
            "tie_word_embeddings":true});
        let cfg = ArchConfig::from_value(&v).unwrap();
        let before = ParamCounts::from_config(&cfg);
        assert_eq!(before.total(), 4_007_937_536);
        let removal = Removal::drop(&LayerSpec::parse("3..29").unwrap(), 36).unwrap();
        let after = before.after(&removal);
        assert_eq!(after.total(), 1_383_736_320);
        assert_eq!(
            format!("{:.2}", reduction_pct(before.total(), after.total())),
            "65.48"
        );
    }
}
