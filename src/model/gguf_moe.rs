//! MoE tensors in GGUF, as llama.cpp's converter writes them (issue 17). Each layer's routed
//! experts are stacked into one 3-D tensor per projection, `blk.{i}.ffn_{gate,up,down}_exps`
//! (HF shape `(experts, out, in)`, GGUF dims reversed), the router is `ffn_gate_inp`, and
//! qwen2moe's shared expert is `ffn_{gate,up,down}_shexp` with its gate `ffn_gate_inp_shexp`.
//! Mixtral is llama.cpp's `llama` architecture with experts; its HF names say
//! `block_sparse_moe.experts.{e}.w1/w3/w2` where qwen says `mlp.experts.{e}.gate/up/down_proj`.
//!
//! The HF side always sees one tensor per expert: [`gguf_to_hf_moe`] names the slices of a
//! stacked tensor, [`hf_to_gguf_moe`] says which stacked tensor (and which slice) an HF tensor
//! belongs to.

use super::gguf::{meta_u64, missing};
use crate::arch::naming::{gguf_layer, hf_layer};
use crate::checkpoint::gguf::{GgufModel, Value};
use crate::error::{Error, Result};
use serde_json::{json, Map};

/// HF ↔ GGUF names (after the layer prefix) of qwen's MoE tensors that map one to one.
const QWEN_ONE_TO_ONE: &[(&str, &str)] = &[
    ("mlp.gate.weight", "ffn_gate_inp.weight"),
    (
        "mlp.shared_expert.gate_proj.weight",
        "ffn_gate_shexp.weight",
    ),
    ("mlp.shared_expert.up_proj.weight", "ffn_up_shexp.weight"),
    (
        "mlp.shared_expert.down_proj.weight",
        "ffn_down_shexp.weight",
    ),
    ("mlp.shared_expert_gate.weight", "ffn_gate_inp_shexp.weight"),
];

/// Mixtral's router.
const MIXTRAL_ROUTER: (&str, &str) = ("block_sparse_moe.gate.weight", "ffn_gate_inp.weight");

/// The stacked expert tensors, in projection order gate, up, down.
const STACKED: [&str; 3] = [
    "ffn_gate_exps.weight",
    "ffn_up_exps.weight",
    "ffn_down_exps.weight",
];

/// The HF projection names (gate, up, down) of one expert.
fn projections(mixtral: bool) -> [&'static str; 3] {
    if mixtral {
        ["w1", "w3", "w2"]
    } else {
        ["gate_proj", "up_proj", "down_proj"]
    }
}

/// The GGUF name of an HF MoE tensor, with the expert it is a slice of when the GGUF tensor is
/// stacked; `None` for tensors that are not MoE tensors.
pub fn hf_to_gguf_moe(name: &str) -> Option<(String, Option<usize>)> {
    let l = hf_layer(name).filter(|l| l.prefix == "model.layers.")?;
    let blk = |g: &str| format!("blk.{}.{g}", l.layer);
    for (h, g) in QWEN_ONE_TO_ONE.iter().chain([&MIXTRAL_ROUTER]) {
        if l.rest == *h {
            return Some((blk(g), None));
        }
    }
    let (mixtral, tail) = match l.rest.strip_prefix("mlp.experts.") {
        Some(t) => (false, t),
        None => (true, l.rest.strip_prefix("block_sparse_moe.experts.")?),
    };
    let (num, proj) = tail.split_once('.')?;
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let expert: usize = num.parse().ok()?;
    let proj = proj.strip_suffix(".weight")?;
    let k = projections(mixtral).iter().position(|p| *p == proj)?;
    Some((blk(STACKED[k]), Some(expert)))
}

