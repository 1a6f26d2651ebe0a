//! Conversion of an HF folder (llama, mistral, qwen2, qwen3, the dense families of issue 17:
//! gemma2, gemma3_text, phi3, olmo2, and the MoE families mixtral, qwen2_moe and qwen3_moe, whose
//! per-expert tensors are stacked) into a GGUF file, unquantized or quantized with one of
//! llama.cpp's mixes ([`super::quantize`]):
//! llama.cpp's metadata keys from `config.json`, tensors under their GGUF names with the Q/K rows
//! permuted for llama as llama.cpp's converter does, 2-D tensors in the chosen float type and
//! 1-D ones (norms, biases) in F32. A byte-level BPE tokenizer is written as llama.cpp's
//! `tokenizer.*` metadata ([`crate::tokenizer::to_gguf`]); other tokenizers are left out with a
//! warning in the [`ConvertReport`]. The families' own keys, names, Gemma's `1 + w` norms and
//! Phi-3's RoPE factor tensors follow llama.cpp ([`crate::arch::gguf_names`]).

use super::quantize::{encode_quantized, QuantMix};
use super::to_hf::ConvertReport;
use crate::arch::gguf_names::{hf_to_gguf_for, norm_shift};
use crate::arch::ArchConfig;
use crate::checkpoint::atomic::{AtomicOutput, Overwrite};
use crate::checkpoint::gguf::{
    GgmlType, GgufModel, GgufWriter, Value, DEFAULT_ALIGNMENT, KEY_ARCHITECTURE,
};
use crate::error::{Error, IoContext, Result};
use crate::model::gguf::permute_rows;
use crate::model::gguf_moe::hf_to_gguf_moe;
use crate::model::{HfFolder, WeightSource};
use crate::progress::{Progress, Silent};
use crate::tokenizer::to_gguf::{gguf_tokenizer_metadata, TokenizerMetadata};
use std::io::BufWriter;
use std::path::Path;

/// `values` as `ty` (F16 or BF16; anything else is written as F32, which `hf_to_gguf` checked).
fn encode(values: &[f32], ty: GgmlType) -> Vec<u8> {
    crate::checkpoint::floats::encode(
        values,
        crate::checkpoint::floats::Float::of_ggml(ty)
            .unwrap_or(crate::checkpoint::floats::Float::F32),
    )
}

/// Converts the HF folder `src` into a GGUF file at `out`, 2-D tensors stored as `ty` (F32, F16
/// or BF16).
pub fn hf_to_gguf(
    src: &Path,
    out: &Path,
    ty: GgmlType,
    overwrite: Overwrite,
) -> Result<ConvertReport> {
    hf_to_gguf_quant(src, out, ty, None, overwrite, &Silent)
}

