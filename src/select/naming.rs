//! Tensor naming: the one place that knows how layer numbers appear in tensor names, for HF
//! checkpoints (`model.layers.{i}.…`) and GGUF files (`blk.{i}.…`), and how to renumber them.

/// Prefixes under which HF decoders number their layers. `model.layers.` covers llama, mistral,
/// qwen2/3 and most others; the rest are common older layouts.
pub const HF_LAYER_PREFIXES: &[&str] = &[
    "model.layers.",
    "model.language_model.layers.",
    "language_model.model.layers.",
    "transformer.h.",
    "gpt_neox.layers.",
    "model.decoder.layers.",
];

use std::collections::BTreeMap;

/// The GGUF prefix of per-layer tensors.
pub const GGUF_LAYER_PREFIX: &str = "blk.";

/// A tensor name split around its layer number: `prefix{layer}.rest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerName<'a> {
    pub prefix: &'a str,
    pub layer: usize,
    /// What follows the layer number and its dot, e.g. `self_attn.q_proj.weight`.
    pub rest: &'a str,
}

impl LayerName<'_> {
    /// The same tensor under a new layer number.
    pub fn renumbered(&self, layer: usize) -> String {
        format!("{}{}.{}", self.prefix, layer, self.rest)
    }
}

fn split_with_prefix<'a>(name: &'a str, prefix: &'a str) -> Option<LayerName<'a>> {
    let tail = name.strip_prefix(prefix)?;
    let (num, rest) = tail.split_once('.')?;
    if num.is_empty()
        || !num.bytes().all(|b| b.is_ascii_digit())
        || (num.len() > 1 && num.starts_with('0'))
    {
        return None;
    }
    Some(LayerName {
        prefix: &name[..prefix.len()],
        layer: num.parse().ok()?,
        rest,
    })
}

/// Splits an HF tensor name, if it belongs to a numbered layer.
pub fn hf_layer(name: &str) -> Option<LayerName<'_>> {
    HF_LAYER_PREFIXES
        .iter()
        .find_map(|p| split_with_prefix(name, p))
}

/// Splits a GGUF tensor name, if it belongs to a block.
pub fn gguf_layer(name: &str) -> Option<LayerName<'_>> {
    split_with_prefix(name, GGUF_LAYER_PREFIX)
}

/// The first way in which the layers of one checkpoint do not share their tensor names, as a
/// message, given each layer's names after its number (`rest` of [`LayerName`]) and the name
/// prefix (`blk.` or `model.layers.`) to show. Layers of one model hold the same tensors; only the
/// feed-forward part (names starting with `ffn`) may differ between layers when some layer has
/// experts (names containing `experts`): dense layers among sparse ones (issue 13).
pub fn layers_mismatch(
    layers: &BTreeMap<usize, Vec<&str>>,
    prefix: &str,
    ffn: &str,
) -> Option<String> {
    let moe = layers
        .values()
        .flatten()
        .any(|r| r.contains("exps.") || r.contains("experts."));
    let compared = |r: &&&str| !(moe && r.starts_with(ffn));
    let (first_no, first) = layers.iter().next()?;
    for (i, names) in layers {
        if let Some(lack) = first.iter().filter(compared).find(|r| !names.contains(r)) {
            return Some(format!(
                "layer {i} has no `{prefix}{i}.{lack}` tensor, which layer {first_no} has; the layers do not match"
            ));
        }
        if let Some(extra) = names.iter().filter(compared).find(|r| !first.contains(r)) {
            return Some(format!(
                "layer {i} has `{prefix}{i}.{extra}`, which layer {first_no} lacks; the layers do not match"
            ));
        }
    }
    None
}

