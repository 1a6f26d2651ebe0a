//! Mixture-of-experts parameter accounting: the feed-forward parameters split into routed
//! experts, routers, shared experts and dense MLPs, and the parameters **active per token**: every
//! parameter except the routed experts a token does not use, so `k` of `n` experts in each sparse
//! layer plus the shared expert, routers, attention, norms, embeddings and LM head.
//!
//! Counts come from tensor names (HF `…experts.{e}.…`, `…gate.weight`, `…shared_expert…`; GGUF
//! `ffn_*_exps`, `ffn_gate_inp`, `ffn_*_shexp`) or from `config.json` alone.

use super::config::ArchConfig;
use super::naming::{component_of, Component};
use super::params::ParamCounts;
use serde::Serialize;

/// A model's feed-forward parameters by kind, and the parameters one token uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MoeParams {
    pub num_experts: usize,
    pub experts_per_token: usize,
    /// Sparse layers (those with routed experts).
    pub sparse_layers: usize,
    /// All routed experts of all layers.
    pub experts: u64,
    /// The routed experts one token uses: `k / n` of [`MoeParams::experts`].
    pub active_experts: u64,
    /// The routers (`gate`, `ffn_gate_inp`).
    pub routers: u64,
    /// Shared experts with their gates (Qwen2-MoE).
    pub shared_experts: u64,
    /// Dense MLPs of the layers without experts.
    pub dense_mlp: u64,
    /// Every parameter of the model.
    pub total: u64,
    /// The parameters one token uses.
    pub active: u64,
}

/// What kind of feed-forward parameter a per-layer tensor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Expert,
    Router,
    Shared,
    Dense,
}

/// Classifies a feed-forward tensor by its name after the layer number.
fn kind(rest: &str) -> Kind {
    if rest.contains("shared_expert") || rest.contains("_shexp") {
        Kind::Shared
    } else if rest.contains("experts.") || rest.contains("_exps") {
        Kind::Expert
    } else if rest.ends_with(".gate.weight") || rest.starts_with("ffn_gate_inp") {
        Kind::Router
    } else {
        Kind::Dense
    }
}

impl MoeParams {
    /// Counts from tensor names and element counts (HF or GGUF), for a config with experts;
    /// `counts` is the same tensors' [`ParamCounts`].
    pub fn from_tensors<'a>(
        arch: &ArchConfig,
        counts: &ParamCounts,
        tensors: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Option<Self> {
        let moe = arch.moe.as_ref()?;
        let mut out = MoeParams {
            num_experts: moe.num_experts,
            experts_per_token: moe.num_experts_per_tok,
            total: counts.total(),
            ..Default::default()
        };
        let mut sparse = std::collections::BTreeSet::new();
        for (name, numel) in tensors {
            let (Some(layer), Component::Mlp) = component_of(name) else {
                continue;
            };
            let rest = crate::arch::naming::hf_layer(name)
                .or_else(|| crate::arch::naming::gguf_layer(name))
                .map_or("", |l| l.rest);
            match kind(rest) {
                Kind::Expert => {
                    sparse.insert(layer);
                    out.experts += numel;
                }
                Kind::Router => out.routers += numel,
                Kind::Shared => out.shared_experts += numel,
                Kind::Dense => out.dense_mlp += numel,
            }
        }
        out.sparse_layers = sparse.len();
        out.finish();
        Some(out)
    }

    /// Counts from the config alone, for a config with experts.
    pub fn from_config(arch: &ArchConfig) -> Option<Self> {
        let moe = arch.moe.as_ref()?;
        let counts = ParamCounts::from_config(arch);
        let h = arch.hidden_size as u64;
        let (e, i, s) = (
            moe.num_experts as u64,
            moe.moe_intermediate_size as u64,
            moe.shared_expert_intermediate_size as u64,
        );
        let mut out = MoeParams {
            num_experts: moe.num_experts,
            experts_per_token: moe.num_experts_per_tok,
            total: counts.total(),
            ..Default::default()
        };
        for (l, p) in counts.layers.iter().enumerate() {
            if arch.layer_is_sparse(l) {
                out.sparse_layers += 1;
                out.experts += e * 3 * h * i;
                out.routers += e * h;
                if s > 0 {
                    out.shared_experts += 3 * h * s + h;
                }
            } else {
                out.dense_mlp += p.mlp;
            }
        }
        out.finish();
        Some(out)
    }

    fn finish(&mut self) {
        let n = self.num_experts.max(1) as u64;
        let k = self.experts_per_token.min(self.num_experts) as u64;
        // Every expert of a layer has the same size, so a token's k experts are k/n of them.
        self.active_experts = self.experts / n * k + self.experts % n * k / n;
        self.active = self.total - self.experts + self.active_experts;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn qwen2_moe() -> ArchConfig {
        let v = json!({"model_type":"qwen2_moe","num_hidden_layers":4,"hidden_size":8,"num_attention_heads":2,
            "intermediate_size":16,"moe_intermediate_size":4,"shared_expert_intermediate_size":6,
            "num_experts":4,"num_experts_per_tok":2,"decoder_sparse_step":2,"vocab_size":10});
        ArchConfig::from_value(&v).unwrap()
    }

    #[test]
    fn config_counts_active_experts_and_the_rest() {
        let a = qwen2_moe();
        let m = MoeParams::from_config(&a).unwrap();
        assert_eq!(m.sparse_layers, 2);
        assert_eq!(m.experts, 2 * 4 * 3 * 8 * 4);
        assert_eq!(m.active_experts, m.experts / 2);
        assert_eq!(m.routers, 2 * 4 * 8);
        assert_eq!(m.shared_experts, 2 * (3 * 8 * 6 + 8));
        assert_eq!(m.dense_mlp, 2 * 3 * 8 * 16);
        assert_eq!(m.total - m.active, m.experts / 2);
        assert!(MoeParams::from_config(
            &ArchConfig::from_value(&json!({"model_type":"llama",
            "num_hidden_layers":1,"hidden_size":8,"num_attention_heads":2,"intermediate_size":16,
            "vocab_size":10}))
            .unwrap()
        )
        .is_none());
    }

    #[test]
    fn tensor_names_are_classified_in_both_formats() {
        for (name, want) in [
            ("mlp.experts.3.down_proj.weight", Kind::Expert),
            ("block_sparse_moe.experts.0.w1.weight", Kind::Expert),
            ("ffn_gate_exps.weight", Kind::Expert),
            ("mlp.gate.weight", Kind::Router),
            ("block_sparse_moe.gate.weight", Kind::Router),
            ("ffn_gate_inp.weight", Kind::Router),
            ("mlp.shared_expert.up_proj.weight", Kind::Shared),
            ("mlp.shared_expert_gate.weight", Kind::Shared),
            ("ffn_gate_inp_shexp.weight", Kind::Shared),
            ("ffn_down_shexp.weight", Kind::Shared),
            ("mlp.gate_proj.weight", Kind::Dense),
            ("ffn_gate.weight", Kind::Dense),
        ] {
            assert_eq!(kind(name), want, "{name}");
        }
    }
}
