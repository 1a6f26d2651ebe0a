//! The least-squares fit behind healing: Gram matrices accumulated in f64 over streamed rows,
//! a ridge-regularised solve, and the fold of the fitted map into an HF `down_proj` weight.
//!
//! With `M` the MLP output rows of the fold layer and `Z` the target rows, the fit minimises
//! `‖M·T − Z‖² + α‖T − P‖²`, where the prior `P` is the identity ([`Prior::Identity`]) or zero
//! ([`Prior::Zero`], the ReplaceMe paper's form). The normal equations are
//! `(MᵀM + αI)·T = MᵀZ + αP`, so only `MᵀM`, `MᵀZ` and `‖Z‖²` are ever held. The products run
//! as f64 candle matmuls; the hidden × hidden solve is a blocked f64 Cholesky on `gemm`
//! (`heal::linalg`), with a cyclic Jacobi eigendecomposition as the fallback. For the
//! symmetric positive semi-definite `MᵀM + αI` the eigendecomposition is its SVD, so the
//! fallback is the SVD pseudo-inverse solve.
//!
//! Why not `faer` (which the issue names): measured on this project's 2-core build machine with
//! `cargo build --timings`, `faer = { version = "0.24", default-features = false, features =
//! ["std", "linalg"] }` shares gemm 0.19 with candle but adds nano-gemm (its f32/f64/c32/c64
//! kernels alone take 62–86 s each), private-gemm-x86 (39 s), faer itself (42 s), equator and
//! faer-traits: about 400 s of compile units in all (under dependency opt-level 3), far over the
//! one-minute budget, for two hidden × hidden solves. Those take milliseconds at SmolLM2's
//! width; at seed widths (2,560 and up) the textbook loops took minutes, which the blocked
//! kernels of `heal::linalg` bring down to seconds with the `gemm` already in the tree.

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};

/// Below this ratio of smallest to largest Cholesky pivot (squared, so a reciprocal condition
/// estimate), the Cholesky solve is not trusted and the eigen solve is used instead.
pub const RCOND_MIN: f64 = 1e-10;

/// Eigenvalues below this fraction of the largest are treated as zero by the eigen solve.
pub const EIG_CUTOFF: f64 = 1e-10;

/// Jacobi sweeps before the eigen solve gives up.
const MAX_SWEEPS: usize = 60;

/// What the ridge term pulls the map towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
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
    /// Alternating orthogonal Procrustes and per-channel scale ([`super::rotation`]).
    Polar,
}

/// `MᵀM`, `MᵀZ` (row-major, hidden × hidden) and `‖Z‖²`, accumulated row block by row block.
#[derive(Debug, Clone)]
pub struct Gram {
    h: usize,
    mtm: Vec<f64>,
    mtz: Vec<f64>,
    zz: f64,
    rows: usize,
}

/// A fitted map and how well it fits the calibration rows.
#[derive(Debug, Clone)]
pub struct Fit {
    /// `T`, hidden × hidden, row-major: `t[i * hidden + j]`.
    pub t: Vec<f64>,
    pub hidden: usize,
    /// The ridge weight actually used (`alpha` times the mean diagonal of `MᵀM`).
    pub ridge: f64,
    /// `‖M·T − Z‖ / ‖Z‖` on the calibration rows.
    pub relative_residual: f64,
    /// The same with `T = I`, that is without healing.
    pub relative_residual_identity: f64,
    pub solver: Solver,
    /// For the post-norm families, `T = Q·diag(s)` as its two factors: `Q` folds into
    /// `down_proj`, `s` becomes the post-MLP norm's scale ([`super::postnorm`]).
    pub rotation: Option<super::rotation::Rotation>,
}

/// `aᵀ·b` for row-major `a (n × p)` and `b (n × q)`, in f64.
fn at_b(a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
    Ok(a.t()?
        .contiguous()?
        .matmul(b)?
        .flatten_all()?
        .to_vec1::<f64>()?)
}

fn to_f64(v: &[f32], rows: usize, cols: usize) -> Result<Tensor> {
    let d: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
    Ok(Tensor::from_vec(d, (rows, cols), &Device::Cpu)?)
}

