//! The unquantized formats: F32, F16 and BF16, all little-endian, one value per "block".
//!
//! Decoding F16 uses the `half` crate's slice conversions (F16C / NEON when the CPU has them)
//! through a small stack buffer, because GGUF tensor data need not be 2-byte aligned in memory.
//! Encoding is the project's one f32 → F32/F16/BF16 encoder, [`crate::checkpoint::floats`].

use crate::checkpoint::floats::{encode, encode_into, Float};
use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

/// Values converted per pass through the stack buffer.
const CHUNK: usize = 512;

pub(super) fn decode_f32(data: &[u8], out: &mut [f32]) {
    for (y, b) in out.iter_mut().zip(data.chunks_exact(4)) {
        *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

pub(super) fn decode_f16(data: &[u8], out: &mut [f32]) {
    let mut bits = [0u16; CHUNK];
    for (ys, bs) in out.chunks_mut(CHUNK).zip(data.chunks(2 * CHUNK)) {
        let bits = &mut bits[..ys.len()];
        for (v, b) in bits.iter_mut().zip(bs.chunks_exact(2)) {
            *v = u16::from_le_bytes([b[0], b[1]]);
        }
        bits.reinterpret_cast::<f16>().convert_to_f32_slice(ys);
    }
}

pub(super) fn decode_bf16(data: &[u8], out: &mut [f32]) {
    for (y, b) in out.iter_mut().zip(data.chunks_exact(2)) {
        *y = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
    }
}

pub(super) fn encode_f32(xs: &[f32], out: &mut [u8]) {
    encode_into(xs, Float::F32, out)
}

pub(super) fn encode_f16(xs: &[f32], out: &mut [u8]) {
    encode_into(xs, Float::F16, out)
}

pub(super) fn encode_bf16(xs: &[f32], out: &mut [u8]) {
    encode_into(xs, Float::BF16, out)
}

/// `xs` as little-endian IEEE half floats (2 bytes each), rounded to nearest even; values past
/// ±65504 become ±infinity. For writing F16 safetensors or GGUF tensors.
pub fn f32_to_f16_bytes(xs: &[f32]) -> Vec<u8> {
    encode(xs, Float::F16)
}

/// `xs` as little-endian bfloat16 (2 bytes each), rounded to nearest even with NaNs kept quiet.
pub fn f32_to_bf16_bytes(xs: &[f32]) -> Vec<u8> {
    encode(xs, Float::BF16)
}
