//! Dequantization (and a few cheap quantizers) for the ggml tensor formats stored in GGUF files.
//!
//! Scoring layers needs `f32` weights, so a GGUF model is dequantized once at load; that is up to
//! a few hundred million weights, so the block decoders below work one block at a time into a
//! caller's buffer and allocate nothing per element.
//!
//! Formats are named by ggml's numeric type ids (`ggml.h`: F32 = 0, F16 = 1, Q4_0 = 2, …, BF16 =
//! 30). Bit layouts follow `ggml/src/ggml-quants.c` and gguf-py's `gguf/quants.py`, and
//! `tests/quant_golden.rs` checks every format against gguf-py on fixtures made by
//! `scripts/make_quant_fixtures.py`.
//!
//! - [`float`]: F32, F16, BF16 (and the slice conversions f32 → f16 / bf16).
//! - [`legacy`]: the 32-element block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//! - [`kquants`]: the 256-element super-block formats Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K.
//!
//! Entry points: [`dequantize`] for a whole tensor, [`dequantize_into`] for any run of whole
//! blocks (one row, one chunk of rows), and [`quantize`] for every format a GGUF stores but
//! Q8_K (healed tensors written back in their source type, `convert --quant`).

pub mod float;
pub mod kquants;
pub mod legacy;

use std::fmt;

pub use float::{f32_to_bf16_bytes, f32_to_f16_bytes};

/// ggml's super-block size for the k-quants (`QK_K`).
pub const QK_K: usize = 256;

/// The tensor formats this module can decode: a subset of [`crate::checkpoint::gguf::GgmlType`],
/// whose table is the one source of ids, names and sizes ([`QuantFormat::ggml_type`]). Built from
/// a ggml type id with [`QuantFormat::from_type_id`].
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    BF16,
}

/// Every format [`dequantize`] accepts, in type-id order.
pub const DEQUANTIZABLE: [QuantFormat; 14] = [
    QuantFormat::F32,
    QuantFormat::F16,
    QuantFormat::Q4_0,
    QuantFormat::Q4_1,
    QuantFormat::Q5_0,
    QuantFormat::Q5_1,
    QuantFormat::Q8_0,
    QuantFormat::Q2_K,
    QuantFormat::Q3_K,
    QuantFormat::Q4_K,
    QuantFormat::Q5_K,
    QuantFormat::Q6_K,
    QuantFormat::Q8_K,
    QuantFormat::BF16,
];

/// Every format [`quantize`] can produce.
pub const QUANTIZABLE: [QuantFormat; 13] = [
    QuantFormat::F32,
    QuantFormat::F16,
    QuantFormat::Q4_0,
    QuantFormat::Q4_1,
    QuantFormat::Q5_0,
    QuantFormat::Q5_1,
    QuantFormat::Q8_0,
    QuantFormat::Q2_K,
    QuantFormat::Q3_K,
    QuantFormat::Q4_K,
    QuantFormat::Q5_K,
    QuantFormat::Q6_K,
    QuantFormat::BF16,
];

/// A rule broken by a request to (de)quantize.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// A type id ggml does not define (or no longer defines, like the removed Q4_2).
    #[error("unknown ggml type id `{id}`; {}", supported_list("dequantize"))]
    UnknownType { id: u32 },
    /// A real ggml type that this module does not decode (the i-quants, ternary, integer types).
    #[error(
        "ggml type `{name}` (id {id}) cannot be dequantized; {}",
        supported_list("dequantize")
    )]
    CannotDequantize { id: u32, name: &'static str },
    /// A format with no quantizer here (Q8_K, ggml's intermediate for dot products).
    #[error("cannot quantize to `{format}`; {}", supported_list("quantize"))]
    CannotQuantize { format: QuantFormat },
    /// An element count that does not fill whole blocks.
    #[error(
        "`{format}` stores blocks of {block} elements, but {n_elements} elements were asked for"
    )]
    PartialBlock {
        format: QuantFormat,
        n_elements: usize,
        block: usize,
    },
    /// Data whose byte length is not what the element count needs.
    #[error("`{format}` data for {n_elements} elements must be {expected} bytes, but is {actual}")]
    LengthMismatch {
        format: QuantFormat,
        n_elements: usize,
        expected: usize,
        actual: usize,
    },
    /// An element count whose byte size does not fit in memory (`usize` overflow).
    #[error("`{format}` data for {n_elements} elements is too large to address")]
    TooLarge {
        format: QuantFormat,
        n_elements: usize,
    },
}

