//! llama.cpp's metadata for the dense families of issue 17, both ways: the `config.json` fields
//! a Gemma 2, Gemma 3, Phi-3 or OLMo 2 GGUF implies ([`family_config`]), and the keys and extra
//! tensors a conversion writes ([`family_metadata`]).
//!
//! What llama.cpp fixes rather than reads (its `llama-model.cpp`), and so what a GGUF cannot
//! say otherwise:
//! - Gemma 2 alternates sliding and global layers, starting sliding; Gemma 3 has five sliding
//!   layers then one global, sliding layers with RoPE base 10000, unscaled.
//! - Gemma's attention scale is `key_length^-½`, except for the 27B models (46 layers for
//!   Gemma 2, 62 for Gemma 3), which use `(hidden / heads)^-½`.
//!
//! A conversion refuses an HF model that differs from these, since llama.cpp would run it as a
//! different model.

use crate::arch::families::{sliding_layers, Family};
use crate::arch::gguf_names::ROPE_FACTORS;
use crate::arch::ArchConfig;
pub use crate::checkpoint::gguf::pattern::{check_gguf_prune, llama_cpp_period};
use crate::checkpoint::gguf::{GgufModel, Value};
use crate::error::{Error, IoContext, Result};
use serde_json::{json, Map};
use std::fs::File;
use std::path::Path;

/// The number of layers of the 27B model, whose attention scale llama.cpp derives differently.
fn layers_27b(arch: &str) -> u64 {
    if arch == "gemma2" {
        46
    } else {
        62
    }
}

fn f32_key(model: &GgufModel, key: &str) -> Result<Option<f64>> {
    match model.metadata().get(key) {
        None => Ok(None),
        Some(Value::F32(x)) => Ok(Some(f64::from(*x))),
        Some(Value::F64(x)) => Ok(Some(*x)),
        Some(v) => Err(Error::corrupt(
            model.path(),
            format!("metadata `{key}` is {}, not a number", v.type_name()),
        )),
    }
}

fn u64_key(model: &GgufModel, key: &str) -> Result<Option<u64>> {
    match model.metadata().get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            Error::corrupt(
                model.path(),
                format!("metadata `{key}` is {}, not an integer", v.type_name()),
            )
        }),
    }
}

/// The values of GGUF tensor `name` of `model`, read directly (for small tensors that have
/// no HF name, such as Phi-3's RoPE factors).
fn raw_values(model: &GgufModel, name: &str) -> Result<Vec<f32>> {
    use std::io::{Read, Seek, SeekFrom};
    let path = model.path();
    let t = model
        .tensors()
        .iter()
        .find(|t| t.name() == name)
        .ok_or_else(|| Error::corrupt(path, format!("no tensor `{name}`")))?;
    let part = model
        .parts()
        .get(t.part())
        .ok_or_else(|| Error::corrupt(path, format!("tensor `{name}` has no file part")))?;
    let len = usize::try_from(t.n_bytes())
        .ok()
        .filter(|&l| l <= 1 << 24)
        .ok_or_else(|| Error::corrupt(path, format!("tensor `{name}` is too large")))?;
    let mut file = File::open(&part.path).at(&part.path)?;
    file.seek(SeekFrom::Start(t.file_offset())).at(&part.path)?;
    let mut bytes = vec![0u8; len];
    file.read_exact(&mut bytes).at(&part.path)?;
    let mut values = Vec::new();
    crate::quant::dequantize(
        t.ggml_type().id(),
        &bytes,
        t.n_elements() as usize,
        &mut values,
    )
    .map_err(|e| Error::corrupt(path, format!("tensor `{name}`: {e}")))?;
    Ok(values)
}

/// A 1-D F32 tensor of the file, for Phi-3's RoPE factors.
fn factors(model: &GgufModel, name: &str) -> Result<Option<Vec<f64>>> {
    if !model.tensors().iter().any(|t| t.name() == name) {
        return Ok(None);
    }
    let weights = raw_values(model, name)?;
    Ok(Some(weights.into_iter().map(f64::from).collect()))
}