/// The row-major identity.
pub fn identity(h: usize) -> Vec<f64> {
    let mut v = vec![0.0; h * h];
    for i in 0..h {
        v[i * h + i] = 1.0;
    }
    v
}

impl Gram {
    /// An empty accumulator for `hidden`-wide rows.
    pub fn new(hidden: usize) -> Self {
        Gram {
            h: hidden,
            mtm: vec![0.0; hidden * hidden],
            mtz: vec![0.0; hidden * hidden],
            zz: 0.0,
            rows: 0,
        }
    }

    pub fn hidden(&self) -> usize {
        self.h
    }

    /// Rows accumulated so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes the accumulator holds: two hidden × hidden f64 matrices, however many rows it
    /// has seen (issue 34).
    pub fn bytes(&self) -> usize {
        (self.mtm.len() + self.mtz.len()) * std::mem::size_of::<f64>()
    }

    /// `MᵀM`, `MᵀZ` (row-major, hidden × hidden) and `‖Z‖²`.
    pub(crate) fn parts(&self) -> (&[f64], &[f64], f64) {
        (&self.mtm, &self.mtz, self.zz)
    }

    /// Adds the rows of `m` and `z`, both row-major `rows × hidden`.
    pub fn add(&mut self, m: &[f32], z: &[f32]) -> Result<()> {
        let h = self.h;
        let Some(n) = super::paired_rows(m, z, h) else {
            return Err(Error::Invalid(format!(
                "gram rows do not match: {} and {} values for width {h}",
                m.len(),
                z.len()
            )));
        };
        if n == 0 {
            return Ok(());
        }
        let mm = to_f64(m, n, h)?;
        let zm = to_f64(z, n, h)?;
        for (acc, v) in self.mtm.iter_mut().zip(at_b(&mm, &mm)?) {
            *acc += v;
        }
        for (acc, v) in self.mtz.iter_mut().zip(at_b(&mm, &zm)?) {
            *acc += v;
        }
        self.zz += z.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
        self.rows += n;
        Ok(())
    }

    /// The rows of `self` and `other` together (both `hidden` wide), or `None` when the widths
    /// differ.
    pub fn merged(&self, other: &Gram) -> Option<Gram> {
        (self.h == other.h).then(|| Gram {
            h: self.h,
            mtm: self
                .mtm
                .iter()
                .zip(&other.mtm)
                .map(|(a, b)| a + b)
                .collect(),
            mtz: self
                .mtz
                .iter()
                .zip(&other.mtz)
                .map(|(a, b)| a + b)
                .collect(),
            zz: self.zz + other.zz,
            rows: self.rows + other.rows,
        })
    }

    /// Solves for `T` with ridge weight `alpha` relative to the mean diagonal of `MᵀM` (so it
    /// does not depend on how many rows were seen).
    pub fn solve(&self, alpha: f64, prior: Prior) -> Result<Fit> {
        let h = self.h;
        if self.rows == 0 {
            return Err(Error::Invalid(
                "no calibration rows to fit the healing map".into(),
            ));
        }
        if !(alpha.is_finite() && alpha >= 0.0) {
            return Err(Error::Invalid(format!(
                "`alpha` must be a finite number ≥ 0, not `{alpha}`"
            )));
        }
        let trace: f64 = (0..h).map(|i| self.mtm[i * h + i]).sum();
        let ridge = alpha * trace / h as f64;
        let mut a = self.mtm.clone();
        let mut b = self.mtz.clone();
        for i in 0..h {
            a[i * h + i] += ridge;
            if prior == Prior::Identity {
                b[i * h + i] += ridge;
            }
        }
        let (t, solver) = match cholesky_solve(&a, &b, h) {
            Some(t) => (t, Solver::Cholesky),
            None => (eigen_solve(&a, &b, h)?, Solver::Eigen),
        };
        if t.iter().any(|v| !v.is_finite()) {
            return Err(Error::Invalid(
                "the healing fit produced non-finite values (calibration activations overflow?)"
                    .into(),
            ));
        }
        Ok(Fit {
            relative_residual: self.relative_residual(&t),
            relative_residual_identity: self.relative_residual_identity(),
            t,
            hidden: h,
            ridge,
            solver,
            rotation: None,
        })
    }