/// [`hf_to_gguf`], with the 2-D tensors quantized as `quant` says when it is given
/// ([`QuantMix`]; `ty` is then unused). `progress` counts tensors written.
pub fn hf_to_gguf_quant(
    src: &Path,
    out: &Path,
    ty: GgmlType,
    quant: Option<QuantMix>,
    overwrite: Overwrite,
    progress: &dyn Progress,
) -> Result<ConvertReport> {
    if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        return Err(Error::Unsupported(format!(
            "GGUF output type `{}`: choose f32, f16 or bf16",
            ty.name()
        )));
    }
    let config_path = src.join("config.json");
    let (cfg, raw) = ArchConfig::from_file(&config_path)?;
    let row = crate::arch::registry::by_model_type(&cfg.model_type);
    let arch = row.and_then(|r| r.gguf_arch).ok_or_else(|| {
        Error::Unsupported(format!(
            "`{}`: `model_type` `{}` cannot be written as GGUF (supported: {})",
            config_path.display(),
            cfg.model_type,
            crate::arch::registry::ARCHES
                .iter()
                .filter(|r| r.gguf_arch.is_some())
                .map(|r| r.model_type)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let family = row.is_some_and(|r| r.family != crate::arch::families::Family::Llama)
        || cfg.family.granite.is_some();
    let (family_kvs, extra) = if family {
        crate::model::gguf::family_metadata(arch, &cfg, &config_path)?
    } else {
        Default::default()
    };
    if let Some(kind) = raw
        .get("rope_scaling")
        .or_else(|| raw.get("rope_parameters"))
        .and_then(|v| v.get("rope_type").or_else(|| v.get("type")))
        .and_then(|v| v.as_str())
    {
        if kind != "default" && !family {
            return Err(Error::Unsupported(format!(
                "`{}`: RoPE scaling `{kind}` is not written to GGUF yet",
                config_path.display()
            )));
        }
    }
    let weights = HfFolder::open(src)?;
    let hf_names: Vec<&str> = weights
        .names()
        .into_iter()
        .filter(|&n| !(cfg.tie_word_embeddings && n == "lm_head.weight"))
        .collect();
    // Each GGUF tensor with the HF tensors it is made of (one, or every expert in order).
    let names = gguf_tensors(src, arch, &hf_names)?;
    let u32v = |x: usize| Value::U32(x as u32);
    let k = |s: &str| format!("{arch}.{s}");
    let mut kvs: Vec<(String, Value)> = vec![
        (KEY_ARCHITECTURE.into(), Value::string(arch)),
        (k("block_count"), u32v(cfg.num_hidden_layers)),
        (
            k("context_length"),
            u32v(cfg.max_position_embeddings.unwrap_or(2048)),
        ),
        (k("embedding_length"), u32v(cfg.hidden_size)),
        (k("feed_forward_length"), u32v(cfg.intermediate_size)),
        (k("attention.head_count"), u32v(cfg.num_attention_heads)),
        (k("attention.head_count_kv"), u32v(cfg.num_key_value_heads)),
        (k("attention.key_length"), u32v(cfg.head_dim)),
        (k("attention.value_length"), u32v(cfg.head_dim)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        (k("rope.freq_base"), Value::F32(cfg.rope_theta as f32)),
        (k("vocab_size"), u32v(cfg.vocab_size)),
    ];
    kvs.extend(family_kvs);
    kvs.extend(moe_metadata(&cfg, &raw, arch));
    let mut warnings = Vec::new();
    match gguf_tokenizer_metadata(src, cfg.vocab_size)? {
        TokenizerMetadata::Written {
            entries,
            warnings: w,
        } => {
            kvs.extend(entries);
            warnings.extend(w);
        }
        TokenizerMetadata::Skipped(why) => {
            warnings.push(format!(
                "{why}; the GGUF has no tokenizer metadata, which llama.cpp needs to run it"
            ));
            for (field, key) in [
                ("bos_token_id", "tokenizer.ggml.bos_token_id"),
                ("eos_token_id", "tokenizer.ggml.eos_token_id"),
            ] {
                if let Some(id) = raw.get(field).and_then(|v| v.as_u64()) {
                    kvs.push((key.into(), Value::U32(id as u32)));
                }
            }
        }
    }

    let output = AtomicOutput::file(out, overwrite)?;
    let tmp = output.path().to_path_buf();
    let file = std::fs::File::create(&tmp).at(&tmp)?;
    let mut w = GgufWriter::new(
        BufWriter::with_capacity(1 << 20, file),
        &tmp,
        DEFAULT_ALIGNMENT,
    )?;
    w.header((names.len() + extra.len()) as u64, kvs.len() as u64)?;
    for (key, v) in &kvs {
        w.kv(key, v)?;
    }
    let n_layers = cfg.num_hidden_layers;
    let type_of = |name: &str, shape: &[usize]| match quant {
        Some(q) => q.type_for(name, shape, n_layers, cfg.tie_word_embeddings),
        None if shape.len() >= 2 => ty,
        None => GgmlType::F32,
    };
    for (g, parts) in &names {
        let mut shape = weights.shape(&parts[0]).unwrap_or_default();
        if parts.len() > 1 {
            shape.insert(0, parts.len());
        }
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        w.tensor_info(g, &dims, type_of(g, &shape))?;
    }
    for (g, values) in &extra {
        w.tensor_info(g, &[values.len() as u64], GgmlType::F32)?;
    }
    let permute = row.is_some_and(|r| r.permute_qk);
    let mut bytes = 0u64;
    progress.start("converting", (names.len() + extra.len()) as u64);
    for (g, parts) in &names {
        let hf = &parts[0];
        let mut values: Vec<f32> = Vec::new();
        let mut shape = Vec::new();
        for part in parts {
            let t = weights.tensor(part)?;
            shape = t.dims().to_vec();
            values.extend(t.flatten_all()?.to_vec1::<f32>()?);
        }
        if parts.len() > 1 {
            shape.insert(0, parts.len());
        }
        let shift = norm_shift(arch, hf);
        if shift != 0.0 {
            values.iter_mut().for_each(|v| *v += shift);
        }
        if permute {
            let heads = if hf.contains("self_attn.q_proj.") {
                Some(cfg.num_attention_heads)
            } else if hf.contains("self_attn.k_proj.") {
                Some(cfg.num_key_value_heads)
            } else {
                None
            };
            if let Some(n) = heads {
                values = permute_rows(&values, shape[0], n).ok_or_else(|| {
                    Error::corrupt(
                        src,
                        format!(
                            "tensor `{hf}` has {} rows, which do not split into {n} heads",
                            shape[0]
                        ),
                    )
                })?;
            }
        }
        let t = type_of(g, &shape);
        let data = if t.is_quantized() {
            encode_quantized(&values, shape.last().copied().unwrap_or(1), t)?
        } else {
            encode(&values, t)
        };
        bytes += data.len() as u64;
        w.write_tensor(&data)?;
        progress.advance(1);
    }
    for (_, values) in &extra {
        let data = encode(values, GgmlType::F32);
        bytes += data.len() as u64;
        w.write_tensor(&data)?;
        progress.advance(1);
    }
    progress.finish();
    let buf = w.finish()?;
    let file = buf
        .into_inner()
        .map_err(|e| Error::io(&tmp, e.into_error()))?;
    file.sync_all().at(&tmp)?;
    drop(file);
    let target = output.commit()?;
    let check = GgufModel::open(&target)?;
    if check.tensors().len() != names.len() + extra.len() {
        return Err(Error::corrupt(
            &target,
            format!(
                "read back {} tensors, wrote {}",
                check.tensors().len(),
                names.len() + extra.len()
            ),
        ));
    }
    Ok(ConvertReport {
        out: target,
        tensors: names.len() + extra.len(),
        bytes,
        warnings,
    })
}

/// The GGUF tensors for `hf_names`, in order of first appearance, each with the HF tensors it
/// is made of: one, or for a stacked MoE tensor every expert from 0 in order (issue 17).
fn gguf_tensors(src: &Path, arch: &str, hf_names: &[&str]) -> Result<Vec<(String, Vec<String>)>> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut stacked: std::collections::HashMap<String, Vec<(usize, String)>> = Default::default();
    for &name in hf_names {
        if let Some(g) = hf_to_gguf_for(arch, name) {
            out.push((g, vec![name.to_string()]));
            continue;
        }
        let (g, expert) = hf_to_gguf_moe(name).ok_or_else(|| {
            Error::Unsupported(format!(
                "`{}`: tensor `{name}` has no GGUF name that depthprune knows",
                src.display()
            ))
        })?;
        match expert {
            None => out.push((g, vec![name.to_string()])),
            Some(e) => {
                if !stacked.contains_key(&g) {
                    out.push((g.clone(), Vec::new()));
                }
                stacked.entry(g).or_default().push((e, name.to_string()));
            }
        }
    }
    for (g, parts) in out.iter_mut().filter(|(_, p)| p.is_empty()) {
        let mut experts = stacked.remove(g.as_str()).unwrap_or_default();
        experts.sort();
        if let Some((i, (e, _))) = experts.iter().enumerate().find(|(i, (e, _))| i != e) {
            return Err(Error::corrupt(
                src,
                format!("`{g}`: expert {i} is missing (the next one found is {e})"),
            ));
        }
        *parts = experts.into_iter().map(|(_, n)| n).collect();
    }
    Ok(out)
}

/// llama.cpp's MoE metadata for a config with experts: counts, expert sizes, and the top-k
/// renormalisation (`expert_weights_norm`) for qwen; Mixtral's sliding window, which llama.cpp's
/// `llama` does not apply but depthprune reads back.
fn moe_metadata(cfg: &ArchConfig, raw: &serde_json::Value, arch: &str) -> Vec<(String, Value)> {
    let Some(m) = &cfg.moe else {
        return Vec::new();
    };
    let k = |s: &str| format!("{arch}.{s}");
    let u32v = |x: usize| Value::U32(x as u32);
    let mut kvs = vec![
        (k("expert_count"), u32v(m.num_experts)),
        (k("expert_used_count"), u32v(m.num_experts_per_tok)),
    ];
    if cfg.model_type == "mixtral" {
        if let Some(w) = cfg.sliding_window.filter(|_| cfg.use_sliding_window) {
            kvs.push((k("attention.sliding_window"), u32v(w)));
        }
        return kvs;
    }
    kvs.push((
        k("expert_feed_forward_length"),
        u32v(m.moe_intermediate_size),
    ));
    if m.shared_expert_intermediate_size > 0 {
        kvs.push((
            k("expert_shared_feed_forward_length"),
            u32v(m.shared_expert_intermediate_size),
        ));
    }
    let norm = raw.get("norm_topk_prob").and_then(|v| v.as_bool());
    kvs.push((k("expert_weights_norm"), Value::Bool(norm.unwrap_or(false))));
    kvs
}
