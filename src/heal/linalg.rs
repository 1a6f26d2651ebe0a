//! Dense f64 kernels for the closed-form fits at the hidden sizes people prune (2,560 for a
//! Qwen3-4B, 4,096 for an 8B): a blocked Cholesky factorisation, the two triangular solves with
//! a hidden-wide right-hand side, and the Gram product `G·T` of the fit's residual.
//!
//! The textbook loops cost `h³` scalar steps with column-strided access: minutes per solve at
//! `h = 2560`, seconds only below `h ≈ 600`. Blocked by [`NB`] rows, all but a thin band of the
//! work becomes matrix products on `gemm`'s f64 kernels (the crate candle already uses), with
//! the band done by contiguous row operations. Results equal the unblocked loops up to rounding.

use rayon::prelude::*;

/// Rows per block: the band done row by row is `NB` wide, everything else is a `gemm`.
const NB: usize = 96;

/// A matrix inside a row-major buffer: element `(i, j)` at `off + i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
struct View {
    off: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl View {
    /// Rows `r0..r1` and columns `c0..c1` of a row-major matrix with `ld` columns.
    fn block(ld: usize, (r0, r1): (usize, usize), (c0, c1): (usize, usize)) -> View {
        View {
            off: r0 * ld + c0,
            rows: r1 - r0,
            cols: c1 - c0,
            rs: ld,
            cs: 1,
        }
    }

    fn t(self) -> View {
        View {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Whether every element lies inside a buffer of `len`.
    fn fits(&self, len: usize) -> bool {
        self.rows == 0
            || self.cols == 0
            || self.off + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < len
    }
}

/// A view with the buffer it lies in: the buffer's start and length.
type Operand = (*const f64, usize, View);

/// `c ← c − a·b`, with `c` in the buffer `dst` (of `dst_len` elements) and `a`, `b` each in
/// its own buffer, which may be `dst` itself.
///
/// # Safety
/// Each buffer must be valid for its length, and `c` must not overlap `a` or `b` where they
/// share a buffer.
unsafe fn sub_product((dst, dst_len, c): (*mut f64, usize, View), a: Operand, b: Operand) {
    let ((ap, a_len, a), (bp, b_len, b)) = (a, b);
    assert!(c.rows == a.rows && c.cols == b.cols && a.cols == b.rows);
    assert!(c.fits(dst_len) && a.fits(a_len) && b.fits(b_len));
    if c.rows == 0 || c.cols == 0 || a.cols == 0 {
        return;
    }
    // SAFETY: bounds checked above; the caller keeps `c` apart from `a` and `b`.
    unsafe {
        gemm::gemm(
            c.rows,
            c.cols,
            a.cols,
            dst.add(c.off),
            c.cs as isize,
            c.rs as isize,
            true,
            ap.add(a.off),
            a.cs as isize,
            a.rs as isize,
            bp.add(b.off),
            b.cs as isize,
            b.rs as isize,
            1.0,
            -1.0,
            false,
            false,
            false,
            parallelism(),
        );
    }
}

fn parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// `Σ a[i]·b[i]` with four partial sums (so the compiler can vectorise it).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut s = [0.0f64; 4];
    let (ac, bc) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = (ac.remainder().iter())
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for k in 0..4 {
            s[k] += x[k] * y[k];
        }
    }
    (s[0] + s[1]) + (s[2] + s[3]) + tail
}

/// `y ← y − s·x`.
fn axpy(y: &mut [f64], s: f64, x: &[f64]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y -= s * x);
}

/// The lower Cholesky factor `L` (`a = L·Lᵀ`) of the symmetric `h × h` matrix `a`, in place
/// (the strict upper triangle is left holding scratch), or `None` when a pivot is not a
/// positive finite number.
pub fn cholesky_in_place(a: &mut [f64], h: usize) -> Option<()> {
    assert_eq!(a.len(), h * h);
    for k0 in (0..h).step_by(NB) {
        let k1 = (k0 + NB).min(h);
        // The diagonal block, whose earlier columns' contributions are already subtracted.
        for j in k0..k1 {
            let d = a[j * h + j] - dot(&a[j * h + k0..j * h + j], &a[j * h + k0..j * h + j]);
            if !(d.is_finite() && d > 0.0) {
                return None;
            }
            let d = d.sqrt();
            a[j * h + j] = d;
            for i in j + 1..k1 {
                let s = dot(&a[i * h + k0..i * h + j], &a[j * h + k0..j * h + j]);
                a[i * h + j] = (a[i * h + j] - s) / d;
            }
        }
        // The panel below it: row i of L21 solves L21[i]·L11ᵀ = A21[i].
        let (top, below) = a.split_at_mut(k1 * h);
        below.par_chunks_mut(h).for_each(|row| {
            for j in k0..k1 {
                let lj = &top[j * h..j * h + h];
                let s = dot(&row[k0..j], &lj[k0..j]);
                row[j] = (row[j] - s) / lj[j];
            }
        });
        // The trailing matrix: A22 ← A22 − L21·L21ᵀ.
        let l21 = View::block(h, (k1, h), (k0, k1));
        let a22 = View::block(h, (k1, h), (k1, h));
        let p = a.as_mut_ptr();
        // SAFETY: one buffer of h·h; A22 (columns k1..h) does not overlap L21 (columns k0..k1).
        unsafe { sub_product((p, h * h, a22), (p, h * h, l21), (p, h * h, l21.t())) };
    }
    Some(())
}

