//! The AVX512-BF16 kernel behind [`super::matmul`] for a few rows (generation): activations
//! rounded to bf16 pairs, weight panels packed (or gathered) as bf16 pairs, and an `R × 64`
//! register block of `vdpbf16ps` accumulators.

use super::{KC, MR, NR};
use std::arch::x86_64::*;

/// Rounds `xs (m, k)` to bf16 pairs, `(m, ceil(k / 2))` words, zero-padding odd `k`.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn to_bf16_pairs(xs: &[f32], m: usize, k: usize) -> Vec<u32> {
    let pairs = k.div_ceil(2);
    let mut out = vec![0u32; m * pairs];
    for (row, dst) in xs.chunks_exact(k).zip(out.chunks_exact_mut(pairs)) {
        let mut i = 0;
        while i + 32 <= k {
            // SAFETY: 32 floats from `i` are in the row; 16 words from `i / 2` are in `dst`.
            unsafe {
                let a = _mm512_loadu_ps(row.as_ptr().add(i));
                let b = _mm512_loadu_ps(row.as_ptr().add(i + 16));
                // Element j of the result is b's lane j - 16 above a's lanes: pairs stay in order.
                let v: __m512bh = _mm512_cvtne2ps_pbh(b, a);
                _mm512_storeu_si512(
                    dst.as_mut_ptr().add(i / 2) as *mut _,
                    std::mem::transmute::<__m512bh, __m512i>(v),
                );
            }
            i += 32;
        }
        while i < k {
            let lo = half::bf16::from_f32(row[i]).to_bits() as u32;
            let hi = row
                .get(i + 1)
                .map_or(0, |&x| half::bf16::from_f32(x).to_bits() as u32);
            dst[i / 2] = lo | (hi << 16);
            i += 2;
        }
    }
    out
}

/// [`super::pack_pairs`] for a full panel of a bf16 weight with even `k`: each group of 16
/// columns' pair `p` is one 32-bit gather, instead of 16 scalar loads and stores.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_gather(w: &[half::bf16], k: usize, c0: usize, tile: &mut Vec<u32>) {
    let pairs = k / 2;
    assert!((c0 + NR) * k <= w.len() && pairs * NR < i32::MAX as usize);
    tile.clear();
    tile.reserve(pairs * NR);
    let base = w[c0 * k..].as_ptr() as *const i32;
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let stride = _mm512_set1_epi32(pairs as i32);
    let idx: [__m512i; 4] = std::array::from_fn(|g| {
        _mm512_mullo_epi32(
            _mm512_add_epi32(lanes, _mm512_set1_epi32(16 * g as i32)),
            stride,
        )
    });
    let out = tile.as_mut_ptr();
    for p in 0..pairs {
        let off = _mm512_set1_epi32(p as i32);
        for (g, &i) in idx.iter().enumerate() {
            // SAFETY: word `(c * pairs + p)` of the panel's rows lies in `w` (asserted), and
            // `tile` has room for `pairs * NR` words.
            unsafe {
                let v = _mm512_i32gather_epi32::<4>(_mm512_add_epi32(i, off), base);
                _mm512_storeu_si512(out.add(p * NR + 16 * g) as *mut _, v);
            }
        }
    }
    // SAFETY: every word was written above.
    unsafe { tile.set_len(pairs * NR) };
}

/// Rows `rows` of `xb` times one packed panel, into `dst` (row stride `ld`), writing the
/// first `cols` columns.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn tile(
    xb: &[u32],
    pairs: usize,
    rows: std::ops::Range<usize>,
    panel: &[u32],
    dst: *mut f32,
    ld: usize,
    cols: usize,
) {
    let mut p0 = 0;
    while p0 < pairs {
        let kc = KC.min(pairs - p0);
        let slab = &panel[p0 * NR..(p0 + kc) * NR];
        let add = p0 > 0;
        let mut r = rows.start;
        while r < rows.end {
            let h = MR.min(rows.end - r);
            let x = &xb[r * pairs + p0..];
            // SAFETY: forwarded from the caller.
            unsafe {
                let d = dst.add(r * ld);
                match h {
                    6 => block::<6>(x, pairs, kc, slab, d, ld, cols, add),
                    5 => block::<5>(x, pairs, kc, slab, d, ld, cols, add),
                    4 => block::<4>(x, pairs, kc, slab, d, ld, cols, add),
                    3 => block::<3>(x, pairs, kc, slab, d, ld, cols, add),
                    2 => block::<2>(x, pairs, kc, slab, d, ld, cols, add),
                    _ => block::<1>(x, pairs, kc, slab, d, ld, cols, add),
                }
            }
            r += h;
        }
        p0 += kc;
    }
}

/// `R` rows × 64 columns over `kc` pairs: 4R accumulators, four panel loads and R broadcasts
/// per pair; `add` accumulates onto what `dst` holds (later slices of the inner dimension).
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn block<const R: usize>(
    x: &[u32],
    pairs: usize,
    kc: usize,
    panel: &[u32],
    dst: *mut f32,
    ld: usize,
    cols: usize,
    add: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    if add {
        for (r, acc) in acc.iter_mut().enumerate() {
            for (c, v) in acc.iter_mut().enumerate() {
                let c0 = c * 16;
                if c0 >= cols {
                    break;
                }
                let mask = if cols - c0 >= 16 {
                    u16::MAX
                } else {
                    ((1u32 << (cols - c0)) - 1) as u16
                };
                // SAFETY: the first `cols` columns of row `r` belong to this tile.
                *v = unsafe { _mm512_maskz_loadu_ps(mask, dst.add(r * ld + c0)) };
            }
        }
    }
    let xp = x.as_ptr();
    let pp = panel.as_ptr();
    for p in 0..kc {
        // SAFETY: `panel` holds `kc * NR` words, and `x` has `R` rows of stride `pairs`
        // with at least `kc` words left in each.
        unsafe {
            let b: [__m512bh; 4] = [
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    pp.add(p * NR) as *const _
                )),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    pp.add(p * NR + 16) as *const _
                )),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    pp.add(p * NR + 32) as *const _
                )),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    pp.add(p * NR + 48) as *const _
                )),
            ];
            for (r, acc) in acc.iter_mut().enumerate() {
                let a: __m512bh = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                    *xp.add(r * pairs + p) as i32,
                ));
                for (c, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_dpbf16_ps(*acc, a, b[c]);
                }
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (c, &v) in acc.iter().enumerate() {
            let c0 = c * 16;
            if c0 >= cols {
                break;
            }
            let left = cols - c0;
            // SAFETY: the first `cols` columns of row `r` belong to this tile.
            unsafe {
                let at = dst.add(r * ld + c0);
                if left >= 16 {
                    _mm512_storeu_ps(at, v);
                } else {
                    _mm512_mask_storeu_ps(at, ((1u32 << left) - 1) as u16, v);
                }
            }
        }
    }
}
