//! The legacy ggml formats: blocks of 32 values sharing one f16 scale (and, for the `_1` kinds,
//! an f16 minimum).
//!
//! | format | bytes | layout                | value        |
//! |--------|-------|-----------------------|--------------|
//! | Q4_0   | 18    | `d, qs[16]`           | d · (q − 8)  |
//! | Q4_1   | 20    | `d, m, qs[16]`        | d · q + m    |
//! | Q5_0   | 22    | `d, qh[4], qs[16]`    | d · (q − 16) |
//! | Q5_1   | 24    | `d, m, qh[4], qs[16]` | d · q + m    |
//! | Q8_0   | 34    | `d, qs[32] (i8)`      | d · q        |
//!
//! Nibbles: byte `j` of `qs` holds element `j` in its low nibble and element `j + 16` in its
//! high nibble. The Q5 fifth bits are a little-endian u32 `qh` whose bit `i` belongs to element
//! `i`. Quantizers follow ggml's `quantize_row_*_ref` roundings exactly.

use super::{blocks, f16_at};
use half::f16;

/// Elements per block (`QK4_0` = `QK4_1` = `QK5_0` = `QK5_1` = `QK8_0`).
pub const QK: usize = 32;
pub const Q4_0_BYTES: usize = 2 + QK / 2;
pub const Q4_1_BYTES: usize = 4 + QK / 2;
pub const Q5_0_BYTES: usize = 2 + 4 + QK / 2;
pub const Q5_1_BYTES: usize = 4 + 4 + QK / 2;
pub const Q8_0_BYTES: usize = 2 + QK;

pub(super) fn dequantize_q4_0(data: &[u8], out: &mut [f32]) {
    for (b, y) in blocks::<_, _, Q4_0_BYTES, QK>(data, out) {
        let d = f16_at(b, 0);
        let qs = &b[2..];
        for j in 0..QK / 2 {
            y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
            y[j + QK / 2] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub(super) fn dequantize_q4_1(data: &[u8], out: &mut [f32]) {
    for (b, y) in blocks::<_, _, Q4_1_BYTES, QK>(data, out) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qs = &b[4..];
        for j in 0..QK / 2 {
            y[j] = (qs[j] & 0x0F) as f32 * d + m;
            y[j + QK / 2] = (qs[j] >> 4) as f32 * d + m;
        }
    }
}

/// The five-bit values `j` and `j + 16` of a Q5 block: low nibbles from `qs[j]`, fifth bits from
/// `qh` (the inverse of [`pack_q5`]).
#[inline(always)]
fn q5_pair(qh: u32, qs: &[u8], j: usize) -> (u32, u32) {
    let lo = (qs[j] & 0x0F) as u32 | (((qh >> j) & 1) << 4);
    let hi = (qs[j] >> 4) as u32 | (((qh >> (j + QK / 2)) & 1) << 4);
    (lo, hi)
}

pub(super) fn dequantize_q5_0(data: &[u8], out: &mut [f32]) {
    for (b, y) in blocks::<_, _, Q5_0_BYTES, QK>(data, out) {
        let d = f16_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..];
        for j in 0..QK / 2 {
            let (q0, q1) = q5_pair(qh, qs, j);
            y[j] = (q0 as i32 - 16) as f32 * d;
            y[j + QK / 2] = (q1 as i32 - 16) as f32 * d;
        }
    }
}

pub(super) fn dequantize_q5_1(data: &[u8], out: &mut [f32]) {
    for (b, y) in blocks::<_, _, Q5_1_BYTES, QK>(data, out) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let qs = &b[8..];
        for j in 0..QK / 2 {
            let (q0, q1) = q5_pair(qh, qs, j);
            y[j] = q0 as f32 * d + m;
            y[j + QK / 2] = q1 as f32 * d + m;
        }
    }
}

pub(super) fn dequantize_q8_0(data: &[u8], out: &mut [f32]) {
    for (b, y) in blocks::<_, _, Q8_0_BYTES, QK>(data, out) {
        let d = f16_at(b, 0);
        for (yj, &q) in y.iter_mut().zip(&b[2..]) {
            *yj = q as i8 as f32 * d;
        }
    }
}

