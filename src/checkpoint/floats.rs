//! The one f32 → F32/F16/BF16 encoder (issue 25), for everything that writes floats: GGUF
//! tensors (`quant`, healed GGUF tensors, `convert --to gguf`) and safetensors shards (`prune
//! --dtype`). It lives here, the lowest floor all of them import.
//!
//! Both 16-bit types use the `half` crate, bit for bit what this project wrote before in four
//! places: f32 → f16 rounds to nearest even (values past ±65504 become ±infinity) through
//! `half`'s slice conversion (F16C / NEON when the CPU has them; the test below checks it equals
//! the scalar conversion on every class of input); f32 → bf16 rounds to nearest even and keeps
//! NaNs quiet, as ggml's `ggml_compute_fp32_to_bf16` and gguf-py do.

use super::gguf::GgmlType;
use super::safetensors::Dtype;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// The float types written from f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Float {
    F32,
    F16,
    BF16,
}

impl Float {
    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            Float::F32 => 4,
            Float::F16 | Float::BF16 => 2,
        }
    }

    /// The float type of a safetensors dtype, if it is one of the three.
    pub fn of_dtype(d: Dtype) -> Option<Float> {
        match d {
            Dtype::F32 => Some(Float::F32),
            Dtype::F16 => Some(Float::F16),
            Dtype::BF16 => Some(Float::BF16),
            _ => None,
        }
    }

    /// The float type of a ggml type, if it is one of the three.
    pub fn of_ggml(t: GgmlType) -> Option<Float> {
        match t {
            GgmlType::F32 => Some(Float::F32),
            GgmlType::F16 => Some(Float::F16),
            GgmlType::BF16 => Some(Float::BF16),
            _ => None,
        }
    }
}

/// Values converted per pass through the stack buffer of the f16 path.
const CHUNK: usize = 512;

/// Writes `xs` as little-endian `to` into `out`, which holds exactly `to.size()` bytes per value
/// (extra bytes are left alone).
pub fn encode_into(xs: &[f32], to: Float, out: &mut [u8]) {
    match to {
        Float::F32 => {
            for (b, x) in out.chunks_exact_mut(4).zip(xs) {
                b.copy_from_slice(&x.to_le_bytes());
            }
        }
        Float::F16 => {
            let mut halves = [f16::ZERO; CHUNK];
            for (bs, x) in out.chunks_mut(2 * CHUNK).zip(xs.chunks(CHUNK)) {
                let halves = &mut halves[..x.len()];
                halves.convert_from_f32_slice(x);
                for (b, h) in bs.chunks_exact_mut(2).zip(halves.iter()) {
                    b.copy_from_slice(&h.to_bits().to_le_bytes());
                }
            }
        }
        Float::BF16 => {
            for (b, x) in out.chunks_exact_mut(2).zip(xs) {
                b.copy_from_slice(&bf16::from_f32(*x).to_bits().to_le_bytes());
            }
        }
    }
}

/// `xs` as little-endian `to`, appended to `out`.
pub fn encode_extend(xs: &[f32], to: Float, out: &mut Vec<u8>) {
    let at = out.len();
    out.resize(at + to.size() * xs.len(), 0);
    encode_into(xs, to, &mut out[at..]);
}

/// `xs` as little-endian `to`.
pub fn encode(xs: &[f32], to: Float) -> Vec<u8> {
    let mut out = Vec::new();
    encode_extend(xs, to, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every class of f32: zeros, subnormals of both types, values that round to a tie in f16
    /// and bf16, the largest finite f16 and just past it, infinities, quiet and signalling NaNs
    /// with payloads, and a sweep of bit patterns across the whole range.
    fn inputs() -> Vec<f32> {
        let mut bits: Vec<u32> = vec![
            0,
            0x8000_0000,
            1,
            0x0000_1000,
            0x3380_0000, // 2^-24, the smallest f16 subnormal
            0x3300_0000, // half of it: a tie, rounds to 0
            0x3f80_1000, // 1 + 2^-11: an f16 tie, to even
            0x3f80_3000,
            0x3f80_8000, // 1 + 2^-8: a bf16 tie, to even
            0x3f81_8000,
            0x477f_e000, // 65504
            0x477f_f000, // a tie between 65504 and 65536 → inf
            0x7f80_0000,
            0xff80_0000,
            0x7fc0_0000,
            0x7f80_0001, // signalling NaN, low payload
            0x7fa0_0000, // signalling NaN, high payload
            0xffc1_2345,
            0x7f7f_ffff,
        ];
        let mut x = 0x9e37_79b9u32;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bits.push(x);
        }
        bits.into_iter().map(f32::from_bits).collect()
    }

    #[test]
    fn the_slice_encoder_equals_the_scalar_conversions_bit_for_bit() {
        let xs = inputs();
        let h = encode(&xs, Float::F16);
        let b = encode(&xs, Float::BF16);
        for (i, &x) in xs.iter().enumerate() {
            let hs = f16::from_f32(x).to_bits().to_le_bytes();
            assert_eq!(&h[2 * i..2 * i + 2], &hs, "f16 of {:#010x}", x.to_bits());
            let bs = bf16::from_f32(x).to_bits().to_le_bytes();
            assert_eq!(&b[2 * i..2 * i + 2], &bs, "bf16 of {:#010x}", x.to_bits());
        }
        let f = encode(&xs, Float::F32);
        assert!(f
            .chunks_exact(4)
            .zip(&xs)
            .all(|(c, x)| c == x.to_le_bytes()));
    }

    #[test]
    fn rounding_and_nan_follow_ggml() {
        let h = |x: f32| u16::from_le_bytes(encode(&[x], Float::F16)[..2].try_into().unwrap());
        let b = |x: f32| u16::from_le_bytes(encode(&[x], Float::BF16)[..2].try_into().unwrap());
        assert_eq!(h(1.0 + 1.0 / 2048.0), 0x3c00); // tie to even (down)
        assert_eq!(h(1.0 + 3.0 / 2048.0), 0x3c02); // tie to even (up)
        assert_eq!(h(65520.0), 0x7c00); // past the largest f16: infinity
        assert_eq!(b(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(b(1.0 + 3.0 / 256.0), 0x3f82);
        // A signalling NaN stays a NaN (quiet bit set), never becomes infinity.
        assert_eq!(b(f32::from_bits(0x7f80_0001)) & 0x7fc0, 0x7fc0);
        assert_eq!(h(f32::from_bits(0x7f80_0001)) & 0x7e00, 0x7e00);
        let mut v = vec![9u8];
        encode_extend(&[1.0], Float::BF16, &mut v);
        assert_eq!(v, [9, 0x80, 0x3f]);
    }
}