/// The HF names of a GGUF MoE tensor: one for a router or shared-expert tensor, one per expert
/// (`n_experts`, the stacked tensor's outermost dimension) for a stacked one; `None` for tensors
/// that are not MoE tensors.
pub fn gguf_to_hf_moe(name: &str, mixtral: bool, n_experts: usize) -> Option<Vec<String>> {
    let l = gguf_layer(name)?;
    let hf = |h: &str| format!("model.layers.{}.{h}", l.layer);
    if mixtral && l.rest == MIXTRAL_ROUTER.1 {
        return Some(vec![hf(MIXTRAL_ROUTER.0)]);
    }
    if !mixtral {
        if let Some((h, _)) = QWEN_ONE_TO_ONE.iter().find(|(_, g)| *g == l.rest) {
            return Some(vec![hf(h)]);
        }
    }
    let k = STACKED.iter().position(|g| *g == l.rest)?;
    let (block, proj) = if mixtral {
        ("block_sparse_moe", projections(true)[k])
    } else {
        ("mlp", projections(false)[k])
    };
    Some(
        (0..n_experts)
            .map(|e| hf(&format!("{block}.experts.{e}.{proj}.weight")))
            .collect(),
    )
}

/// Adds the MoE fields of `config.json` for a GGUF file of architecture `arch` with
/// `{arch}.expert_count` experts: Mixtral for `llama`, qwen2_moe / qwen3_moe otherwise. Layers
/// without a router (`ffn_gate_inp`) are dense, listed in `mlp_only_layers` with step 1. The top-k
/// renormalisation is `{arch}.expert_weights_norm` when present, else what llama.cpp does for
/// the architecture (renormalised for llama and qwen3moe, not for qwen2moe).
pub fn add_moe_config(
    model: &GgufModel,
    arch: &str,
    experts: u64,
    layers: usize,
    cfg: &mut Map<String, serde_json::Value>,
) -> Result<()> {
    let path = model.path();
    let k = |s: &str| format!("{arch}.{s}");
    let need =
        |key: String| -> Result<u64> { meta_u64(model, &key)?.ok_or_else(|| missing(path, &key)) };
    let used = need(k("expert_used_count"))?;
    if used == 0 || used > experts {
        return Err(Error::corrupt(
            path,
            format!(
                "`{}` is {used}, but there are {experts} experts",
                k("expert_used_count")
            ),
        ));
    }
    if arch == "llama" {
        cfg.insert("architectures".into(), json!(["MixtralForCausalLM"]));
        cfg.insert("model_type".into(), json!("mixtral"));
        cfg.insert("num_local_experts".into(), json!(experts));
        cfg.insert("num_experts_per_tok".into(), json!(used));
        let window = meta_u64(model, &k("attention.sliding_window"))?;
        cfg.insert("sliding_window".into(), json!(window));
        return Ok(());
    }
    let has = |name: String| model.tensors().iter().any(|t| t.name() == name);
    let dense: Vec<usize> = (0..layers)
        .filter(|i| !has(format!("blk.{i}.ffn_gate_inp.weight")))
        .collect();
    let norm = match model.metadata().get(&k("expert_weights_norm")) {
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(Error::corrupt(
                path,
                format!(
                    "metadata `{}` is {}, not a bool",
                    k("expert_weights_norm"),
                    v.type_name()
                ),
            ))
        }
        None => arch == "qwen3moe",
    };
    cfg.insert("num_experts".into(), json!(experts));
    cfg.insert("num_experts_per_tok".into(), json!(used));
    cfg.insert(
        "moe_intermediate_size".into(),
        json!(need(k("expert_feed_forward_length"))?),
    );
    let shared = meta_u64(model, &k("expert_shared_feed_forward_length"))?.unwrap_or(0);
    if shared > 0 {
        cfg.insert("shared_expert_intermediate_size".into(), json!(shared));
    }
    cfg.insert("norm_topk_prob".into(), json!(norm));
    cfg.insert("decoder_sparse_step".into(), json!(1));
    cfg.insert("mlp_only_layers".into(), json!(dense));
    if arch == "qwen2moe" {
        cfg.insert("qkv_bias".into(), json!(has("blk.0.attn_q.bias".into())));
    }
    Ok(())
}

