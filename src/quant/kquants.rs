//! The k-quants: super-blocks of 256 values (`QK_K`) split into sub-blocks whose scales are
//! themselves quantized against one or two f16 super-block scales.
//!
//! | format | bytes | layout (in file order)                                | sub-blocks        |
//! |--------|-------|-------------------------------------------------------|-------------------|
//! | Q2_K   | 84    | `scales[16], qs[64], d, dmin`                         | 16 × 16, 4+4 bits |
//! | Q3_K   | 110   | `hmask[32], qs[64], scales[12], d`                    | 16 × 16, 6 bits   |
//! | Q4_K   | 144   | `d, dmin, scales[12], qs[128]`                        | 8 × 32, 6+6 bits  |
//! | Q5_K   | 176   | `d, dmin, scales[12], qh[32], qs[128]`                | 8 × 32, 6+6 bits  |
//! | Q6_K   | 210   | `ql[128], qh[64], scales[16] (i8), d`                 | 16 × 16, 8 bits   |
//! | Q8_K   | 292   | `d (f32), qs[256] (i8), bsums[16] (i16, unused here)` | none              |
//!
//! Bit positions, per element `e` of a super-block (`h = e / 128` is its half, `l = e % 32`):
//! - Q2_K: `(qs[32h + l] >> 2·((e / 32) % 4)) & 3`, scale byte `e / 16` (low nibble scale, high
//!   nibble min).
//! - Q3_K: low two bits as Q2_K; the third bit is `(hmask[l] >> (e / 32)) & 1`, and a clear bit
//!   subtracts 4. The sixteen 6-bit signed scales (offset 32) keep their low nibbles in bytes
//!   0–7 (element `i` and `i + 8` share byte `i`) and their top two bits in bytes 8–11 (scale
//!   `4s + k` in bits `2s..2s+2` of byte `8 + k`).
//! - Q4_K / Q5_K: sub-block `j` of 32 takes nibble `j % 2` of `qs[32·(j / 2) + l]`; Q5_K adds
//!   bit `j` of `qh[l]` as the fifth bit. Eight 6-bit scales and eight 6-bit mins are packed in
//!   12 bytes (see [`scale_min_k4`]).
//! - Q6_K: low nibble `(ql[64h + (e % 64)] >> 4·((e % 128) / 64)) & 15`, high two bits
//!   `(qh[32h + l] >> 2·((e % 128) / 32)) & 3`, minus 32; scale `e / 16`.
//!
//! Every product is formed in the order ggml's `dequantize_row_*` uses (sub-block scale first,
//! then times the quant), so results match it bit for bit.

use super::{blocks, f16_at, QuantFormat, QK_K};
use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, GgmlType as CandleBlock,
};

pub const Q2_K_BYTES: usize = QK_K / 16 + QK_K / 4 + 4;
pub const Q3_K_BYTES: usize = QK_K / 8 + QK_K / 4 + 12 + 2;
pub const Q4_K_BYTES: usize = 4 + 12 + QK_K / 2;
pub const Q5_K_BYTES: usize = 4 + 12 + QK_K / 8 + QK_K / 2;
pub const Q6_K_BYTES: usize = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;
pub const Q8_K_BYTES: usize = 4 + QK_K + 2 * (QK_K / 16);

pub(super) fn dequantize_q2_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in blocks::<_, _, Q2_K_BYTES, QK_K>(data, out) {
        let scales = &b[0..16];
        let qs = &b[16..80];
        let d = f16_at(b, 80);
        let dmin = f16_at(b, 82);
        for (g, ys) in y.chunks_exact_mut(16).enumerate() {
            let sc = scales[g];
            let dl = d * (sc & 0x0F) as f32;
            let ml = dmin * (sc >> 4) as f32;
            let e0 = 16 * g;
            let shift = 2 * ((e0 / 32) % 4);
            let q = &qs[32 * (e0 / 128) + e0 % 32..][..16];
            for (yl, &ql) in ys.iter_mut().zip(q) {
                *yl = dl * ((ql >> shift) & 3) as f32 - ml;
            }
        }
    }
}

/// The sixteen signed 6-bit scales of a Q3_K block.
fn scales_q3_k(packed: &[u8]) -> [i8; 16] {
    std::array::from_fn(|i| {
        let low = (packed[i % 8] >> (4 * (i / 8))) & 0x0F;
        let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        ((low | (high << 4)) as i8) - 32
    })
}

pub(super) fn dequantize_q3_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in blocks::<_, _, Q3_K_BYTES, QK_K>(data, out) {
        let hmask = &b[0..32];
        let qs = &b[32..96];
        let scales = scales_q3_k(&b[96..108]);
        let d = f16_at(b, 108);
        for (g, ys) in y.chunks_exact_mut(16).enumerate() {
            let dl = d * scales[g] as f32;
            let e0 = 16 * g;
            let shift = 2 * ((e0 / 32) % 4);
            let bit = e0 / 32;
            let l0 = e0 % 32;
            let q = &qs[32 * (e0 / 128) + l0..][..16];
            let hm = &hmask[l0..l0 + 16];
            for ((yl, &ql), &h) in ys.iter_mut().zip(q).zip(hm) {
                let low = ((ql >> shift) & 3) as i32;
                let v = if (h >> bit) & 1 != 0 { low } else { low - 4 };
                *yl = dl * v as f32;
            }
        }
    }
}

