//! The least-squares fit behind healing: Gram matrices accumulated in f64 over streamed rows,
//! a ridge-regularised solve, and the fold of the fitted map into an HF `down_proj` weight.
//!
//! With `M` the MLP output rows of the fold layer and `Z` the target rows, the fit minimises
//! `‖M·T − Z‖² + α‖T − P‖²`, where the prior `P` is the identity ([`Prior::Identity`]) or zero
//! ([`Prior::Zero`], the ReplaceMe paper's form). The normal equations are
//! `(MᵀM + αI)·T = MᵀZ + αP`, so only `MᵀM`, `MᵀZ` and `‖Z‖²` are ever held.

use crate::error::{Error, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par, Side};

/// Below this ratio of smallest to largest Cholesky pivot (squared, so a reciprocal condition
/// estimate), the Cholesky solve is not trusted and the eigen solve is used instead.
pub const RCOND_MIN: f64 = 1e-10;

/// Eigenvalues below this fraction of the largest are treated as zero by the eigen solve.
pub const EIG_CUTOFF: f64 = 1e-10;

/// What the ridge term pulls the map towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prior {
    /// `α‖T − I‖²`: with little data the block becomes "keep the MLP output as it is".
    Identity,
    /// `α‖T‖²`: the paper's plain ridge.
    Zero,
}

impl Prior {
    pub fn name(self) -> &'static str {
        match self {
            Prior::Identity => "identity",
            Prior::Zero => "zero",
        }
    }
}

/// How the system was solved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Solver {
    Cholesky,
    Eigen,
}

/// `MᵀM`, `MᵀZ` and `‖Z‖²`, accumulated row block by row block.
#[derive(Debug, Clone)]
pub struct Gram {
    mtm: Mat<f64>,
    mtz: Mat<f64>,
    zz: f64,
    rows: usize,
}

/// A fitted map and how well it fits the calibration rows.
#[derive(Debug, Clone)]
pub struct Fit {
    /// `T`, hidden × hidden.
    pub t: Mat<f64>,
    /// The ridge weight actually used (`alpha` times the mean diagonal of `MᵀM`).
    pub ridge: f64,
    /// `‖M·T − Z‖ / ‖Z‖` on the calibration rows.
    pub relative_residual: f64,
    /// The same with `T = I`, that is without healing.
    pub relative_residual_identity: f64,
    pub solver: Solver,
}

impl Gram {
    /// An empty accumulator for `hidden`-wide rows.
    pub fn new(hidden: usize) -> Self {
        Gram {
            mtm: Mat::zeros(hidden, hidden),
            mtz: Mat::zeros(hidden, hidden),
            zz: 0.0,
            rows: 0,
        }
    }

    pub fn hidden(&self) -> usize {
        self.mtm.nrows()
    }

    /// Rows accumulated so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Adds `rows` rows of `m` and `z`, both row-major `rows × hidden`.
    pub fn add(&mut self, m: &[f32], z: &[f32]) -> Result<()> {
        let h = self.hidden();
        if h == 0 || m.len() != z.len() || m.len() % h != 0 {
            return Err(Error::Invalid(format!(
                "gram rows do not match: {} and {} values for width {h}",
                m.len(),
                z.len()
            )));
        }
        let n = m.len() / h;
        let mm = Mat::<f64>::from_fn(n, h, |i, j| f64::from(m[i * h + j]));
        let zm = Mat::<f64>::from_fn(n, h, |i, j| f64::from(z[i * h + j]));
        matmul(
            &mut self.mtm,
            Accum::Add,
            mm.transpose(),
            &mm,
            1.0,
            Par::Seq,
        );
        matmul(
            &mut self.mtz,
            Accum::Add,
            mm.transpose(),
            &zm,
            1.0,
            Par::Seq,
        );
        self.zz += z.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
        self.rows += n;
        Ok(())
    }

    /// Solves for `T` with ridge weight `alpha` relative to the mean diagonal of `MᵀM` (so it
    /// does not depend on how many rows were seen).
    pub fn solve(&self, alpha: f64, prior: Prior) -> Result<Fit> {
        let h = self.hidden();
        if self.rows == 0 {
            return Err(Error::Invalid(
                "no calibration rows to fit the healing map".into(),
            ));
        }
        if !(alpha.is_finite() && alpha >= 0.0) {
            return Err(Error::Invalid(format!(
                "--alpha must be a finite number ≥ 0, not `{alpha}`"
            )));
        }
        let trace: f64 = (0..h).map(|i| self.mtm[(i, i)]).sum();
        let ridge = alpha * trace / h as f64;
        let mut a = self.mtm.clone();
        for i in 0..h {
            a[(i, i)] += ridge;
        }
        let mut b = self.mtz.clone();
        if prior == Prior::Identity {
            for i in 0..h {
                b[(i, i)] += ridge;
            }
        }
        let (t, solver) = match cholesky(&a, &b) {
            Some(t) => (t, Solver::Cholesky),
            None => (eigen_solve(&a, &b)?, Solver::Eigen),
        };
        if t.col_iter().any(|c| c.iter().any(|v| !v.is_finite())) {
            return Err(Error::Invalid(
                "the healing fit produced non-finite values (calibration activations overflow?)"
                    .into(),
            ));
        }
        let relative_residual = self.relative_residual(&t);
        let relative_residual_identity = self.relative_residual(&Mat::identity(h, h));
        Ok(Fit {
            t,
            ridge,
            relative_residual,
            relative_residual_identity,
            solver,
        })
    }

