//! The expert tensors of a MoE checkpoint checked against its `config.json` (issue 17): each
//! sparse layer holds exactly the configured number of experts, a router of shape
//! `(experts, hidden)`, every expert's three projections of the configured size and, when
//! configured, the shared expert and its gate; each dense layer holds a plain MLP. Tensors use HF
//! names (GGUF files are checked under the HF names they are served as).

use crate::arch::ArchConfig;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// Where a family keeps its sparse block under `model.layers.{i}.`, and the expert projections
/// (gate, up, down).
pub fn moe_layout(model_type: &str) -> (&'static str, [&'static str; 3]) {
    if model_type == "mixtral" {
        ("block_sparse_moe", ["w1", "w3", "w2"])
    } else {
        ("mlp", ["gate_proj", "up_proj", "down_proj"])
    }
}

/// The config key that holds the number of experts.
fn experts_key(model_type: &str) -> &'static str {
    if model_type == "mixtral" {
        "num_local_experts"
    } else {
        "num_experts"
    }
}

/// The feed-forward tensors layer `i` must hold, with their HF shapes.
pub fn expected_ffn(arch: &ArchConfig, i: usize) -> Vec<(String, Vec<u64>)> {
    let h = arch.hidden_size as u64;
    let swiglu = |p: &str, [g, u, d]: [&str; 3], inter: u64| {
        vec![
            (format!("{p}.{g}.weight"), vec![inter, h]),
            (format!("{p}.{u}.weight"), vec![inter, h]),
            (format!("{p}.{d}.weight"), vec![h, inter]),
        ]
    };
    let qwen = ["gate_proj", "up_proj", "down_proj"];
    let Some(moe) = arch.moe.as_ref().filter(|_| arch.layer_is_sparse(i)) else {
        let p = format!("model.layers.{i}.mlp");
        return swiglu(&p, qwen, arch.intermediate_size as u64);
    };
    let (block, names) = moe_layout(&arch.model_type);
    let p = format!("model.layers.{i}.{block}");
    let e = moe.num_experts as u64;
    let mut out = vec![(format!("{p}.gate.weight"), vec![e, h])];
    for x in 0..moe.num_experts {
        let inter = moe.moe_intermediate_size as u64;
        out.extend(swiglu(&format!("{p}.experts.{x}"), names, inter));
    }
    if moe.shared_expert_intermediate_size > 0 {
        let inter = moe.shared_expert_intermediate_size as u64;
        out.extend(swiglu(&format!("{p}.shared_expert"), qwen, inter));
        out.push((format!("{p}.shared_expert_gate.weight"), vec![1, h]));
    }
    out
}

