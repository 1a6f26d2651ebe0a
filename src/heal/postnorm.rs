//! Healing the post-norm families (issue 23): Gemma 2, Gemma 3 and OLMo 2 put an RMSNorm on the
//! MLP output before the residual add, `r = norm(u)` with `u` the `down_proj` output. A general
//! map folded into `down_proj` would pass through that norm non-linearly, but a rotation does
//! not: `‖u·Q‖ = ‖u‖` for orthogonal `Q`, so `norm(u·Q) = n·Q·diag(g)` with `n = u / rms(u)` and
//! `g` the norm's scale. The map this module fits and folds is therefore `n ↦ n·Q·diag(s)`:
//! - `Q` folds into `down_proj` exactly as a least-squares map does (`W ← Qᵀ·W`);
//! - `s` replaces the norm's scale: HF Gemma stores `w` for a scale of `1 + w`, so `w ← s − 1`;
//!   Gemma's GGUF stores `1 + w` (the GGUF writer adds the one back); OLMo 2 stores the scale.
//!
//! The fit rows are `n` (the normalised MLP output, before the scale) and the target
//! `Z = Y − X + r`, the same target as everywhere else in `heal::run`. The first position
//! of every calibration window is left out of them: it carries the attention-sink activations,
//! orders of magnitude larger than the rest, which would otherwise decide the rotation. Two
//! objectives stand in for the linear ones ([`objectives`]): the rotation and scale together
//! ([`Objective::Rotation`]) and the scale alone ([`Objective::Gain`]); the guard chooses between
//! them and "unhealed", as for every other family. The objective it chooses is then fitted again
//! on every calibration window, the held-out ones included (the rotation has `h²` parameters, and
//! on Gemma 3 the 2 held-out windows of 16 are worth it: 8..11 removed, 138.5 without them).

use super::fit::{fold_down_proj, Fit, Gram, Solver};
use super::options::Objective;
use super::rotation::{self, Rotation};
use super::rows;
use crate::arch::registry::HealFold;
use crate::error::{Error, Result};
use crate::model::{ModelConfig, WeightSource};
use candle_core::{Tensor, D};
use std::collections::BTreeMap;

/// The post-MLP norm of a post-norm family, as healing needs it.
#[derive(Debug, Clone, Copy)]
pub struct PostNorm {
    eps: f64,
    /// The stored weight is `scale − 1` (Gemma's HF convention, also what the GGUF reader serves).
    plus_one: bool,
}

/// The name of layer `layer`'s post-MLP norm weight.
pub fn norm_name(layer: usize) -> String {
    format!("model.layers.{layer}.post_feedforward_layernorm.weight")
}