    /// `‖M·T − Z‖ / ‖Z‖` from the Gram matrices: `tr(TᵀMᵀMT) − 2·tr(TᵀMᵀZ) + ‖Z‖²`.
    pub fn relative_residual(&self, t: &Mat<f64>) -> f64 {
        let h = self.hidden();
        let mut gt = Mat::<f64>::zeros(h, h);
        matmul(&mut gt, Accum::Replace, &self.mtm, t, 1.0, Par::Seq);
        let mut quad = 0.0;
        let mut cross = 0.0;
        for j in 0..h {
            for i in 0..h {
                quad += t[(i, j)] * gt[(i, j)];
                cross += t[(i, j)] * self.mtz[(i, j)];
            }
        }
        let sq = (quad - 2.0 * cross + self.zz).max(0.0);
        if self.zz > 0.0 {
            (sq / self.zz).sqrt()
        } else {
            sq.sqrt()
        }
    }
}

/// Cholesky solve, or `None` when `a` is not positive definite or too ill-conditioned.
fn cholesky(a: &Mat<f64>, b: &Mat<f64>) -> Option<Mat<f64>> {
    use faer::linalg::solvers::Solve;
    let llt = a.llt(Side::Lower).ok()?;
    let l = llt.L();
    let diag: Vec<f64> = (0..a.nrows()).map(|i| l[(i, i)]).collect();
    let max = diag.iter().cloned().fold(0.0_f64, f64::max);
    let min = diag.iter().cloned().fold(f64::INFINITY, f64::min);
    if !(max > 0.0) || (min / max).powi(2) < RCOND_MIN {
        return None;
    }
    Some(llt.solve(b))
}

/// Pseudo-inverse solve through the symmetric eigendecomposition `a = U·S·Uᵀ`, dropping
/// eigenvalues below [`EIG_CUTOFF`] of the largest.
fn eigen_solve(a: &Mat<f64>, b: &Mat<f64>) -> Result<Mat<f64>> {
    let h = a.nrows();
    let evd = a
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Invalid(format!("the healing fit's eigen solve failed: {e:?}")))?;
    let u = evd.U();
    let s = evd.S().column_vector();
    let smax = (0..h).map(|i| s[i].abs()).fold(0.0_f64, f64::max);
    // Uᵀ·b, scaled row by row by 1/s, then U·(…).
    let mut utb = Mat::<f64>::zeros(h, b.ncols());
    matmul(&mut utb, Accum::Replace, u.transpose(), b, 1.0, Par::Seq);
    for i in 0..h {
        let inv = if s[i] > smax * EIG_CUTOFF {
            1.0 / s[i]
        } else {
            0.0
        };
        for j in 0..b.ncols() {
            utb[(i, j)] *= inv;
        }
    }
    let mut t = Mat::<f64>::zeros(h, b.ncols());
    matmul(&mut t, Accum::Replace, u, &utb, 1.0, Par::Seq);
    Ok(t)
}

/// Folds `T` into an HF `down_proj.weight` (`[hidden, intermediate]`, row-major).
///
/// The MLP output is `m = a·Wᵀ` for a row `a` of intermediate activations. Healing wants
/// `m·T = a·Wᵀ·T = a·(Tᵀ·W)ᵀ`, so the new weight is `W' = Tᵀ·W`: `W'[i][k] = Σ_j T[j][i]·W[j][k]`.
pub fn fold_down_proj(t: &Mat<f64>, w: &[f32], hidden: usize) -> Result<Vec<f32>> {
    if t.nrows() != hidden || t.ncols() != hidden || hidden == 0 || w.len() % hidden != 0 {
        return Err(Error::Invalid(format!(
            "cannot fold a {}×{} map into a down_proj of {} values with hidden size {hidden}",
            t.nrows(),
            t.ncols(),
            w.len()
        )));
    }
    let inter = w.len() / hidden;
    let wm = Mat::<f64>::from_fn(hidden, inter, |i, k| f64::from(w[i * inter + k]));
    let mut out = Mat::<f64>::zeros(hidden, inter);
    matmul(&mut out, Accum::Replace, t.transpose(), &wm, 1.0, Par::Seq);
    let mut v = Vec::with_capacity(w.len());
    for i in 0..hidden {
        for k in 0..inter {
            v.push(out[(i, k)] as f32);
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests;