fn supported_list(op: &str) -> String {
    let list: &[QuantFormat] = if op == "quantize" {
        &QUANTIZABLE
    } else {
        &DEQUANTIZABLE
    };
    let names: Vec<&str> = list.iter().map(|f| f.name()).collect();
    format!("depthprune can {op} {}", names.join(", "))
}

impl QuantFormat {
    /// The format for a ggml type id, or why there is none.
    pub fn from_type_id(id: u32) -> Result<Self, QuantError> {
        if let Some(f) = DEQUANTIZABLE.iter().find(|f| f.type_id() == id) {
            return Ok(*f);
        }
        // Which ids exist, and their names, is `GgmlType`'s table.
        match crate::checkpoint::gguf::GgmlType::from_id(id) {
            Some(t) => Err(QuantError::CannotDequantize { id, name: t.name() }),
            None => Err(QuantError::UnknownType { id }),
        }
    }

    /// ggml's type id.
    pub fn type_id(self) -> u32 {
        self.ggml_type().id()
    }

    /// The GGUF type this format reads and writes; its size table
    /// ([`crate::checkpoint::gguf::GgmlType`]) is the one source of truth for names and sizes.
    pub fn ggml_type(self) -> crate::checkpoint::gguf::GgmlType {
        use crate::checkpoint::gguf::GgmlType as G;
        match self {
            QuantFormat::F32 => G::F32,
            QuantFormat::F16 => G::F16,
            QuantFormat::Q4_0 => G::Q4_0,
            QuantFormat::Q4_1 => G::Q4_1,
            QuantFormat::Q5_0 => G::Q5_0,
            QuantFormat::Q5_1 => G::Q5_1,
            QuantFormat::Q8_0 => G::Q8_0,
            QuantFormat::Q2_K => G::Q2_K,
            QuantFormat::Q3_K => G::Q3_K,
            QuantFormat::Q4_K => G::Q4_K,
            QuantFormat::Q5_K => G::Q5_K,
            QuantFormat::Q6_K => G::Q6_K,
            QuantFormat::Q8_K => G::Q8_K,
            QuantFormat::BF16 => G::BF16,
        }
    }

    /// ggml's name for the type (`ggml_type_name`).
    pub fn name(self) -> &'static str {
        self.ggml_type().name()
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        self.ggml_type().block_size() as usize
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.ggml_type().type_size() as usize
    }

    /// The byte size of `n_elements` values in this format (`ggml_row_size`), checking that they
    /// fill whole blocks and that the size fits in a `usize`.
    pub fn byte_size(self, n_elements: usize) -> Result<usize, QuantError> {
        let block = self.block_size();
        if !n_elements.is_multiple_of(block) {
            return Err(QuantError::PartialBlock {
                format: self,
                n_elements,
                block,
            });
        }
        (n_elements / block)
            .checked_mul(self.type_size())
            .ok_or(QuantError::TooLarge {
                format: self,
                n_elements,
            })
    }

    /// Whether [`quantize`] can produce this format.
    pub fn can_quantize(self) -> bool {
        QUANTIZABLE.contains(&self)
    }
}

impl fmt::Display for QuantFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Decodes a whole tensor of `n_elements` values of ggml type `type_id` from `data` into `out`,
/// which is cleared first (its allocation is reused).
///
/// Fails, without panicking, on an unknown or unsupported type id, an element count that does
/// not fill whole blocks, or a byte length that does not match the element count.
pub fn dequantize(
    type_id: u32,
    data: &[u8],
    n_elements: usize,
    out: &mut Vec<f32>,
) -> crate::Result<()> {
    let format = QuantFormat::from_type_id(type_id)?;
    check_len(format, data, n_elements)?;
    out.clear();
    out.resize(n_elements, 0.0);
    decode(format, data, out);
    Ok(())
}

/// Decodes whole blocks of `format` from `data` into `out`, one value per slot: `out.len()`
/// is the element count, and `data` must be exactly its byte size. Use it to stream a tensor a
/// row (or a few rows) at a time, slicing `data` by [`QuantFormat::byte_size`] of a row.
pub fn dequantize_into(format: QuantFormat, data: &[u8], out: &mut [f32]) -> crate::Result<()> {
    check_len(format, data, out.len())?;
    decode(format, data, out);
    Ok(())
}

/// Values per parallel task of [`quantize`]: a few MB of f32, rounded down to whole blocks.
const SLAB_VALUES: usize = 1 << 20;