/// Scale and min of sub-block `j` (0..8) from the 12 packed bytes of Q4_K / Q5_K
/// (`get_scale_min_k4` in ggml): for `j < 4` the low six bits of bytes `j` and `j + 4`; for
/// `j ≥ 4` a nibble of byte `j + 4` plus the top two bits of bytes `j − 4` and `j`.
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        let sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (sc, m)
    }
}

pub(super) fn dequantize_q4_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in blocks::<_, _, Q4_K_BYTES, QK_K>(data, out) {
        dequantize_k4_block(b, &[0; 32], &b[16..144], y);
    }
}

pub(super) fn dequantize_q5_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in blocks::<_, _, Q5_K_BYTES, QK_K>(data, out) {
        dequantize_k4_block(b, &b[16..48], &b[48..176], y);
    }
}

/// One Q4_K or Q5_K super-block: f16 `d` and `dmin`, twelve bytes of 6-bit scales and mins for
/// eight groups of 32, low nibbles `qs`, and in `qh` bit `j` of each byte the fifth bit of group
/// `j`'s values (all zero for Q4_K, which has none).
#[inline(always)]
fn dequantize_k4_block(b: &[u8], qh: &[u8], qs: &[u8], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    for (j, ys) in y.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(j, scales);
        let d1 = d * sc as f32;
        let m1 = dmin * m as f32;
        let shift = 4 * (j % 2);
        let q = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        for ((yl, &ql), &h) in ys.iter_mut().zip(q).zip(qh) {
            let v = ((ql >> shift) & 0x0F) | (((h >> j) & 1) << 4);
            *yl = d1 * v as f32 - m1;
        }
    }
}

pub(super) fn dequantize_q6_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in blocks::<_, _, Q6_K_BYTES, QK_K>(data, out) {
        let ql = &b[0..128];
        let qh = &b[128..192];
        let scales = &b[192..208];
        let d = f16_at(b, 208);
        for (g, ys) in y.chunks_exact_mut(16).enumerate() {
            let dl = d * (scales[g] as i8) as f32;
            let e0 = 16 * g;
            let h = e0 / 128;
            let r = e0 % 128;
            let lo = &ql[64 * h + e0 % 64..][..16];
            let hi = &qh[32 * h + e0 % 32..][..16];
            let (lo_shift, hi_shift) = (4 * (r / 64), 2 * (r / 32));
            for ((yl, &a), &c) in ys.iter_mut().zip(lo).zip(hi) {
                let q = (((a >> lo_shift) & 0x0F) | (((c >> hi_shift) & 0x03) << 4)) as i32 - 32;
                *yl = dl * q as f32;
            }
        }
    }
}

pub(super) fn dequantize_q8_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in blocks::<_, _, Q8_K_BYTES, QK_K>(data, out) {
        let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        for (yj, &q) in y.iter_mut().zip(&b[4..4 + QK_K]) {
            *yj = d * q as i8 as f32;
        }
    }
}

/// The encoder [`super::quantize`] runs for a k-quant `format` (Q2_K … Q6_K): candle's
/// `from_float` for the block type, written into the caller's bytes. candle's blocks are
/// `#[repr(C)]` images of ggml's (`tests/convert_quant.rs` decodes them with the decoders above).
///
/// # Panics
/// For a format that is not Q2_K … Q6_K; [`super::quantize`] asks only for those.
pub(super) fn quantize_candle(format: QuantFormat) -> fn(&[f32], &mut [u8]) {
    match format {
        QuantFormat::Q2_K => encode_blocks::<BlockQ2K, Q2_K_BYTES>,
        QuantFormat::Q3_K => encode_blocks::<BlockQ3K, Q3_K_BYTES>,
        QuantFormat::Q4_K => encode_blocks::<BlockQ4K, Q4_K_BYTES>,
        QuantFormat::Q5_K => encode_blocks::<BlockQ5K, Q5_K_BYTES>,
        QuantFormat::Q6_K => encode_blocks::<BlockQ6K, Q6_K_BYTES>,
        other => unreachable!("{other} is not a k-quant candle encodes"),
    }
}

/// Encodes whole super-blocks of `xs` into `out` (`BYTES` per block of [`QK_K`] values).
fn encode_blocks<B: CandleBlock, const BYTES: usize>(xs: &[f32], out: &mut [u8]) {
    assert_eq!(
        std::mem::size_of::<B>(),
        BYTES,
        "candle's block is ggml's size"
    );
    let n = xs.len() / QK_K;
    let mut blocks = vec![B::zeros(); n];
    B::from_float(&xs[..n * QK_K], &mut blocks);
    // SAFETY: `B` is a `#[repr(C)]` plain-data block of `BYTES` bytes (asserted above), so the
    // `n` blocks are `n * BYTES` initialised bytes.
    let bytes = unsafe { std::slice::from_raw_parts(blocks.as_ptr() as *const u8, n * BYTES) };
    out.copy_from_slice(bytes);
}
