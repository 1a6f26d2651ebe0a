//! Quantized GGUF output (`convert --to gguf --quant …`): which ggml type each tensor gets, and
//! its encoding.
//!
//! The mixes follow llama.cpp's `llama-quant.cpp` for the same names, so a file made here sizes
//! and behaves like one made by `llama-quantize`:
//!
//! | mix    | most 2-D weights | `output` (or a tied `token_embd`) | `attn_v`, `ffn_down`            |
//! |--------|------------------|-----------------------------------|---------------------------------|
//! | q8_0   | Q8_0             | Q8_0                              | Q8_0                            |
//! | q4_0   | Q4_0             | Q6_K                              | Q4_0                            |
//! | q4_k_m | Q4_K             | Q6_K                              | Q6_K in the "more bits" layers* |
//!
//! \* llama.cpp's `use_more_bits(i, n)`: the first and last eighth of the layers and every third
//! layer between them. Norms, biases and every other 1-D tensor stay F32. A row whose length a
//! type's block does not divide falls back as llama.cpp does: Q4_K to Q5_0, Q6_K to Q8_0, and
//! anything whose rows 32 does not divide to F16.
//!
//! Encoding: [`crate::quant::quantize`] (the legacy types with ggml's reference roundings, the
//! k-quants with candle's quantizers, whose blocks ggml reads; the round-trip test decodes them
//! with depthprune's decoder), in parallel slabs of whole blocks.

use crate::checkpoint::gguf::GgmlType;
use crate::error::{Error, Result};
use crate::quant::QuantFormat;
use serde::{Deserialize, Serialize};

/// The quantization mixes `convert` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum QuantMix {
    /// Q8_0 everywhere (2-D).
    #[cfg_attr(feature = "cli", value(name = "q8_0"))]
    Q8_0,
    /// Q4_0, with a Q6_K output head.
    #[cfg_attr(feature = "cli", value(name = "q4_0"))]
    Q4_0,
    /// llama.cpp's Q4_K_M: Q4_K, with Q6_K for the head and for `attn_v`/`ffn_down` in some layers.
    #[cfg_attr(feature = "cli", value(name = "q4_k_m"))]
    Q4KM,
}

/// Whether layer `i` of `n` gets more bits in llama.cpp's `_M` mixes.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The block layer number of a GGUF tensor name (`blk.N.…`).
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

impl QuantMix {
    pub fn name(self) -> &'static str {
        match self {
            QuantMix::Q8_0 => "q8_0",
            QuantMix::Q4_0 => "q4_0",
            QuantMix::Q4KM => "q4_k_m",
        }
    }

    /// The type of GGUF tensor `name` of `shape` (HF order: rows first) in a model of `n_layers`
    /// layers; `tied` when `token_embd` is also the output head.
    pub fn type_for(self, name: &str, shape: &[usize], n_layers: usize, tied: bool) -> GgmlType {
        if shape.len() < 2 {
            return GgmlType::F32;
        }
        let head = name == "output.weight" || (tied && name == "token_embd.weight");
        let wanted = match self {
            QuantMix::Q8_0 => GgmlType::Q8_0,
            QuantMix::Q4_0 if head => GgmlType::Q6_K,
            QuantMix::Q4_0 => GgmlType::Q4_0,
            QuantMix::Q4KM if head => GgmlType::Q6_K,
            QuantMix::Q4KM => {
                let more = (name.contains(".attn_v.") || name.contains(".ffn_down"))
                    && layer_of(name).is_some_and(|i| use_more_bits(i, n_layers));
                if more {
                    GgmlType::Q6_K
                } else {
                    GgmlType::Q4_K
                }
            }
        };
        fallback(wanted, shape[shape.len() - 1])
    }
}

/// `ty`, or what llama.cpp writes instead when rows of `cols` values do not fill its blocks.
fn fallback(ty: GgmlType, cols: usize) -> GgmlType {
    if !cols.is_multiple_of(32) {
        return GgmlType::F16;
    }
    match ty {
        GgmlType::Q4_K if !cols.is_multiple_of(256) => GgmlType::Q5_0,
        GgmlType::Q6_K if !cols.is_multiple_of(256) => GgmlType::Q8_0,
        t => t,
    }
}