/// Adds the family's `config.json` fields implied by GGUF `model` of architecture `arch` to
/// `cfg` (which holds the llama fields already).
pub(crate) fn family_config(
    model: &GgufModel,
    arch: &str,
    cfg: &mut Map<String, serde_json::Value>,
) -> Result<()> {
    let k = |s: &str| format!("{arch}.{s}");
    let get = |key: &str| {
        cfg.get(key)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let (layers, hidden, heads, head_dim) = (
        get("num_hidden_layers"),
        get("hidden_size"),
        get("num_attention_heads"),
        get("head_dim"),
    );
    let window = u64_key(model, &k("attention.sliding_window"))?.filter(|&w| w > 0);
    match arch {
        "gemma2" | "gemma3" => {
            cfg.insert("hidden_activation".into(), json!("gelu_pytorch_tanh"));
            cfg.remove("hidden_act");
            let scalar = if layers == layers_27b(arch) && heads > 0 {
                hidden / heads
            } else {
                head_dim
            };
            cfg.insert("query_pre_attn_scalar".into(), json!(scalar));
            cfg.insert("sliding_window".into(), json!(window));
            let soft = |key: &str, default: Option<f64>| -> Result<serde_json::Value> {
                Ok(json!(f32_key(model, &k(key))?.or(default)))
            };
            if arch == "gemma2" {
                cfg.insert(
                    "attn_logit_softcapping".into(),
                    soft("attn_logit_softcapping", Some(50.0))?,
                );
                cfg.insert(
                    "final_logit_softcapping".into(),
                    soft("final_logit_softcapping", Some(30.0))?,
                );
            } else {
                cfg.insert("attn_logit_softcapping".into(), json!(null));
                cfg.insert(
                    "final_logit_softcapping".into(),
                    soft("final_logit_softcapping", None)?,
                );
                // Without a window llama.cpp runs every layer globally.
                let period = if window.is_some() { 6 } else { 1 };
                cfg.insert("sliding_window_pattern".into(), json!(period));
                cfg.insert("rope_local_base_freq".into(), json!(10000.0));
            }
        }
        "phi3" => {
            if let Some(w) = window {
                cfg.insert("sliding_window".into(), json!(w));
            }
            if let Some(dims) = u64_key(model, &k("rope.dimension_count"))? {
                if head_dim > 0 && dims != head_dim {
                    cfg.insert(
                        "partial_rotary_factor".into(),
                        json!(dims as f64 / head_dim as f64),
                    );
                }
            }
            let long = factors(model, ROPE_FACTORS.0)?;
            let short = factors(model, ROPE_FACTORS.1)?;
            if let (Some(long), Some(short)) = (long, short) {
                let original = u64_key(model, &k("rope.scaling.original_context_length"))?
                    .ok_or_else(|| {
                        Error::corrupt(
                            model.path(),
                            format!(
                                "the file has LongRoPE factors but no `{}`",
                                k("rope.scaling.original_context_length")
                            ),
                        )
                    })?;
                cfg.insert("original_max_position_embeddings".into(), json!(original));
                let mut scaling = json!({"rope_type": "longrope", "long_factor": long,
                    "short_factor": short});
                if let Some(a) = f32_key(model, &k("rope.scaling.attn_factor"))? {
                    scaling["attention_factor"] = json!(a);
                }
                cfg.insert("rope_scaling".into(), scaling);
            }
        }
        "granite" => {
            for (hf, gguf) in crate::arch::registry::GRANITE_SCALES {
                if let Some(x) = f32_key(model, &k(gguf))? {
                    cfg.insert((*hf).into(), json!(x));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Metadata keys and extra F32 tensors (by GGUF name) for a GGUF file.
pub(crate) type FamilyMetadata = (Vec<(String, Value)>, Vec<(String, Vec<f32>)>);

/// The keys (beyond the llama set) and extra F32 tensors a GGUF of family `arch` carries, from
/// the HF config. Refuses what llama.cpp would run differently (see the module docs).
pub(crate) fn family_metadata(
    arch: &str,
    cfg: &ArchConfig,
    config_path: &Path,
) -> Result<FamilyMetadata> {
    let refuse = |msg: String| Error::Unsupported(format!("`{}`: {msg}", config_path.display()));
    let k = |s: &str| format!("{arch}.{s}");
    let mut kvs = Vec::new();
    let mut tensors = Vec::new();
    let family = Family::of(&cfg.model_type);
    let mc = super::ModelConfig::new(cfg.clone()).map_err(&refuse)?;
    let f = &mc.family;
    if family.is_gemma() {
        let scalar = if cfg.num_hidden_layers as u64 == layers_27b(arch) {
            cfg.hidden_size / cfg.num_attention_heads
        } else {
            cfg.head_dim
        };
        if (f.attn_scale - (scalar as f32).powf(-0.5)).abs() > 1e-7 {
            return Err(refuse(format!(
                "`query_pre_attn_scalar` gives an attention scale llama.cpp does not use for `{arch}` (it takes {scalar}); the GGUF would be a different model"
            )));
        }
        let sliding = sliding_layers(cfg).unwrap_or_default();
        let period = llama_cpp_period(arch).unwrap_or(1);
        let fixed: Vec<bool> = (0..cfg.num_hidden_layers)
            .map(|i| !(i as u64 + 1).is_multiple_of(period))
            .collect();
        if cfg.sliding_window.is_some() && sliding != fixed {
            return Err(refuse(format!(
                "the layers' attention types do not follow the {}:1 sliding:global pattern llama.cpp fixes for `{arch}`; the GGUF would be a different model",
                period - 1
            )));
        }
        if let Some(c) = f.attn_softcap {
            kvs.push((k("attn_logit_softcapping"), Value::F32(c)));
        } else if arch == "gemma2" {
            return Err(refuse("Gemma 2 without attention soft-capping cannot be written for llama.cpp, which always applies it".into()));
        }
        if let Some(c) = f.final_softcap {
            kvs.push((k("final_logit_softcapping"), Value::F32(c)));
        }
        if let Some(w) = cfg.sliding_window {
            kvs.push((k("attention.sliding_window"), Value::U32(w as u32)));
        }
        if let Some((theta, scaling)) = &f.local_rope {
            if *theta != 10000.0 || *scaling != super::RopeScaling::Default {
                return Err(refuse(format!(
                    "sliding layers use RoPE base {theta}; llama.cpp fixes 10000, unscaled, for `{arch}`"
                )));
            }
        }
        match &mc.rope_scaling {
            super::RopeScaling::Default => {}
            super::RopeScaling::Linear { factor } => {
                kvs.push((k("rope.scaling.type"), Value::string("linear")));
                kvs.push((k("rope.scaling.factor"), Value::F32(*factor as f32)));
            }
            other => {
                return Err(refuse(format!(
                    "RoPE scaling {other:?} is not written to GGUF"
                )))
            }
        }
    }
    if let Some(g) = &cfg.family.granite {
        let values = [
            g.embedding_multiplier,
            g.residual_multiplier,
            g.attention_multiplier,
            g.logits_scaling,
        ];
        for ((_, key), x) in crate::arch::registry::GRANITE_SCALES.iter().zip(values) {
            kvs.push((k(key), Value::F32(x as f32)));
        }
    }
    if family == Family::Phi3 {
        if let Some(w) = cfg.sliding_window {
            kvs.push((k("attention.sliding_window"), Value::U32(w as u32)));
        }
        kvs.push((k("rope.dimension_count"), Value::U32(f.rotary_dim as u32)));
        match &mc.rope_scaling {
            super::RopeScaling::Default => {}
            super::RopeScaling::LongRope(l) => {
                kvs.push((
                    k("rope.scaling.original_context_length"),
                    Value::U32(l.original_max_position_embeddings as u32),
                ));
                kvs.push((
                    k("rope.scaling.attn_factor"),
                    Value::F32(l.attention_factor as f32),
                ));
                let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
                tensors.push((ROPE_FACTORS.0.to_string(), f32s(&l.long_factor)));
                tensors.push((ROPE_FACTORS.1.to_string(), f32s(&l.short_factor)));
            }
            other => {
                return Err(refuse(format!(
                    "RoPE scaling {other:?} is not written to GGUF"
                )))
            }
        }
    }
    Ok((kvs, tensors))
}