/// HF ↔ GGUF names of the tensors outside the layers, as llama.cpp's converter writes them.
pub const GGUF_GLOBAL_NAMES: &[(&str, &str)] = &[
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// HF ↔ GGUF names of per-layer tensors (after `model.layers.{i}.` / `blk.{i}.`), for llama,
/// mistral, qwen2 and qwen3.
pub const GGUF_LAYER_NAMES: &[(&str, &str)] = &[
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("self_attn.q_proj.bias", "attn_q.bias"),
    ("self_attn.k_proj.bias", "attn_k.bias"),
    ("self_attn.v_proj.bias", "attn_v.bias"),
    ("self_attn.o_proj.bias", "attn_output.bias"),
    ("self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("self_attn.k_norm.weight", "attn_k_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
    ("input_layernorm.weight", "attn_norm.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
];

/// The GGUF name of an HF tensor, if the table knows it.
pub fn hf_to_gguf(name: &str) -> Option<String> {
    if let Some(&(_, g)) = GGUF_GLOBAL_NAMES.iter().find(|(h, _)| *h == name) {
        return Some(g.to_string());
    }
    let l = split_with_prefix(name, "model.layers.")?;
    let &(_, g) = GGUF_LAYER_NAMES.iter().find(|(h, _)| *h == l.rest)?;
    Some(format!("{GGUF_LAYER_PREFIX}{}.{g}", l.layer))
}

/// The HF name of a GGUF tensor, if the table knows it.
pub fn gguf_to_hf(name: &str) -> Option<String> {
    if let Some(&(h, _)) = GGUF_GLOBAL_NAMES.iter().find(|(_, g)| *g == name) {
        return Some(h.to_string());
    }
    let l = gguf_layer(name)?;
    let &(h, _) = GGUF_LAYER_NAMES.iter().find(|(_, g)| *g == l.rest)?;
    Some(format!("model.layers.{}.{h}", l.layer))
}

/// What part of the model a tensor belongs to, for parameter accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Embeddings,
    Attention,
    Mlp,
    Norms,
    /// Per-layer tensors that fit none of the above.
    LayerOther,
    FinalNorm,
    LmHead,
    /// Non-layer tensors that fit none of the above.
    Other,
}

impl Component {
    pub fn label(self) -> &'static str {
        match self {
            Component::Embeddings => "embeddings",
            Component::Attention => "attention",
            Component::Mlp => "mlp",
            Component::Norms => "norms",
            Component::LayerOther => "layer (other)",
            Component::FinalNorm => "final norm",
            Component::LmHead => "lm_head",
            Component::Other => "other",
        }
    }
}

/// Classifies a per-layer tensor by the part of its name after the layer number. Works for HF
/// (`self_attn.q_proj.weight`) and GGUF (`attn_q.weight`) names.
pub fn layer_component(rest: &str) -> Component {
    let first = rest.split('.').next().unwrap_or("");
    if rest.contains("norm") || first.ends_with("_ln") || first.starts_with("ln_") {
        Component::Norms
    } else if first.contains("attn") || first.contains("attention") {
        Component::Attention
    } else if first.contains("mlp")
        || first.starts_with("ffn")
        || first.contains("moe")
        || first == "feed_forward"
    {
        Component::Mlp
    } else {
        Component::LayerOther
    }
}

/// Classifies a tensor that is not in a numbered layer.
pub fn global_component(name: &str) -> Component {
    let n = name.strip_prefix("model.").unwrap_or(name);
    if n.starts_with("embed_tokens")
        || n.starts_with("token_embd")
        || n.starts_with("wte")
        || n.starts_with("transformer.wte")
        || n.contains("embed_in")
    {
        Component::Embeddings
    } else if n.starts_with("lm_head") || n.starts_with("output.") || n.contains("embed_out") {
        Component::LmHead
    } else if n.starts_with("norm.")
        || n.starts_with("output_norm")
        || n.contains("final_layer_norm")
        || n.contains("ln_f")
    {
        Component::FinalNorm
    } else {
        Component::Other
    }
}

/// Classifies any tensor name, HF or GGUF.
pub fn component_of(name: &str) -> (Option<usize>, Component) {
    match hf_layer(name).or_else(|| gguf_layer(name)) {
        Some(l) => (Some(l.layer), layer_component(l.rest)),
        None => (None, global_component(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_must_share_their_tensor_names() {
        let dense: BTreeMap<usize, Vec<&str>> = [
            (0, vec!["attn_q.weight", "ffn_down.weight"]),
            (1, vec!["attn_q.weight", "ffn_down.weight"]),
        ]
        .into();
        assert_eq!(layers_mismatch(&dense, "blk.", "ffn"), None);
        let mut lacking = dense.clone();
        lacking.insert(2, vec!["ffn_down.weight"]);
        assert_eq!(
            layers_mismatch(&lacking, "blk.", "ffn").unwrap(),
            "layer 2 has no `blk.2.attn_q.weight` tensor, which layer 0 has; the layers do not match"
        );
        let mut extra = dense.clone();
        extra.insert(1, vec!["attn_q.weight", "ffn_down.weight", "attn_x.weight"]);
        assert!(layers_mismatch(&extra, "blk.", "ffn")
            .unwrap()
            .contains("`blk.1.attn_x.weight`"));
        // A dense layer among expert layers differs only in its feed-forward part.
        let moe: BTreeMap<usize, Vec<&str>> = [
            (0, vec!["attn_q.weight", "ffn_down.weight"]),
            (
                1,
                vec![
                    "attn_q.weight",
                    "ffn_down_exps.weight",
                    "ffn_gate_inp.weight",
                ],
            ),
        ]
        .into();
        assert_eq!(layers_mismatch(&moe, "blk.", "ffn"), None);
    }

    #[test]
    fn splits_and_renumbers() {
        let l = hf_layer("model.layers.12.self_attn.q_proj.weight").unwrap();
        assert_eq!((l.layer, l.rest), (12, "self_attn.q_proj.weight"));
        assert_eq!(l.renumbered(3), "model.layers.3.self_attn.q_proj.weight");
        let g = gguf_layer("blk.7.ffn_down.weight").unwrap();
        assert_eq!(g.renumbered(0), "blk.0.ffn_down.weight");
        assert!(hf_layer("model.layers.x.foo").is_none());
        assert!(hf_layer("model.layers.01.foo").is_none());
        assert!(hf_layer("model.embed_tokens.weight").is_none());
    }

    #[test]
    fn maps_hf_and_gguf_names_both_ways() {
        for (hf, gguf) in [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("lm_head.weight", "output.weight"),
            (
                "model.layers.7.self_attn.o_proj.weight",
                "blk.7.attn_output.weight",
            ),
            (
                "model.layers.0.post_attention_layernorm.weight",
                "blk.0.ffn_norm.weight",
            ),
            (
                "model.layers.12.self_attn.k_norm.weight",
                "blk.12.attn_k_norm.weight",
            ),
        ] {
            assert_eq!(hf_to_gguf(hf).as_deref(), Some(gguf));
            assert_eq!(gguf_to_hf(gguf).as_deref(), Some(hf));
        }
        assert_eq!(hf_to_gguf("model.layers.0.mlp.experts.0.w1.weight"), None);
        assert_eq!(gguf_to_hf("rope_freqs.weight"), None);
        assert_eq!(gguf_to_hf("blk.01.attn_q.weight"), None);
    }

    #[test]
    fn classifies_components() {
        let c = |n| component_of(n).1;
        assert_eq!(
            c("model.layers.0.self_attn.k_proj.bias"),
            Component::Attention
        );
        assert_eq!(
            c("model.layers.0.self_attn.q_norm.weight"),
            Component::Norms
        );
        assert_eq!(
            c("model.layers.0.mlp.experts.3.down_proj.weight"),
            Component::Mlp
        );
        assert_eq!(
            c("model.layers.0.block_sparse_moe.gate.weight"),
            Component::Mlp
        );
        assert_eq!(c("model.layers.0.input_layernorm.weight"), Component::Norms);
        assert_eq!(c("blk.0.attn_q.weight"), Component::Attention);
        assert_eq!(c("blk.0.attn_norm.weight"), Component::Norms);
        assert_eq!(c("blk.0.ffn_gate_exps.weight"), Component::Mlp);
        assert_eq!(c("model.embed_tokens.weight"), Component::Embeddings);
        assert_eq!(c("token_embd.weight"), Component::Embeddings);
        assert_eq!(c("lm_head.weight"), Component::LmHead);
        assert_eq!(c("output.weight"), Component::LmHead);
        assert_eq!(c("model.norm.weight"), Component::FinalNorm);
        assert_eq!(c("output_norm.weight"), Component::FinalNorm);
    }
}