/// Encodes `values` (rows of `cols`, row-major) as the quantized type `ty`
/// ([`crate::quant::quantize`], in parallel slabs of whole blocks).
pub fn encode_quantized(values: &[f32], cols: usize, ty: GgmlType) -> Result<Vec<u8>> {
    if cols == 0 || !values.len().is_multiple_of(cols) {
        return Err(Error::Invalid(format!(
            "{} values do not make rows of {cols}",
            values.len()
        )));
    }
    let format = QuantFormat::from_type_id(ty as u32)
        .map_err(|e| Error::Unsupported(format!("GGUF output type `{}`: {e}", ty.name())))?;
    if !cols.is_multiple_of(format.block_size()) {
        return Err(Error::Invalid(format!(
            "rows of {cols} values do not fill `{}` blocks of {}",
            ty.name(),
            format.block_size()
        )));
    }
    let mut out = Vec::new();
    crate::quant::quantize(format, values, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_k_m_follows_llama_cpp_mix() {
        let m = QuantMix::Q4KM;
        let s = [4096, 4096];
        assert_eq!(
            m.type_for("blk.0.attn_v.weight", &s, 32, false),
            GgmlType::Q6_K
        );
        assert_eq!(
            m.type_for("blk.4.attn_v.weight", &s, 32, false),
            GgmlType::Q4_K
        );
        assert_eq!(
            m.type_for("blk.6.ffn_down.weight", &s, 32, false),
            GgmlType::Q6_K
        );
        assert_eq!(
            m.type_for("blk.31.ffn_down.weight", &s, 32, false),
            GgmlType::Q6_K
        );
        assert_eq!(
            m.type_for("blk.5.attn_q.weight", &s, 32, false),
            GgmlType::Q4_K
        );
        assert_eq!(m.type_for("output.weight", &s, 32, false), GgmlType::Q6_K);
        assert_eq!(
            m.type_for("token_embd.weight", &s, 32, false),
            GgmlType::Q4_K
        );
        assert_eq!(
            m.type_for("token_embd.weight", &s, 32, true),
            GgmlType::Q6_K
        );
        assert_eq!(
            m.type_for("blk.0.attn_norm.weight", &[4096], 32, false),
            GgmlType::F32
        );
        // Rows 256 does not divide fall back as llama.cpp does; rows 32 does not divide go F16.
        assert_eq!(
            m.type_for("blk.5.attn_q.weight", &[64, 576], 30, false),
            GgmlType::Q5_0
        );
        assert_eq!(
            m.type_for("output.weight", &[64, 576], 30, false),
            GgmlType::Q8_0
        );
        assert_eq!(
            m.type_for("blk.5.attn_q.weight", &[64, 40], 30, false),
            GgmlType::F16
        );
    }

    #[test]
    fn more_bits_layers_are_llama_cpps() {
        let more: Vec<usize> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(
            more,
            vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }

    #[test]
    fn k_quants_decode_with_our_decoder() {
        let (rows, cols) = (5, 512);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 13) as f32))
            .collect();
        for (ty, tol) in [
            (GgmlType::Q4_K, 0.12),
            (GgmlType::Q6_K, 0.03),
            (GgmlType::Q8_0, 0.01),
        ] {
            let bytes = encode_quantized(&values, cols, ty).unwrap();
            let format = QuantFormat::from_type_id(ty as u32).unwrap();
            assert_eq!(bytes.len(), format.byte_size(values.len()).unwrap());
            let mut back = Vec::new();
            crate::quant::dequantize(ty as u32, &bytes, values.len(), &mut back).unwrap();
            let (mut err, mut norm) = (0f64, 0f64);
            for (a, b) in values.iter().zip(&back) {
                err += ((a - b) as f64).powi(2);
                norm += (*a as f64).powi(2);
            }
            let rel = (err / norm).sqrt();
            assert!(rel < tol, "{}: relative error {rel}", ty.name());
        }
    }
}