/// The expert numbers layer `i`'s tensor names use.
fn expert_numbers<'a>(names: impl Iterator<Item = &'a str>, prefix: &str) -> Vec<usize> {
    let mut v: Vec<usize> = names
        .filter_map(|n| n.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Checks every layer's feed-forward tensors against a MoE config; errors name `config_path`,
/// which contradicts the weights. Does nothing for a config without experts.
pub fn check_moe_tensors<'a>(
    config_path: &Path,
    arch: &ArchConfig,
    tensors: impl Iterator<Item = (&'a str, Vec<u64>)>,
) -> Result<()> {
    check_moe_tensors_named(config_path, arch, tensors, &|n| format!("`{n}`"))
}

/// [`check_moe_tensors`] with each HF tensor name shown as `show` renders it (a GGUF file names
/// its own tensors).
pub fn check_moe_tensors_named<'a>(
    config_path: &Path,
    arch: &ArchConfig,
    tensors: impl Iterator<Item = (&'a str, Vec<u64>)>,
    show: &dyn Fn(&str) -> String,
) -> Result<()> {
    let Some(moe) = &arch.moe else {
        return Ok(());
    };
    let shapes: HashMap<&str, Vec<u64>> = tensors.collect();
    let (block, _) = moe_layout(&arch.model_type);
    let key = experts_key(&arch.model_type);
    let fail = |msg: String| Err(Error::config(config_path, msg));
    for i in 0..arch.num_hidden_layers {
        let prefix = format!("model.layers.{i}.{block}.experts.");
        let found = expert_numbers(shapes.keys().copied(), &prefix);
        if !arch.layer_is_sparse(i) {
            if let Some(x) = found.first() {
                return fail(format!(
                    "layer {i} has experts ({}), but the config makes it a dense layer (`mlp_only_layers`, `decoder_sparse_step`)",
                    show(&format!("{prefix}{x}.{}.weight", moe_layout(&arch.model_type).1[2]))
                ));
            }
        } else if found.last().is_some_and(|&x| x >= moe.num_experts) {
            return fail(format!(
                "layer {i} holds {} experts (numbers up to {}), but `{key}` is {}",
                found.len(),
                found.last().unwrap_or(&0),
                moe.num_experts
            ));
        }
        if moe.shared_expert_intermediate_size == 0 {
            let shared = format!("model.layers.{i}.{block}.shared_expert");
            if let Some(n) = shapes.keys().filter(|n| n.starts_with(&shared)).min() {
                return fail(format!(
                    "`shared_expert_intermediate_size` is 0, but layer {i} holds {}",
                    show(n)
                ));
            }
        }
        for (name, want) in expected_ffn(arch, i) {
            match shapes.get(name.as_str()) {
                None => {
                    let what = if arch.layer_is_sparse(i) {
                        format!("which `{key}` {} implies", moe.num_experts)
                    } else {
                        "which a dense layer needs".to_string()
                    };
                    return fail(format!("layer {i} has no {}, {what}", show(&name)));
                }
                Some(got) if *got != want => {
                    let why = if name.ends_with(&format!("{block}.gate.weight")) {
                        format!(" (the router: `{key}` × `hidden_size`)")
                    } else {
                        String::new()
                    };
                    return fail(format!(
                        "{} has shape {got:?}, but the config implies {want:?}{why}",
                        show(&name)
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn arch() -> ArchConfig {
        ArchConfig::from_value(&json!({"model_type":"qwen2_moe","num_hidden_layers":2,
            "hidden_size":8,"num_attention_heads":2,"intermediate_size":16,
            "moe_intermediate_size":4,"shared_expert_intermediate_size":6,"num_experts":2,
            "num_experts_per_tok":1,"decoder_sparse_step":2,"vocab_size":10}))
        .unwrap()
    }

    fn all(a: &ArchConfig) -> Vec<(String, Vec<u64>)> {
        (0..a.num_hidden_layers)
            .flat_map(|i| expected_ffn(a, i))
            .collect()
    }

    fn check(t: &[(String, Vec<u64>)]) -> std::result::Result<(), String> {
        let it = t.iter().map(|(n, s)| (n.as_str(), s.clone()));
        check_moe_tensors(Path::new("config.json"), &arch(), it).map_err(|e| e.to_string())
    }

    #[test]
    fn a_complete_checkpoint_passes_and_each_break_is_named() {
        let a = arch();
        let good = all(&a);
        assert_eq!(good.len(), 3 + 1 + 2 * 3 + 3 + 1);
        check(&good).unwrap();
        let mut missing = good.clone();
        missing.retain(|(n, _)| n != "model.layers.1.mlp.experts.1.up_proj.weight");
        assert!(check(&missing)
            .unwrap_err()
            .contains("has no `model.layers.1.mlp.experts.1.up_proj.weight`"));
        let mut router = good.clone();
        router
            .iter_mut()
            .find(|(n, _)| n.ends_with("mlp.gate.weight"))
            .unwrap()
            .1 = vec![3, 8];
        assert!(check(&router).unwrap_err().contains("the router"));
        let mut extra = good.clone();
        extra.push((
            "model.layers.1.mlp.experts.2.up_proj.weight".into(),
            vec![4, 8],
        ));
        assert!(check(&extra).unwrap_err().contains("holds 3 experts"));
        let mut dense = good;
        dense.push((
            "model.layers.0.mlp.experts.0.up_proj.weight".into(),
            vec![4, 8],
        ));
        assert!(check(&dense).unwrap_err().contains("dense layer"));
    }
}
