//! Changing a checkpoint's format: a GGUF file into an HF folder (config, safetensors,
//! tokenizer), or an HF folder into a GGUF file (floats, or quantized with llama.cpp's mixes);
//! and a random-weight HF checkpoint of a given shape, for tests and benchmarks.

use super::prune::FloatType;
use crate::base::guard::check_output;
use crate::checkpoint::atomic::Overwrite;
use crate::checkpoint::gguf::GgmlType;
use crate::checkpoint::safetensors::Dtype;
use crate::convert::quantize::QuantMix;
use crate::convert::to_gguf::hf_to_gguf_quant;
use crate::convert::to_hf::{gguf_to_hf_with, ConvertReport};
use crate::error::{Error, Result};
use crate::model::is_gguf;
use crate::progress::Progress;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The checkpoint formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// An HF folder.
    Hf,
    /// A GGUF file.
    Gguf,
}

/// What `convert` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ConvertRequest {
    /// The output format.
    #[cfg_attr(feature = "cli", arg(long, value_enum, value_name = "FORMAT"))]
    pub to: Format,
    /// The output folder (`--to hf`) or file (`--to gguf`).
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR"))]
    pub out: PathBuf,
    /// Tensor type of the output.
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value = "f32"))]
    pub dtype: FloatType,
    /// GGUF output only: quantize the matrix weights with llama.cpp's mix of this name (`q4_k_m`:
    /// Q4_K, with Q6_K for the head and for `attn_v`/`ffn_down` in some layers; `q4_0`; `q8_0`).
    /// Norms stay F32.
    #[cfg_attr(feature = "cli", arg(long, value_enum, value_name = "MIX"))]
    #[serde(default)]
    pub quant: Option<QuantMix>,
    /// Replace an existing output.
    #[cfg_attr(feature = "cli", arg(long))]
    pub force: bool,
}

/// Converts `model` as `req` says; `progress` counts tensors written.
pub fn convert(
    model: &Path,
    req: &ConvertRequest,
    progress: &dyn Progress,
) -> Result<ConvertReport> {
    check_output(&req.out, &[model])?;
    let overwrite = if req.force {
        Overwrite::Force
    } else {
        Overwrite::Refuse
    };
    match req.to {
        Format::Gguf if is_gguf(model) => Err(Error::Invalid(format!(
            "`{}` is already a GGUF file\nhint: converting to GGUF reads an HF folder",
            model.display()
        ))),
        Format::Hf if !is_gguf(model) => Err(Error::Invalid(format!(
            "`{}`: converting to HF reads a `.gguf` file\nhint: HF folders are already in HF format",
            model.display()
        ))),
        Format::Gguf => {
            let ty = match req.dtype {
                FloatType::F32 => GgmlType::F32,
                FloatType::F16 => GgmlType::F16,
                FloatType::Bf16 => GgmlType::BF16,
            };
            hf_to_gguf_quant(model, &req.out, ty, req.quant, overwrite, progress)
        }
        Format::Hf if req.quant.is_some() => Err(Error::Invalid(
            "`quant`: quantizing applies to GGUF output (`to` gguf); HF folders are written in `dtype`"
                .into(),
        )),
        Format::Hf => gguf_to_hf_with(model, &req.out, req.dtype.dtype(), overwrite, progress),
    }
}

/// Writes a random-weight HF checkpoint of the shape `config` (a `config.json`) describes.
pub fn synth(
    config: &Path,
    out: &Path,
    dtype: FloatType,
    max_shard: u64,
    seed: u64,
    progress: &dyn Progress,
) -> Result<()> {
    check_output(out, &[config])?;
    let text = crate::checkpoint::limits::read_text_capped(
        config,
        crate::checkpoint::limits::MAX_JSON_BYTES,
    )?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::config(config, format!("not valid JSON: {e}")))?;
    crate::checkpoint::synth::write_synthetic(&value, out, dtype.dtype(), max_shard, seed, progress)
}

impl FloatType {
    /// The safetensors dtype.
    pub fn dtype(self) -> Dtype {
        match self {
            FloatType::F32 => Dtype::F32,
            FloatType::F16 => Dtype::F16,
            FloatType::Bf16 => Dtype::BF16,
        }
    }
}
