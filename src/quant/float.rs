//! The unquantized formats: F32, F16 and BF16, all little-endian, one value per "block".
//!
//! F16 uses the `half` crate's slice conversions (F16C / NEON when the CPU has them) through a
//! small stack buffer, because GGUF tensor data need not be 2-byte aligned in memory.
//! f32 → bf16 rounds to nearest even and quiets NaNs, as ggml's `ggml_compute_fp32_to_bf16` and
//! gguf-py do; f32 → f16 rounds to nearest even.

use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use half::{bf16, f16};

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
    for (b, x) in out.chunks_exact_mut(4).zip(xs) {
        b.copy_from_slice(&x.to_le_bytes());
    }
}

pub(super) fn encode_f16(xs: &[f32], out: &mut [u8]) {
    let mut halves = [f16::ZERO; CHUNK];
    for (bs, x) in out.chunks_mut(2 * CHUNK).zip(xs.chunks(CHUNK)) {
        let halves = &mut halves[..x.len()];
        halves.convert_from_f32_slice(x);
        for (b, h) in bs.chunks_exact_mut(2).zip(halves.iter()) {
            b.copy_from_slice(&h.to_bits().to_le_bytes());
        }
    }
}

pub(super) fn encode_bf16(xs: &[f32], out: &mut [u8]) {
    for (b, x) in out.chunks_exact_mut(2).zip(xs) {
        b.copy_from_slice(&bf16::from_f32(*x).to_bits().to_le_bytes());
    }
}

/// `xs` as little-endian IEEE half floats (2 bytes each), rounded to nearest even; values past
/// ±65504 become ±infinity. For writing F16 safetensors or GGUF tensors.
pub fn f32_to_f16_bytes(xs: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; 2 * xs.len()];
    encode_f16(xs, &mut out);
    out
}

/// `xs` as little-endian bfloat16 (2 bytes each), rounded to nearest even with NaNs kept quiet.
pub fn f32_to_bf16_bytes(xs: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; 2 * xs.len()];
    encode_bf16(xs, &mut out);
    out
}
