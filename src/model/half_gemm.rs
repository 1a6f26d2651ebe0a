//! `xs @ wᵀ` with f32 activations and half-precision weights kept as stored (bf16 or f16), and
//! f32 accumulation: the product behind `--compute bf16` (issue 14), which keeps a model's
//! weights at half the memory of f32.
//!
//! The weight is never widened as a whole. Three kernels compute the product, chosen by
//! measurement per weight type and for few rows (generation) or many (`kernel.rs`, issue 34):
//! - native, with AVX512-BF16 (`vdpbf16ps`, e.g. Zen 4, Sapphire Rapids): (64 output columns ×
//!   a block of rows) tasks on the rayon pool, each packing its 64 weight rows into bf16 pairs
//!   for a 6 × 64 register-blocked kernel; the activations are rounded to bf16 (to nearest
//!   even) once per call, and every pair of products is summed in f32;
//! - widen and tiles (`widen.rs`): the weight widened to f32 by chunks or by 64-column tiles,
//!   multiplied by `gemm`'s f32 kernel.
//!
//! Which is faster depends on the CPU: idle, one core of a Sapphire Rapids retires 190 GFLOP/s
//! of f32 FMA and 89 of `vdpbf16ps`; one of a Zen 4 EPYC, 115 and 233.
//!
//! [`gemm_f32`], the single-threaded f32 product such a tile takes, also serves the attention
//! kernel.

use super::kernel::{self, Kernel, Kind};
use super::widen::{OutPtr, Widen, NR};
use half::{bf16, f16};
use rayon::prelude::*;
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// Rows per register block of the bf16 kernel.
const MR: usize = 6;
/// From this many rows a product counts as many rows (scoring windows) rather than a few
/// (generation): the two have separate kernel choices.
const MANY_ROWS: usize = 16;
/// Pairs of the inner dimension per pass of the bf16 kernel: a 64 KiB slice of the packed panel,
/// which stays in L2 while every row block runs over it.
const KC: usize = 256;

/// A `(out, in)` weight in its stored half-precision type.
#[derive(Clone, Copy)]
pub(crate) enum HalfWeight<'a> {
    Bf16(&'a [bf16]),
    F16(&'a [f16]),
}

impl HalfWeight<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            HalfWeight::Bf16(w) => w.len(),
            HalfWeight::F16(w) => w.len(),
        }
    }

    /// Element `i` as bf16 bits (f16 rounds to nearest).
    #[inline(always)]
    fn bf16_bits(&self, i: usize) -> u16 {
        match self {
            HalfWeight::Bf16(w) => w[i].to_bits(),
            HalfWeight::F16(w) => bf16::from_f32(w[i].to_f32()).to_bits(),
        }
    }

    /// Widens `out.len()` elements from `start` into `out` (f16 with the CPU's F16C conversions
    /// where it has them).
    pub(crate) fn widen(&self, start: usize, out: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        match self {
            HalfWeight::Bf16(w) => w[start..start + out.len()].convert_to_f32_slice(out),
            HalfWeight::F16(w) => w[start..start + out.len()].convert_to_f32_slice(out),
        }
    }
}

impl Widen for HalfWeight<'_> {
    fn widen(&self, start: usize, out: &mut [f32]) {
        HalfWeight::widen(self, start, out)
    }
}

thread_local! {
    static TILE: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Whether the CPU has native bf16 dot products.
pub(crate) fn has_native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `xs (rows, in) @ wᵀ` for a half-precision `w (out, in)`, as a candle op: f32 in, f32 out.
pub(crate) struct HalfMatmul;

impl candle_core::CustomOp2 for HalfMatmul {
    fn name(&self) -> &'static str {
        "half-matmul"
    }

    fn cpu_fwd(
        &self,
        xs: &candle_core::CpuStorage,
        xl: &candle_core::Layout,
        ws: &candle_core::CpuStorage,
        wl: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage as S;
        let (Some((xa, xb)), Some((wa, wb))) = (xl.contiguous_offsets(), wl.contiguous_offsets())
        else {
            candle_core::bail!("half-matmul needs contiguous operands")
        };
        let (m, k) = xl.shape().dims2()?;
        let (n, wk) = wl.shape().dims2()?;
        if wk != k {
            candle_core::bail!("half-matmul: ({m}, {k}) @ ({n}, {wk})ᵀ")
        }
        let S::F32(x) = xs else {
            candle_core::bail!("half-matmul reads f32 activations")
        };
        let w = match ws {
            S::BF16(w) => HalfWeight::Bf16(&w[wa..wb]),
            S::F16(w) => HalfWeight::F16(&w[wa..wb]),
            _ => candle_core::bail!("half-matmul reads bf16 or f16 weights"),
        };
        let out = matmul(&x[xa..xb], m, k, w, n);
        Ok((S::F32(out), candle_core::Shape::from((m, n))))
    }
}