/// The value of largest magnitude (the first one, on ties), keeping its sign.
fn signed_absmax(x: &[f32; QK]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn min_max(x: &[f32; QK]) -> (f32, f32) {
    let mut min = f32::INFINITY;
    let mut max = f32::NEG_INFINITY;
    for &v in x {
        min = min.min(v);
        max = max.max(v);
    }
    (min, max)
}

fn inverse(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

/// `(int)(v)` followed by `MIN(hi, ·)`, as ggml writes it; the lower bound only guards NaN and
/// rounding noise, which ggml leaves undefined.
fn trunc_clamp(v: f32, hi: i32) -> u8 {
    (v as i32).clamp(0, hi) as u8
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// The `_0` kinds' header: the scale `d = signed_absmax / levels` as f16 at `b[0..2]`. Returns
/// `1 / d`.
fn put_scale(x: &[f32; QK], b: &mut [u8], levels: f32) -> f32 {
    let d = signed_absmax(x) / levels;
    put_f16(b, 0, d);
    inverse(d)
}

/// The `_1` kinds' header: the scale `d = (max − min) / levels` and `min`, as f16 at `b[0..4]`.
/// Returns `min` and `1 / d`.
fn put_scale_min(x: &[f32; QK], b: &mut [u8], levels: f32) -> (f32, f32) {
    let (min, max) = min_max(x);
    let d = (max - min) / levels;
    put_f16(b, 0, d);
    put_f16(b, 2, min);
    (min, inverse(d))
}

pub(super) fn quantize_q4_0(xs: &[f32], out: &mut [u8]) {
    for (x, b) in blocks::<_, _, QK, Q4_0_BYTES>(xs, out) {
        let id = put_scale(x, b, -8.0);
        for j in 0..QK / 2 {
            let q0 = trunc_clamp(x[j] * id + 8.5, 15);
            let q1 = trunc_clamp(x[j + QK / 2] * id + 8.5, 15);
            b[2 + j] = q0 | (q1 << 4);
        }
    }
}

pub(super) fn quantize_q4_1(xs: &[f32], out: &mut [u8]) {
    for (x, b) in blocks::<_, _, QK, Q4_1_BYTES>(xs, out) {
        let (min, id) = put_scale_min(x, b, 15.0);
        for j in 0..QK / 2 {
            let q0 = trunc_clamp((x[j] - min) * id + 0.5, 15);
            let q1 = trunc_clamp((x[j + QK / 2] - min) * id + 0.5, 15);
            b[4 + j] = q0 | (q1 << 4);
        }
    }
}

/// Packs 32 five-bit values: low nibbles in `qs`, fifth bits in the u32 `qh`.
fn pack_q5(q: &[u8; QK], qh: &mut [u8], qs: &mut [u8]) {
    let mut h = 0u32;
    for (i, &v) in q.iter().enumerate() {
        h |= ((v as u32 >> 4) & 1) << i;
    }
    qh.copy_from_slice(&h.to_le_bytes());
    for j in 0..QK / 2 {
        qs[j] = (q[j] & 0x0F) | ((q[j + QK / 2] & 0x0F) << 4);
    }
}

pub(super) fn quantize_q5_0(xs: &[f32], out: &mut [u8]) {
    for (x, b) in blocks::<_, _, QK, Q5_0_BYTES>(xs, out) {
        let id = put_scale(x, b, -16.0);
        let q: [u8; QK] = std::array::from_fn(|j| trunc_clamp(x[j] * id + 16.5, 31));
        let (qh, qs) = b[2..].split_at_mut(4);
        pack_q5(&q, qh, qs);
    }
}

pub(super) fn quantize_q5_1(xs: &[f32], out: &mut [u8]) {
    for (x, b) in blocks::<_, _, QK, Q5_1_BYTES>(xs, out) {
        let (min, id) = put_scale_min(x, b, 31.0);
        let q: [u8; QK] = std::array::from_fn(|j| trunc_clamp((x[j] - min) * id + 0.5, 31));
        let (qh, qs) = b[4..].split_at_mut(4);
        pack_q5(&q, qh, qs);
    }
}

pub(super) fn quantize_q8_0(xs: &[f32], out: &mut [u8]) {
    for (x, b) in blocks::<_, _, QK, Q8_0_BYTES>(xs, out) {
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = inverse(d);
        put_f16(b, 0, d);
        for (q, &v) in b[2..].iter_mut().zip(x) {
            // `roundf` rounds halves away from zero, as `f32::round` does.
            *q = ((v * id).round() as i8) as u8;
        }
    }
}
