//! The two kernels that multiply f32 activations by a weight stored narrower than f32 (16-bit
//! floats, ggml blocks) by widening it to f32 piecewise and running `gemm`'s f32 kernel on the
//! pieces: [`widened`] (chunks of a few MiB, the GEMM on the whole pool) and [`tiles`] (one
//! 64-column panel per task, widened into a tile of the task's own that stays in cache). Which
//! one runs is chosen by measurement (`kernel.rs`); both give the exact product of the widened
//! weight, summed in a different order.

use super::half_gemm::{gemm_f32, gemm_f32_with, pool_parallelism};
use rayon::prelude::*;
use std::cell::RefCell;

/// Output columns per tile (four 16-lane registers).
pub(crate) const NR: usize = 64;
/// The most f32 values a widened chunk of [`widened`] holds (4 MiB).
const CHUNK_VALUES: usize = 1 << 20;

/// A `(n, k)` weight that can be read as f32, a whole number of rows at a time.
pub(crate) trait Widen: Sync {
    /// Widens `out.len()` values from element `start` into `out`; `start` and `out.len()` are
    /// multiples of the row length.
    fn widen(&self, start: usize, out: &mut [f32]);
}

thread_local! {
    static CHUNK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static WIDE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: each task writes only its own rows × columns.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `xs (m, k) @ w (n, k)ᵀ` → `(m, n)`: the weight is widened to f32 a chunk of output columns at
/// a time (at most [`CHUNK_VALUES`] values, held in one buffer reused across calls on this
/// thread), each chunk widened on the pool and multiplied by `gemm`'s f32 kernel on the pool.
/// Widening is one pass over the chunk, against `m` multiply-adds per value.
pub(crate) fn widened(xs: &[f32], m: usize, k: usize, w: &dyn Widen, n: usize) -> Vec<f32> {
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    let nc = (CHUNK_VALUES / k).clamp(NR, n.next_multiple_of(NR)).min(n);
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    // Taken out of its cell for the call: the pool may run another product on this thread
    // while it waits, and that one then widens into a buffer of its own.
    let mut buf = CHUNK.take();
    for c0 in (0..n).step_by(nc) {
        let cols = nc.min(n - c0);
        buf.resize(cols * k, 0.0);
        let wide = &mut buf[..cols * k];
        // A few rows of the weight per task: the widening is memory-bound.
        let per = (1 << 14) / k + 1;
        wide.par_chunks_mut(per * k)
            .enumerate()
            .for_each(|(i, dst)| w.widen((c0 + i * per) * k, dst));
        // SAFETY: `out` has room for `m × n` elements (row stride `n`); this chunk writes its
        // `cols` columns from `c0` in every row, and with `read_dst = false` gemm only writes
        // them, every one, so once all chunks ran every element was written. `xs` is `m × k`
        // (row stride `k`) and `wide` is `cols × k`, read as the `k × cols` matrix `wideᵀ`.
        unsafe {
            gemm_f32_with(
                pool_parallelism(),
                (m, cols, k),
                (out.as_mut_ptr().add(c0), n),
                (xs.as_ptr(), k),
                (wide.as_ptr(), k, 1),
            );
        }
    }
    if buf.len() <= CHUNK_VALUES {
        // (A long inner dimension makes a chunk of `NR` columns larger than the cap: let it go.)
        CHUNK.set(buf);
    }
    // SAFETY: every element was written by its chunk's product.
    unsafe { out.set_len(m * n) };
    out
}

/// `xs (m, k) @ w (n, k)ᵀ` → `(m, n)` in tasks of (64 output columns × a block of rows) on the
/// pool: each task widens its 64 weight rows into an f32 tile of its own and multiplies its
/// rows by it on its thread. Rows are split only as far as it takes to give every thread
/// several tasks, so a panel is widened about once per product.
pub(crate) fn tiles(xs: &[f32], m: usize, k: usize, w: &dyn Widen, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    if m == 0 || n == 0 || k == 0 {
        return out;
    }
    let ptr = OutPtr(out.as_mut_ptr());
    let panels = n.div_ceil(NR);
    let want = 4 * rayon::current_num_threads();
    let blocks = want.div_ceil(panels).clamp(1, m);
    let per = m.div_ceil(blocks);
    let blocks = m.div_ceil(per);
    (0..panels * blocks).into_par_iter().for_each(|task| {
        let (panel, block) = (task / blocks, task % blocks);
        let r0 = block * per;
        let rows = per.min(m - r0);
        let cols = NR.min(n - panel * NR);
        WIDE.with_borrow_mut(|wide| {
            wide.resize(cols * k, 0.0);
            w.widen(panel * NR * k, wide);
            let dst = ptr;
            // SAFETY: `wide` is (cols, k), the rows of `xs` are (rows, k), and the destination
            // is this task's own rows × columns of `out`.
            unsafe {
                gemm_f32(
                    (rows, cols, k),
                    (dst.0.add(r0 * n + panel * NR), n),
                    (xs.as_ptr().add(r0 * k), k),
                    (wide.as_ptr(), k, 1),
                );
            }
        });
    });
    out
}