/// Checks a GGUF file with experts against its own metadata, from the tensor infos alone (no
/// data is read, so a header fetched over HTTP is enough): every layer's router, experts and
/// shared expert present with the shapes `expert_count`, `expert_feed_forward_length`, … imply.
/// Names in errors are the file's (`blk.1.ffn_up_exps.weight, expert 2`). A file without experts
/// passes untouched.
pub fn check_gguf_moe(model: &GgufModel) -> Result<()> {
    let Ok(arch) = model.architecture() else {
        return Ok(());
    };
    // Other architectures (deepseek2, …) are pruned as they are, unchecked.
    if crate::arch::registry::by_gguf_arch(arch).is_none() {
        return Ok(());
    }
    if meta_u64(model, &format!("{arch}.expert_count"))?.unwrap_or(0) == 0
        && !model.tensors().iter().any(|t| t.name().contains("_exps"))
    {
        return Ok(());
    }
    let raw = super::gguf::gguf_config_json(model)?;
    let cfg =
        crate::arch::ArchConfig::from_value(&raw).map_err(|m| Error::config(model.path(), m))?;
    let mixtral = arch == "llama";
    let mut shapes: Vec<(String, Vec<u64>)> = Vec::new();
    for t in model.tensors() {
        let mut dims: Vec<u64> = t.dims().iter().rev().copied().collect();
        if let Some(hf) = crate::arch::naming::gguf_to_hf(t.name()) {
            shapes.push((hf, dims));
        } else if let Some(names) =
            gguf_to_hf_moe(t.name(), mixtral, dims.first().map_or(1, |&d| d as usize))
        {
            if t.dims().len() == 3 {
                dims.remove(0);
            }
            shapes.extend(names.into_iter().map(|n| (n, dims.clone())));
        }
    }
    let show = |hf: &str| match crate::arch::naming::hf_to_gguf(hf)
        .map(|g| (g, None))
        .or_else(|| hf_to_gguf_moe(hf))
    {
        Some((g, Some(e))) => format!("`{g}` (expert {e})"),
        Some((g, None)) => format!("`{g}`"),
        None => format!("`{hf}`"),
    };
    let it = shapes.iter().map(|(n, s)| (n.as_str(), s.clone()));
    crate::checkpoint::moe_check::check_moe_tensors_named(model.path(), &cfg, it, &show)
}

/// The MoE parameter accounting of a GGUF file ([`crate::arch::MoeParams`]), or `None` when it
/// has no experts or its metadata does not describe a model the forward pass reads.
pub fn gguf_moe_params(model: &GgufModel) -> Option<crate::arch::MoeParams> {
    let raw = super::gguf::gguf_config_json(model).ok()?;
    let arch = crate::arch::ArchConfig::from_value(&raw).ok()?;
    let counts = crate::arch::ParamCounts::from_tensors(model.tensor_elements());
    crate::arch::MoeParams::from_tensors(&arch, &counts, model.tensor_elements())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_for_both_layouts() {
        for (hf, gguf, expert, mixtral) in [
            (
                "model.layers.3.mlp.gate.weight",
                "blk.3.ffn_gate_inp.weight",
                None,
                false,
            ),
            (
                "model.layers.0.mlp.experts.5.down_proj.weight",
                "blk.0.ffn_down_exps.weight",
                Some(5),
                false,
            ),
            (
                "model.layers.1.mlp.shared_expert_gate.weight",
                "blk.1.ffn_gate_inp_shexp.weight",
                None,
                false,
            ),
            (
                "model.layers.2.block_sparse_moe.experts.1.w3.weight",
                "blk.2.ffn_up_exps.weight",
                Some(1),
                true,
            ),
            (
                "model.layers.2.block_sparse_moe.gate.weight",
                "blk.2.ffn_gate_inp.weight",
                None,
                true,
            ),
        ] {
            assert_eq!(hf_to_gguf_moe(hf), Some((gguf.to_string(), expert)));
            let back = gguf_to_hf_moe(gguf, mixtral, 8).unwrap();
            assert_eq!(back[expert.unwrap_or(0)], hf);
        }
        assert_eq!(hf_to_gguf_moe("model.layers.0.mlp.down_proj.weight"), None);
        assert_eq!(
            hf_to_gguf_moe("model.layers.0.mlp.experts.x.w1.weight"),
            None
        );
        assert_eq!(gguf_to_hf_moe("blk.0.ffn_down.weight", false, 4), None);
        assert_eq!(
            gguf_to_hf_moe("blk.0.ffn_gate_exps.weight", false, 3)
                .unwrap()
                .len(),
            3
        );
    }
}