    /// The best scalar map `T = c·I`: `c = tr(MᵀZ) / tr(MᵀM)` (1 when there is no signal).
    pub fn solve_scale(&self) -> Result<Fit> {
        let h = self.h;
        if self.rows == 0 {
            return Err(Error::Invalid(
                "no calibration rows to fit the healing map".into(),
            ));
        }
        let tm: f64 = (0..h).map(|i| self.mtm[i * h + i]).sum();
        let tz: f64 = (0..h).map(|i| self.mtz[i * h + i]).sum();
        let c = if tm > 0.0 && (tz / tm).is_finite() {
            tz / tm
        } else {
            1.0
        };
        let mut t = identity(h);
        t.iter_mut().for_each(|v| *v *= c);
        Ok(Fit {
            relative_residual: self.relative_residual(&t),
            relative_residual_identity: self.relative_residual_identity(),
            t,
            hidden: h,
            ridge: 0.0,
            solver: Solver::Cholesky,
            rotation: None,
        })
    }

    /// `‖M·T − Z‖ / ‖Z‖` from the Gram matrices: `tr(TᵀMᵀMT) − 2·tr(TᵀMᵀZ) + ‖Z‖²`.
    pub fn relative_residual(&self, t: &[f64]) -> f64 {
        let h = self.h;
        // tr(TᵀGT) = Σ (G·T) ⊙ T, and tr(TᵀMᵀZ) = Σ T ⊙ MᵀZ.
        let gt = super::linalg::matmul(&self.mtm, t, (h, h, h));
        let quad: f64 = gt.iter().zip(t).map(|(g, t)| g * t).sum();
        let cross: f64 = t.iter().zip(&self.mtz).map(|(t, z)| t * z).sum();
        self.residual_from(quad, cross)
    }

    /// [`Gram::relative_residual`] of the identity map, from the traces.
    pub fn relative_residual_identity(&self) -> f64 {
        let h = self.h;
        let quad: f64 = (0..h).map(|i| self.mtm[i * h + i]).sum();
        let cross: f64 = (0..h).map(|i| self.mtz[i * h + i]).sum();
        self.residual_from(quad, cross)
    }

    /// `‖M·T − Z‖ / ‖Z‖` from `tr(TᵀGT)` and `tr(TᵀMᵀZ)`.
    fn residual_from(&self, quad: f64, cross: f64) -> f64 {
        let sq = (quad - 2.0 * cross + self.zz).max(0.0);
        if self.zz > 0.0 {
            (sq / self.zz).sqrt()
        } else {
            sq.sqrt()
        }
    }
}

/// Solves `a·x = b` (`a` symmetric `h × h`, `b` `h × h`, row-major) by Cholesky, or `None` when
/// `a` is not positive definite or too ill-conditioned ([`RCOND_MIN`]).
pub fn cholesky_solve(a: &[f64], b: &[f64], h: usize) -> Option<Vec<f64>> {
    let mut l = a.to_vec();
    super::linalg::cholesky_in_place(&mut l, h)?;
    let diag = (0..h).map(|i| l[i * h + i]);
    let max = diag.clone().fold(0.0_f64, f64::max);
    let min = diag.fold(f64::INFINITY, f64::min);
    if (min / max).powi(2) < RCOND_MIN {
        return None;
    }
    let mut x = b.to_vec();
    super::linalg::cholesky_solve_in_place(&l, &mut x, h, b.len() / h);
    Some(x)
}