/// `dst = lhs · rhs` on this thread, overwriting `dst`, for sizes `(m, n, k)`: `dst` is `m × n`
/// and `lhs` is `m × k`, each given with the distance between its rows (columns adjacent), and
/// `rhs` is `k × n`, given with its column and row strides.
///
/// # Safety
/// Each pointer must hold the elements its size and strides describe, and `dst` must overlap
/// neither input.
pub(crate) unsafe fn gemm_f32(
    dims: (usize, usize, usize),
    dst: (*mut f32, usize),
    lhs: (*const f32, usize),
    rhs: (*const f32, usize, usize),
) {
    // SAFETY: the caller's contract.
    unsafe { gemm_f32_with(gemm::Parallelism::None, dims, dst, lhs, rhs) }
}

/// `gemm`'s parallelism for the current rayon pool: all its threads, or none for one.
pub(crate) fn pool_parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        t if t > 1 => gemm::Parallelism::Rayon(t),
        _ => gemm::Parallelism::None,
    }
}

/// [`gemm_f32`] with the given parallelism (every element of `dst` is written).
///
/// # Safety
/// As [`gemm_f32`].
pub(crate) unsafe fn gemm_f32_with(
    par: gemm::Parallelism,
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs): (*mut f32, usize),
    (lhs, lhs_rs): (*const f32, usize),
    (rhs, rhs_cs, rhs_rs): (*const f32, usize, usize),
) {
    // SAFETY: the caller's contract; `beta = 1` with `read_dst = false` only writes `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs,
            1,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// `xs (m, k) @ w (n, k)ᵀ` → `(m, n)`, all row-major, by the kernel chosen for this kind of
/// product (measured on this one if it is the first of its kind).
pub(crate) fn matmul(xs: &[f32], m: usize, k: usize, w: HalfWeight<'_>, n: usize) -> Vec<f32> {
    assert_eq!(xs.len(), m * k, "activations are not (m, k)");
    assert_eq!(w.len(), n * k, "weight is not (n, k)");
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    let many_rows = m >= MANY_ROWS;
    let kind = Kind {
        weight: match w {
            HalfWeight::Bf16(_) => "bf16",
            HalfWeight::F16(_) => "f16",
        },
        many_rows,
    };
    // In order of preference while another kind is being measured.
    let candidates: &[Kernel] = match (has_native_bf16(), many_rows) {
        (true, true) => &[Kernel::Widen, Kernel::Native, Kernel::Tiles],
        (true, false) => &[Kernel::Native, Kernel::Tiles, Kernel::Widen],
        (false, true) => &[Kernel::Widen, Kernel::Tiles],
        (false, false) => &[Kernel::Tiles, Kernel::Widen],
    };
    // The measurement's last product by the kernel it keeps is this product's result.
    let mut last: Option<(Kernel, Vec<f32>)> = None;
    let chosen = kernel::choose(kind, [m, k, n], candidates, |kernel| {
        let t = Instant::now();
        let out = matmul_by(xs, m, k, w, n, kernel);
        let took = t.elapsed();
        last = Some((kernel, out));
        took.max(Duration::from_nanos(1))
    });
    match last {
        Some((k, out)) if k == chosen => out,
        _ => matmul_by(xs, m, k, w, n, chosen),
    }
}

/// The product by `kernel` (native only where the CPU has AVX512-BF16).
pub(crate) fn matmul_by(
    xs: &[f32],
    m: usize,
    k: usize,
    w: HalfWeight<'_>,
    n: usize,
    kernel: Kernel,
) -> Vec<f32> {
    match kernel {
        Kernel::Widen => super::widen::widened(xs, m, k, &w, n),
        Kernel::Tiles => super::widen::tiles(xs, m, k, &w, n),
        Kernel::Native => native(xs, m, k, w, n),
    }
}

/// The product by the AVX512-BF16 kernel.
#[cfg(target_arch = "x86_64")]
fn native(xs: &[f32], m: usize, k: usize, w: HalfWeight<'_>, n: usize) -> Vec<f32> {
    assert!(has_native_bf16(), "the native kernel needs AVX512-BF16");
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    let panels = n.div_ceil(NR);
    // The tiles write every element (the first slice of the inner dimension stores rather
    // than adds), so the output is not zeroed first.
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    let ptr = OutPtr(out.as_mut_ptr());
    let pairs = k.div_ceil(2);
    // SAFETY: the CPU has AVX512-BF16 (asserted).
    let xb = unsafe { x86::to_bf16_pairs(xs, m, k) };
    // Each task packs its panel once and runs all its rows, so rows are split only as far
    // as needed to give every thread several tasks.
    let want = 4 * rayon::current_num_threads();
    let chunks = want.div_ceil(panels).clamp(1, m.div_ceil(MR));
    let per = m.div_ceil(chunks).next_multiple_of(MR);
    let chunks = m.div_ceil(per);
    (0..panels * chunks).into_par_iter().for_each(|task| {
        let (panel, chunk) = (task / chunks, task % chunks);
        let rows = chunk * per..m.min((chunk + 1) * per);
        TILE.with_borrow_mut(|tile| {
            let cols = NR.min(n - panel * NR);
            match w {
                // SAFETY: the CPU has AVX-512 (it has AVX512-BF16), the panel is full and
                // `k` even, as the gather needs.
                HalfWeight::Bf16(wb) if cols == NR && k.is_multiple_of(2) => unsafe {
                    x86::pack_gather(wb, k, panel * NR, tile)
                },
                _ => pack_pairs(w, n, k, panel, tile),
            }
            let dst = ptr;
            // SAFETY: the tile and row range lie inside `xb`, `tile` and `out`, and the
            // CPU has AVX512-BF16.
            unsafe { x86::tile(&xb, pairs, rows, tile, dst.0.add(panel * NR), n, cols) };
        });
    });
    // SAFETY: every one of the `m * n` elements was written by exactly one tile.
    unsafe { out.set_len(m * n) };
    out
}

#[cfg(not(target_arch = "x86_64"))]
fn native(_: &[f32], _: usize, _: usize, _: HalfWeight<'_>, _: usize) -> Vec<f32> {
    unreachable!("the native kernel is offered only on x86-64 with AVX512-BF16")
}

/// Packs columns `panel * NR ..` of `w (n, k)` as bf16 pairs: word `p * NR + c` holds
/// `w[c, 2p]` (low half) and `w[c, 2p + 1]` (high half), zero past `n` or `k`.
fn pack_pairs(w: HalfWeight<'_>, n: usize, k: usize, panel: usize, tile: &mut Vec<u32>) {
    let pairs = k.div_ceil(2);
    tile.clear();
    tile.resize(pairs * NR, 0);
    let c0 = panel * NR;
    for c in 0..NR.min(n - c0) {
        let row = (c0 + c) * k;
        match w {
            HalfWeight::Bf16(w) if k.is_multiple_of(2) => {
                for (p, pair) in w[row..row + k].chunks_exact(2).enumerate() {
                    tile[p * NR + c] =
                        pair[0].to_bits() as u32 | ((pair[1].to_bits() as u32) << 16);
                }
            }
            _ => {
                for p in 0..pairs {
                    let lo = w.bf16_bits(row + 2 * p) as u32;
                    let hi = if 2 * p + 1 < k {
                        w.bf16_bits(row + 2 * p + 1) as u32
                    } else {
                        0
                    };
                    tile[p * NR + c] = lo | (hi << 16);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(xs: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f64> {
        (0..m * n)
            .map(|i| {
                let (r, c) = (i / n, i % n);
                (0..k)
                    .map(|j| xs[r * k + j] as f64 * w[c * k + j] as f64)
                    .sum()
            })
            .collect()
    }

    fn check(m: usize, k: usize, n: usize) {
        let xs: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let wf: Vec<f32> = (0..n * k)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
            .collect();
        let wb: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
        let wh: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
        // The exact product of the rounded weights, and a bound for rounding the activations
        // (2⁻⁹ relative each) and the weights (f16 → bf16) in f32 sums.
        let wr: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
        let want = reference(&xs, m, k, &wr, n);
        let want_bf16 = want.clone();
        let bound = k as f64 * 2.0 * (2f64).powi(-8);
        // Widened, the f16 weight is exact: its own product is the reference.
        let wh32: Vec<f32> = wh.iter().map(|v| v.to_f32()).collect();
        let want_h = reference(&xs, m, k, &wh32, n);
        let mut kernels = vec![Kernel::Widen, Kernel::Tiles];
        if has_native_bf16() {
            kernels.push(Kernel::Native);
        }
        for kernel in kernels {
            let native = kernel == Kernel::Native;
            let tol = if native { bound } else { 1e-4 };
            let paths = [
                (HalfWeight::Bf16(&wb), &want),
                (HalfWeight::F16(&wh), &want_h),
            ];
            for (w, want) in paths {
                // (The native kernel rounds f16 to bf16: compared with the bf16 product.)
                let want = if native { &want_bf16 } else { want };
                let got = matmul_by(&xs, m, k, w, n, kernel);
                for (i, (&g, &e)) in got.iter().zip(want.iter()).enumerate() {
                    assert!(
                        (g as f64 - e).abs() <= tol,
                        "({m}, {k}) × ({n}, {k}) {kernel:?}: element {i}: {g} vs {e}"
                    );
                }
            }
        }
        // The chosen kernel, whichever it is, gives the same product.
        let got = matmul(&xs, m, k, HalfWeight::Bf16(&wb), n);
        let tol = if has_native_bf16() { bound } else { 1e-4 };
        for (&g, &e) in got.iter().zip(&want) {
            assert!((g as f64 - e).abs() <= tol, "chosen: {g} vs {e}");
        }
    }

    #[test]
    fn products_match_f64_on_ragged_shapes() {
        for (m, k, n) in [
            (1, 7, 3),
            (7, 64, 65),
            (97, 33, 130),
            (13, 576, 64),
            (200, 96, 17),
            (9, 1031, 70),
            (16, 1031, 70),
            // Chunks of 64 columns, the last one 6 wide.
            (17, 1 << 15, 70),
        ] {
            check(m, k, n);
        }
    }
}