/// Encodes `xs` as `format` into `out`, which is cleared first, in slabs of whole blocks on the
/// rayon pool (blocks are encoded independently). F32, F16, BF16 and the legacy formats take the
/// rounding of ggml's reference quantizers (`quantize_row_*_ref`), so the bytes match what gguf-py
/// writes; Q2_K … Q6_K take candle's quantizers (`kquants::quantize_candle`), whose blocks ggml
/// reads. Q8_K is refused.
pub fn quantize(format: QuantFormat, xs: &[f32], out: &mut Vec<u8>) -> crate::Result<()> {
    use rayon::prelude::*;
    let encode: fn(&[f32], &mut [u8]) = match format {
        QuantFormat::F32 => float::encode_f32,
        QuantFormat::F16 => float::encode_f16,
        QuantFormat::BF16 => float::encode_bf16,
        QuantFormat::Q4_0 => legacy::quantize_q4_0,
        QuantFormat::Q4_1 => legacy::quantize_q4_1,
        QuantFormat::Q5_0 => legacy::quantize_q5_0,
        QuantFormat::Q5_1 => legacy::quantize_q5_1,
        QuantFormat::Q8_0 => legacy::quantize_q8_0,
        QuantFormat::Q2_K
        | QuantFormat::Q3_K
        | QuantFormat::Q4_K
        | QuantFormat::Q5_K
        | QuantFormat::Q6_K => kquants::quantize_candle(format),
        QuantFormat::Q8_K => return Err(QuantError::CannotQuantize { format }.into()),
    };
    let n_bytes = format.byte_size(xs.len())?;
    out.clear();
    out.resize(n_bytes, 0);
    let blocks = (SLAB_VALUES / format.block_size()).max(1);
    let slab_bytes = blocks * format.type_size();
    (xs.par_chunks(blocks * format.block_size()))
        .zip(out.par_chunks_mut(slab_bytes))
        .for_each(|(x, o)| encode(x, o));
    Ok(())
}

fn check_len(format: QuantFormat, data: &[u8], n_elements: usize) -> Result<(), QuantError> {
    let expected = format.byte_size(n_elements)?;
    if data.len() != expected {
        return Err(QuantError::LengthMismatch {
            format,
            n_elements,
            expected,
            actual: data.len(),
        });
    }
    Ok(())
}

/// Dispatches to the block decoder. Lengths were checked by the caller.
fn decode(format: QuantFormat, data: &[u8], out: &mut [f32]) {
    match format {
        QuantFormat::F32 => float::decode_f32(data, out),
        QuantFormat::F16 => float::decode_f16(data, out),
        QuantFormat::BF16 => float::decode_bf16(data, out),
        QuantFormat::Q4_0 => legacy::dequantize_q4_0(data, out),
        QuantFormat::Q4_1 => legacy::dequantize_q4_1(data, out),
        QuantFormat::Q5_0 => legacy::dequantize_q5_0(data, out),
        QuantFormat::Q5_1 => legacy::dequantize_q5_1(data, out),
        QuantFormat::Q8_0 => legacy::dequantize_q8_0(data, out),
        QuantFormat::Q2_K => kquants::dequantize_q2_k(data, out),
        QuantFormat::Q3_K => kquants::dequantize_q3_k(data, out),
        QuantFormat::Q4_K => kquants::dequantize_q4_k(data, out),
        QuantFormat::Q5_K => kquants::dequantize_q5_k(data, out),
        QuantFormat::Q6_K => kquants::dequantize_q6_k(data, out),
        QuantFormat::Q8_K => kquants::dequantize_q8_k(data, out),
    }
}

/// Pairs each block of `X` inputs with its `Y` outputs: `X` bytes with `Y` values when
/// decoding, `X` values with `Y` bytes when encoding. The caller checked that the lengths agree,
/// so the conversions cannot fail.
#[inline(always)]
fn blocks<'a, A, B, const X: usize, const Y: usize>(
    input: &'a [A],
    out: &'a mut [B],
) -> impl Iterator<Item = (&'a [A; X], &'a mut [B; Y])> {
    input
        .chunks_exact(X)
        .zip(out.chunks_exact_mut(Y))
        .map(|(x, y)| {
            (
                x.try_into().expect("chunks_exact yields X items"),
                y.try_into().expect("chunks_exact_mut yields Y items"),
            )
        })
}

/// Reads a little-endian f16 at `b[0..2]` as f32.
#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

#[cfg(test)]
mod tests;