/// Eigenvalues and eigenvectors (columns of `u`, row-major) of the symmetric `a`, by cyclic
/// Jacobi rotations.
fn jacobi_eigen(a: &[f64], h: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut a = a.to_vec();
    let mut u = identity(h);
    let scale: f64 = a.iter().map(|v| v * v).sum::<f64>().sqrt();
    for _ in 0..MAX_SWEEPS {
        let off: f64 = (0..h)
            .flat_map(|i| (0..h).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * h + j] * a[i * h + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * scale || scale == 0.0 {
            let s = (0..h).map(|i| a[i * h + i]).collect();
            return Ok((s, u));
        }
        for p in 0..h {
            for q in p + 1..h {
                let apq = a[p * h + q];
                if apq.abs() < f64::MIN_POSITIVE {
                    continue;
                }
                let theta = (a[q * h + q] - a[p * h + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..h {
                    let (akp, akq) = (a[k * h + p], a[k * h + q]);
                    a[k * h + p] = c * akp - s * akq;
                    a[k * h + q] = s * akp + c * akq;
                }
                for k in 0..h {
                    let (apk, aqk) = (a[p * h + k], a[q * h + k]);
                    a[p * h + k] = c * apk - s * aqk;
                    a[q * h + k] = s * apk + c * aqk;
                }
                for k in 0..h {
                    let (ukp, ukq) = (u[k * h + p], u[k * h + q]);
                    u[k * h + p] = c * ukp - s * ukq;
                    u[k * h + q] = s * ukp + c * ukq;
                }
            }
        }
    }
    Err(Error::Invalid(format!(
        "the healing fit's eigen solve did not converge in {MAX_SWEEPS} sweeps"
    )))
}

/// Pseudo-inverse solve through `a = U·S·Uᵀ`, dropping eigenvalues below [`EIG_CUTOFF`] of the
/// largest.
pub fn eigen_solve(a: &[f64], b: &[f64], h: usize) -> Result<Vec<f64>> {
    let (s, u) = jacobi_eigen(a, h)?;
    let cols = b.len() / h;
    let smax = s.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    // c = diag(1/s)·Uᵀ·b, then x = U·c.
    let mut c = vec![0.0; h * cols];
    for i in 0..h {
        let inv = if s[i] > smax * EIG_CUTOFF {
            1.0 / s[i]
        } else {
            0.0
        };
        for k in 0..h {
            let uki = u[k * h + i] * inv;
            if uki != 0.0 {
                for j in 0..cols {
                    c[i * cols + j] += uki * b[k * cols + j];
                }
            }
        }
    }
    let mut x = vec![0.0; h * cols];
    for i in 0..h {
        for k in 0..h {
            let uik = u[i * h + k];
            for j in 0..cols {
                x[i * cols + j] += uik * c[k * cols + j];
            }
        }
    }
    Ok(x)
}

/// The rows of `m` and `z` (row-major `rows × hidden`) scaled for the token-weighted objective:
/// token `t` gets weight `1/‖zₜ‖` in the squared error, so both rows are multiplied by
/// `‖zₜ‖^(-1/2)`. A row whose target is zero carries no direction and is dropped (weight 0).
pub fn weigh_rows(m: &[f32], z: &[f32], hidden: usize) -> (Vec<f32>, Vec<f32>) {
    let mut wm = Vec::with_capacity(m.len());
    let mut wz = Vec::with_capacity(z.len());
    for (mr, zr) in m.chunks(hidden.max(1)).zip(z.chunks(hidden.max(1))) {
        let norm = zr
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        let s = if norm > 0.0 && norm.is_finite() {
            (1.0 / norm.sqrt()) as f32
        } else {
            0.0
        };
        wm.extend(mr.iter().map(|&v| v * s));
        wz.extend(zr.iter().map(|&v| v * s));
    }
    (wm, wz)
}

/// Folds `T` (row-major `hidden × hidden`) into an HF `down_proj.weight` (`[hidden,
/// intermediate]`, row-major).
///
/// The MLP output is `m = a·Wᵀ` for a row `a` of intermediate activations. Healing wants
/// `m·T = a·Wᵀ·T = a·(Tᵀ·W)ᵀ`, so the new weight is `W' = Tᵀ·W`: `W'[i][k] = Σ_j T[j][i]·W[j][k]`.
pub fn fold_down_proj(t: &[f64], w: &[f32], hidden: usize) -> Result<Vec<f32>> {
    if hidden == 0 || t.len() != hidden * hidden || !w.len().is_multiple_of(hidden) {
        return Err(Error::Invalid(format!(
            "cannot fold a map of {} values into a down_proj of {} values with hidden size {hidden}",
            t.len(),
            w.len()
        )));
    }
    let inter = w.len() / hidden;
    let tm = Tensor::from_vec(t.to_vec(), (hidden, hidden), &Device::Cpu)?;
    let wm = to_f64(w, hidden, inter)?;
    let out = at_b(&tm, &wm)?;
    Ok(out.into_iter().map(|v| v as f32).collect())
}

#[cfg(test)]
mod tests;