/// Solves `L·Lᵀ·X = B` in place (`x` holds `B`, `h × n` row-major) for the factor `l` from
/// [`cholesky_in_place`] (only its lower triangle is read).
pub fn cholesky_solve_in_place(l: &[f64], x: &mut [f64], h: usize, n: usize) {
    assert!(l.len() == h * h && x.len() == h * n);
    let lp = l.as_ptr();
    // L·Y = B, a block of rows at a time.
    for k0 in (0..h).step_by(NB) {
        let k1 = (k0 + NB).min(h);
        let lhs = View::block(h, (k0, k1), (0, k0));
        let rhs = View::block(n, (0, k0), (0, n));
        let dst = View::block(n, (k0, k1), (0, n));
        let xp = x.as_mut_ptr();
        // SAFETY: rows k0..k1 of X are apart from rows 0..k0; L is its own buffer.
        unsafe { sub_product((xp, h * n, dst), (lp, h * h, lhs), (xp, h * n, rhs)) };
        for i in k0..k1 {
            let (done, rest) = x.split_at_mut(i * n);
            let row = &mut rest[..n];
            for k in k0..i {
                axpy(row, l[i * h + k], &done[k * n..k * n + n]);
            }
            let d = l[i * h + i];
            row.iter_mut().for_each(|v| *v /= d);
        }
    }
    // Lᵀ·X = Y, from the last block up.
    let starts: Vec<usize> = (0..h).step_by(NB).collect();
    for &k0 in starts.iter().rev() {
        let k1 = (k0 + NB).min(h);
        let lhs = View::block(h, (k1, h), (k0, k1)).t();
        let rhs = View::block(n, (k1, h), (0, n));
        let dst = View::block(n, (k0, k1), (0, n));
        let xp = x.as_mut_ptr();
        // SAFETY: rows k0..k1 of X are apart from rows k1..h; L is its own buffer.
        unsafe { sub_product((xp, h * n, dst), (lp, h * h, lhs), (xp, h * n, rhs)) };
        for i in (k0..k1).rev() {
            let (head, done) = x.split_at_mut((i + 1) * n);
            let row = &mut head[i * n..];
            for k in i + 1..k1 {
                let off = (k - i - 1) * n;
                axpy(row, l[k * h + i], &done[off..off + n]);
            }
            let d = l[i * h + i];
            row.iter_mut().for_each(|v| *v /= d);
        }
    }
}

/// `a·b` for row-major `a (m × k)` and `b (k × n)`.
pub fn matmul(a: &[f64], b: &[f64], (m, k, n): (usize, usize, usize)) -> Vec<f64> {
    assert!(a.len() == m * k && b.len() == k * n);
    let mut c = vec![0.0; m * n];
    if m == 0 || n == 0 || k == 0 {
        return c;
    }
    // SAFETY: three distinct buffers of the sizes asserted above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism(),
        );
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symmetric positive definite `h × h` matrix and a right-hand side, deterministic.
    fn system(h: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
        let r: Vec<f64> = (0..h * h)
            .map(|i| ((i * 2654435761usize) % 1000) as f64 / 1000.0 - 0.5)
            .collect();
        let rt: Vec<f64> = (0..h * h).map(|i| r[(i % h) * h + i / h]).collect();
        let mut a = matmul(&r, &rt, (h, h, h));
        for i in 0..h {
            a[i * h + i] += 0.5;
        }
        let b = (0..h * n)
            .map(|i| ((i * 40503) % 97) as f64 / 97.0)
            .collect();
        (a, b)
    }

    #[test]
    fn blocked_solve_satisfies_the_system_across_block_edges() {
        // Sizes below, at and across the block size, and a right-hand side of another width.
        for (h, n) in [(5, 5), (NB, 7), (NB + 1, NB + 1), (2 * NB + 37, 50)] {
            let (a, b) = system(h, n);
            let mut l = a.clone();
            cholesky_in_place(&mut l, h).unwrap();
            let mut x = b.clone();
            cholesky_solve_in_place(&l, &mut x, h, n);
            let ax = matmul(&a, &x, (h, h, n));
            let worst = (ax.iter().zip(&b))
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f64::max);
            assert!(worst < 1e-8, "h {h} n {n}: residual {worst}");
        }
    }

    #[test]
    fn a_matrix_that_is_not_positive_definite_has_no_factor() {
        let h = NB + 3;
        let (mut a, _) = system(h, 1);
        a[(h - 1) * h + (h - 1)] = -1.0;
        assert!(cholesky_in_place(&mut a, h).is_none());
    }
}
