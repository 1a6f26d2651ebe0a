//! Conversion of a GGUF model into an HF folder that transformers loads: `config.json` rebuilt
//! from the metadata, `model.safetensors` written one tensor at a time (dequantized, Q/K rows
//! un-permuted for llama, in the chosen float type), `tokenizer.json` and
//! `tokenizer_config.json` (with the chat template) from the tokenizer metadata, and
//! `generation_config.json` with the BOS/EOS ids. The folder appears atomically and is read back
//! once before the call returns.

use crate::checkpoint::atomic::{AtomicOutput, Overwrite};
use crate::checkpoint::gguf::GgufModel;
use crate::checkpoint::safetensors::{encode_header, Dtype, OutTensor, SafetensorsFile};
use crate::error::{Error, IoContext, Result};
use crate::model::gguf::{gguf_config_json, GgufWeights};
use crate::tokenizer::{to_tokenizer_json, tokenizer_config_json, vocab_from_metadata};
use serde_json::{json, Map, Value};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// What a conversion wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConvertReport {
    pub out: PathBuf,
    pub tensors: usize,
    pub bytes: u64,
    /// Notes from the tokenizer conversion, for the caller to show.
    pub warnings: Vec<String>,
}

/// The torch dtype name of a float safetensors dtype.
fn torch_name(dtype: Dtype) -> Result<&'static str> {
    match dtype {
        Dtype::F32 => Ok("float32"),
        Dtype::F16 => Ok("float16"),
        Dtype::BF16 => Ok("bfloat16"),
        other => Err(Error::Unsupported(format!(
            "output dtype `{}`: choose f32, f16 or bf16",
            other.name()
        ))),
    }
}

fn encode(values: &[f32], dtype: Dtype, out: &mut Vec<u8>) {
    out.clear();
    match dtype {
        Dtype::F16 => {
            for &v in values {
                out.extend_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
            }
        }
        Dtype::BF16 => {
            for &v in values {
                out.extend_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes());
            }
        }
        _ => {
            for &v in values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(v)
        .map_err(|e| Error::Invalid(format!("`{}`: cannot encode JSON: {e}", path.display())))?;
    text.push('\n');
    std::fs::write(path, text).at(path)
}

/// Converts the GGUF model at `src` into an HF folder at `out`, tensors stored as `dtype`.
pub fn gguf_to_hf(
    src: &Path,
    out: &Path,
    dtype: Dtype,
    overwrite: Overwrite,
) -> Result<ConvertReport> {
    gguf_to_hf_with(src, out, dtype, overwrite, &crate::progress::Silent)
}

/// [`gguf_to_hf`], `progress` counting tensors written.
pub fn gguf_to_hf_with(
    src: &Path,
    out: &Path,
    dtype: Dtype,
    overwrite: Overwrite,
    progress: &dyn crate::progress::Progress,
) -> Result<ConvertReport> {
    let torch = torch_name(dtype)?;
    let model = GgufModel::open(src)?;
    let mut config = gguf_config_json(&model)?;
    config["torch_dtype"] = json!(torch);
    let weights = GgufWeights::new(&model)?;
    // A file without `tokenizer.ggml.model` (weights only) gets no tokenizer files.
    let mut warnings = Vec::new();
    let tokenizer = if model.metadata().get("tokenizer.ggml.model").is_some() {
        let vocab = vocab_from_metadata(model.metadata(), model.path())?;
        let built = to_tokenizer_json(&vocab)?;
        warnings.extend(built.warnings);
        Some((built.json, tokenizer_config_json(&vocab)?))
    } else {
        warnings.push(format!(
            "`{}` carries no tokenizer; the folder has none either",
            src.display()
        ));
        None
    };

    let names = weights.names();
    let mut header = Vec::with_capacity(names.len());
    for &name in &names {
        let shape: Vec<u64> = weights.shape_of(name).iter().map(|&d| d as u64).collect();
        let numel = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let len = numel
            .and_then(|n| n.checked_mul(dtype.size() as u64))
            .ok_or_else(|| Error::corrupt(src, format!("tensor `{name}` is too large")))?;
        header.push(OutTensor {
            name: name.to_string(),
            dtype,
            shape,
            len,
        });
    }
    let mut meta = Map::new();
    meta.insert("format".into(), json!("pt"));

    let output = AtomicOutput::dir(out, overwrite)?;
    let st_path = output.join("model.safetensors");
    let file = std::fs::File::create(&st_path).at(&st_path)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&encode_header(&header, &meta)).at(&st_path)?;
    let mut buf = Vec::new();
    let mut bytes = 0u64;
    progress.start("converting", header.len() as u64);
    for t in &header {
        let (values, _) = weights.values(&t.name)?;
        encode(&values, dtype, &mut buf);
        w.write_all(&buf).at(&st_path)?;
        bytes += buf.len() as u64;
        progress.advance(1);
    }
    progress.finish();
    let file = w
        .into_inner()
        .map_err(|e| Error::io(&st_path, e.into_error()))?;
    file.sync_all().at(&st_path)?;

    write_json(&output.join("config.json"), &config)?;
    if let Some((json, config)) = &tokenizer {
        write_json(&output.join("tokenizer.json"), json)?;
        write_json(&output.join("tokenizer_config.json"), config)?;
    }
    let mut gen = Map::new();
    for key in ["bos_token_id", "eos_token_id"] {
        if let Some(v) = config.get(key) {
            gen.insert(key.into(), v.clone());
        }
    }
    write_json(&output.join("generation_config.json"), &Value::Object(gen))?;
    let target = output.commit()?;

    // Read the result back once: the header must list every tensor we meant to write.
    let check = SafetensorsFile::open(&target.join("model.safetensors"))?;
    if check.tensors.len() != header.len() {
        return Err(Error::corrupt(
            target.join("model.safetensors"),
            format!(
                "read back {} tensors, wrote {}",
                check.tensors.len(),
                header.len()
            ),
        ));
    }
    Ok(ConvertReport {
        out: target,
        tensors: header.len(),
        bytes,
        warnings,
    })
}
