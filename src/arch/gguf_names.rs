//! GGUF tensor names of the dense families of issue 17 (Gemma 2, Gemma 3, Phi-3, OLMo 2), as
//! llama.cpp's converter writes them, and the per-architecture lookup that falls back to the
//! llama table of [`super::naming`] for the others.
//!
//! Facts taken from llama.cpp (`gguf-py/gguf/constants.py`, `tensor_mapping.py`,
//! `convert_hf_to_gguf.py`):
//! - HF `post_attention_layernorm` is `post_attention_norm` for Gemma and OLMo 2 (a norm on the
//!   attention output), but `ffn_norm` for llama and Phi-3 (the norm before the MLP); Gemma's
//!   `pre_feedforward_layernorm` is `ffn_norm` and `post_feedforward_layernorm` is `post_ffw_norm`.
//! - Phi-3 keeps its fused matrices: `qkv_proj` is `attn_qkv` and `gate_up_proj` is `ffn_up`.
//! - Gemma's converter stores every `*norm.weight` plus one (the `1 + w` scale applied), so
//!   [`norm_shift`] is what a reader subtracts and a writer adds.
//! - Phi-3's LongRoPE factors are the global tensors `rope_factors_long.weight` and
//!   `rope_factors_short.weight` ([`ROPE_FACTORS`]); they belong in `config.json`, not among HF
//!   tensors.

use super::naming::{gguf_layer, gguf_to_hf, hf_to_gguf, GGUF_GLOBAL_NAMES, GGUF_LAYER_PREFIX};

/// Phi-3's LongRoPE factor tensors: `(long, short)`.
pub const ROPE_FACTORS: (&str, &str) = ("rope_factors_long.weight", "rope_factors_short.weight");

/// The attention and MLP projections, named alike in every family but Phi-3.
const PROJECTIONS: &[(&str, &str)] = &[
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
];

/// Gemma's four norms around attention and the MLP.
const GEMMA_NORMS: &[(&str, &str)] = &[
    ("input_layernorm.weight", "attn_norm.weight"),
    (
        "post_attention_layernorm.weight",
        "post_attention_norm.weight",
    ),
    ("pre_feedforward_layernorm.weight", "ffn_norm.weight"),
    ("post_feedforward_layernorm.weight", "post_ffw_norm.weight"),
];

const QK_NORMS: &[(&str, &str)] = &[
    ("self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("self_attn.k_norm.weight", "attn_k_norm.weight"),
];

/// OLMo 2's norms after attention and after the MLP.
const OLMO2_NORMS: &[(&str, &str)] = &[
    (
        "post_attention_layernorm.weight",
        "post_attention_norm.weight",
    ),
    ("post_feedforward_layernorm.weight", "post_ffw_norm.weight"),
];

const PHI3: &[(&str, &str)] = &[
    ("self_attn.qkv_proj.weight", "attn_qkv.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("mlp.gate_up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
    ("input_layernorm.weight", "attn_norm.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
];

/// The per-layer name tables of a GGUF architecture of issue 17 (`None` for the llama table):
/// together, every tensor one of its layers holds.
pub(crate) fn tables(arch: &str) -> Option<&'static [&'static [(&'static str, &'static str)]]> {
    match arch {
        "gemma2" => Some(&[PROJECTIONS, GEMMA_NORMS]),
        "gemma3" => Some(&[PROJECTIONS, GEMMA_NORMS, QK_NORMS]),
        "olmo2" => Some(&[PROJECTIONS, QK_NORMS, OLMO2_NORMS]),
        "phi3" => Some(&[PHI3]),
        _ => None,
    }
}

/// What a reader subtracts from (and a writer adds to) tensor `hf_name` of GGUF architecture
/// `arch`: 1 for Gemma's norm weights, else 0.
pub fn norm_shift(arch: &str, hf_name: &str) -> f32 {
    if matches!(arch, "gemma2" | "gemma3") && hf_name.ends_with("norm.weight") {
        1.0
    } else {
        0.0
    }
}

/// The GGUF name of HF tensor `name` in a file of architecture `arch`.
pub fn hf_to_gguf_for(arch: &str, name: &str) -> Option<String> {
    let Some(tables) = tables(arch) else {
        return hf_to_gguf(name);
    };
    if let Some(&(_, g)) = GGUF_GLOBAL_NAMES.iter().find(|(h, _)| *h == name) {
        return Some(g.to_string());
    }
    let l = super::naming::hf_layer(name).filter(|l| l.prefix == "model.layers.")?;
    let &(_, g) = tables
        .iter()
        .flat_map(|t| t.iter())
        .find(|(h, _)| *h == l.rest)?;
    Some(format!("{GGUF_LAYER_PREFIX}{}.{g}", l.layer))
}

/// The HF name of GGUF tensor `name` in a file of architecture `arch`.
pub fn gguf_to_hf_for(arch: &str, name: &str) -> Option<String> {
    let Some(tables) = tables(arch) else {
        return gguf_to_hf(name);
    };
    if let Some(&(h, _)) = GGUF_GLOBAL_NAMES.iter().find(|(_, g)| *g == name) {
        return Some(h.to_string());
    }
    let l = gguf_layer(name)?;
    let &(h, _) = tables
        .iter()
        .flat_map(|t| t.iter())
        .find(|(_, g)| *g == l.rest)?;
    Some(format!("model.layers.{}.{h}", l.layer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_hf_norm_has_different_gguf_names_by_family() {
        let n = "model.layers.3.post_attention_layernorm.weight";
        assert_eq!(hf_to_gguf_for("llama", n).unwrap(), "blk.3.ffn_norm.weight");
        assert_eq!(hf_to_gguf_for("phi3", n).unwrap(), "blk.3.ffn_norm.weight");
        assert_eq!(
            hf_to_gguf_for("gemma2", n).unwrap(),
            "blk.3.post_attention_norm.weight"
        );
        assert_eq!(
            hf_to_gguf_for("olmo2", n).unwrap(),
            "blk.3.post_attention_norm.weight"
        );
        assert_eq!(
            gguf_to_hf_for("gemma3", "blk.0.ffn_norm.weight").unwrap(),
            "model.layers.0.pre_feedforward_layernorm.weight"
        );
    }

    #[test]
    fn every_family_name_maps_both_ways() {
        for (arch, rests) in [
            ("gemma2", vec![PROJECTIONS, GEMMA_NORMS]),
            ("gemma3", vec![PROJECTIONS, GEMMA_NORMS, QK_NORMS]),
            ("olmo2", vec![PROJECTIONS, QK_NORMS, OLMO2_NORMS]),
            ("phi3", vec![PHI3]),
        ] {
            for &(h, g) in rests.iter().flat_map(|t| t.iter()) {
                let hf = format!("model.layers.7.{h}");
                let gg = format!("blk.7.{g}");
                assert_eq!(hf_to_gguf_for(arch, &hf).as_deref(), Some(gg.as_str()));
                assert_eq!(gguf_to_hf_for(arch, &gg).as_deref(), Some(hf.as_str()));
            }
            assert_eq!(
                gguf_to_hf_for(arch, "output_norm.weight").as_deref(),
                Some("model.norm.weight")
            );
        }
        assert_eq!(
            hf_to_gguf_for("phi3", "model.layers.0.mlp.gate_proj.weight"),
            None
        );
        assert_eq!(
            norm_shift("gemma3", "model.layers.0.self_attn.q_norm.weight"),
            1.0
        );
        assert_eq!(norm_shift("olmo2", "model.norm.weight"), 0.0);
    }
}