/// What the linear objectives become on a post-norm family: `lstsq`, `weighted` and `cosine`
/// fit the rotation and scale, `scale` fits the scale alone; duplicates are dropped.
pub fn objectives(asked: &[Objective]) -> Vec<Objective> {
    let mut out = Vec::new();
    for o in asked {
        let p = match o {
            Objective::Scale | Objective::Gain => Objective::Gain,
            _ => Objective::Rotation,
        };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

impl PostNorm {
    /// The post-MLP norm of `cfg`'s architecture, or `None` when its registry row folds into
    /// `down_proj` ([`HealFold`]).
    pub fn of(cfg: &ModelConfig) -> Option<Self> {
        (cfg.arch.heal_fold() == HealFold::PostNorm).then_some(PostNorm {
            eps: cfg.arch.rms_norm_eps,
            plus_one: cfg.family.norm_plus_one,
        })
    }

    /// The scale layer `layer`'s post-MLP norm applies (`1 + w` for Gemma).
    pub fn gain(&self, source: &dyn WeightSource, layer: usize) -> Result<Vec<f64>> {
        let w = rows(&source.tensor(&norm_name(layer))?)?;
        let shift = if self.plus_one { 1.0 } else { 0.0 };
        Ok(w.iter().map(|&v| f64::from(v) + shift).collect())
    }

    /// The stored weight for the scale `s`.
    pub fn encode(&self, s: &[f64]) -> Vec<f32> {
        let shift = if self.plus_one { 1.0 } else { 0.0 };
        s.iter().map(|&v| (v - shift) as f32).collect()
    }

    /// The normalised rows `n = u / rms(u)` of the MLP outputs `u` (row-major, `gain.len()`
    /// wide) and the residual updates `r = n·diag(gain)` the norm makes of them.
    pub fn normalize(&self, u: &[f32], gain: &[f64]) -> (Vec<f32>, Vec<f32>) {
        let h = gain.len().max(1);
        let mut n = Vec::with_capacity(u.len());
        let mut r = Vec::with_capacity(u.len());
        for row in u.chunks(h) {
            let ms = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / h as f64;
            let inv = 1.0 / (ms + self.eps).sqrt();
            for (&v, g) in row.iter().zip(gain) {
                let x = f64::from(v) * inv;
                n.push(x as f32);
                r.push((x * g) as f32);
            }
        }
        (n, r)
    }

    /// [`PostNorm::normalize`] on a `(tokens, hidden)` tensor: `(n, r)`.
    pub fn normalize_tensor(&self, u: &Tensor, gain: &[f64]) -> Result<(Tensor, Tensor)> {
        let ms = (u.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?;
        let n = u.broadcast_div(&ms)?;
        let g: Vec<f32> = gain.iter().map(|&v| v as f32).collect();
        let r = n.broadcast_mul(&Tensor::from_vec(g, gain.len(), u.device())?)?;
        Ok((n, r))
    }

    /// The norm applied to `u` `(…, hidden)` with the scale `gain` `(hidden,)`: `n·diag(gain)`.
    /// Built from differentiable ops, so distillation can train through it ([`super::kd`]).
    pub fn apply(&self, u: &Tensor, gain: &Tensor) -> Result<Tensor> {
        let ms = (u.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?;
        Ok(u.broadcast_div(&ms)?.broadcast_mul(gain)?)
    }

    /// Folds the rotation and scale of `fit` into each `(weight, name)` of `ws` (the fold
    /// layer's `down_proj`) and into layer `layer`'s post-MLP norm.
    pub fn fold(
        &self,
        fit: &Fit,
        ws: &[(Vec<f32>, String)],
        layer: usize,
    ) -> Result<BTreeMap<String, Vec<f32>>> {
        let Some(rot) = &fit.rotation else {
            return Err(Error::Invalid(format!(
                "layer {layer}: a post-norm family takes a rotation and scale, not a general map"
            )));
        };
        let mut out = BTreeMap::new();
        for (w, name) in ws {
            out.insert(name.clone(), fold_down_proj(&rot.q, w, fit.hidden)?);
        }
        out.insert(norm_name(layer), self.encode(&rot.s));
        Ok(out)
    }
}

/// Fits `objective` ([`Objective::Rotation`] or [`Objective::Gain`]) on `gram` (rows `n`, target
/// `Z`), starting from the current scale `gain`. The unhealed residual is that of
/// `T = diag(gain)`.
pub fn solve(objective: Objective, gram: &Gram, gain: &[f64]) -> Result<Fit> {
    let rot: Rotation = match objective {
        Objective::Gain => rotation::fit_gain(gram, gain)?,
        _ => rotation::fit(gram, gain, rotation::ITERS)?,
    };
    let h = gram.hidden();
    let unhealed = Rotation {
        q: super::fit::identity(h),
        s: gain.to_vec(),
    };
    let t = rot.map();
    Ok(Fit {
        relative_residual: gram.relative_residual(&t),
        relative_residual_identity: gram.relative_residual(&unhealed.map()),
        t,
        hidden: h,
        ridge: 0.0,
        solver: Solver::Polar,
        rotation: Some(rot),
    })
}
