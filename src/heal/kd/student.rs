//! The student of distillation: the pruned, healed model run from the first fold site with a
//! trainable map at each fold layer and, for low-rank healing, layers rebuilt with updated
//! weights ([`crate::heal::lowrank`]); and the KL to the teacher with its gradient.
//!
//! The map at a fold layer acts on the MLP output `u` (the `down_proj` output), `u ↦ u·U`. In a
//! pre-norm family that is the layer's contribution to the residual stream. In a post-norm
//! family (Gemma 2/3, OLMo 2) the `post_feedforward_layernorm` follows, so the contribution
//! becomes `norm(u·U)·(g₀ ⊙ v)`: `U` sits before the norm (it still folds exactly into
//! `down_proj`, the norm being a function of `down_proj`'s output) and `v`, starting at ones,
//! trains the norm's scale relative to its start `g₀` (the closed-form heal's).

use crate::error::{Error, Result};
use crate::heal::fit::fold_down_proj;
use crate::heal::postnorm::norm_name;
use crate::heal::postnorm::PostNorm;
use crate::heal::{down_proj_names, paired_rows, rows};
use crate::model::{AttnCtx, DecoderLayer, Model, WeightSource};
use candle_core::{backprop::GradStore, Device, Tensor, Var};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Layers to run in place of the model's own, by index.
pub(crate) type Layers = BTreeMap<usize, Arc<DecoderLayer>>;

/// The trainable map at one fold layer: `U` `(hidden, hidden)` on the MLP output and, for a
/// post-norm family, the relative gain `v` `(hidden,)` of the norm after it. `T` is [`Var`]
/// while training and [`Tensor`] for a snapshot.
#[derive(Debug, Clone)]
pub(crate) struct SiteMap<T> {
    pub u: T,
    pub gain: Option<T>,
}

impl SiteMap<Var> {
    /// The live tensors (recording the graph).
    pub fn tensors(&self) -> SiteMap<Tensor> {
        SiteMap {
            u: self.u.as_tensor().clone(),
            gain: self.gain.as_ref().map(|v| v.as_tensor().clone()),
        }
    }

    /// Copies that do not record a graph: the optimiser writes the variables in place.
    pub fn snapshot(&self) -> Result<SiteMap<Tensor>> {
        Ok(SiteMap {
            u: self.u.as_tensor().detach().copy()?,
            gain: match &self.gain {
                Some(v) => Some(v.as_tensor().detach().copy()?),
                None => None,
            },
        })
    }

    /// Every variable.
    pub fn vars(&self) -> Vec<Var> {
        std::iter::once(self.u.clone())
            .chain(self.gain.clone())
            .collect()
    }
}

/// The maps by fold layer.
pub(crate) type Maps<T> = BTreeMap<usize, SiteMap<T>>;

/// The pruned, healed model with a trainable map at each fold layer.
pub(crate) struct Student {
    pub(crate) model: Model,
    removed: Vec<usize>,
    /// The first fold layer: the stream entering it is the dense model's.
    pub(crate) first: usize,
    /// For a post-norm family, the post-MLP norm and, per fold layer, its scale `g₀` in the
    /// healed model.
    post: Option<(PostNorm, BTreeMap<usize, Tensor>)>,
}

impl Student {
    /// `model` must already carry the start's healed tensors.
    pub fn new(model: Model, removed: &[usize], fold_layers: &[usize]) -> Result<Self> {
        let first = *fold_layers
            .iter()
            .min()
            .ok_or_else(|| Error::Invalid("distillation needs at least one fold site".into()))?;
        let post = match PostNorm::of(model.config()) {
            Some(p) => {
                let mut gains = BTreeMap::new();
                for &l in fold_layers {
                    let g: Vec<f32> = p
                        .gain(model.source().as_ref(), l)?
                        .into_iter()
                        .map(|v| v as f32)
                        .collect();
                    let n = g.len();
                    gains.insert(l, Tensor::from_vec(g, n, &Device::Cpu)?);
                }
                Some((p, gains))
            }
            None => None,
        };
        Ok(Student {
            model,
            removed: removed.to_vec(),
            first,
            post,
        })
    }

    /// The post-MLP norm of a post-norm family.
    pub fn post_norm(&self) -> Option<PostNorm> {
        self.post.as_ref().map(|(p, _)| *p)
    }

    /// The maps at `fold_layers` that leave the healed model as it is: `U = I` and, for a
    /// post-norm family, `v = 1`.
    pub fn identity_maps(&self, fold_layers: &[usize]) -> Result<Maps<Var>> {
        let h = self.model.config().arch.hidden_size;
        let eye = Tensor::eye(h, candle_core::DType::F32, &Device::Cpu)?;
        let ones = Tensor::ones(h, candle_core::DType::F32, &Device::Cpu)?;
        fold_layers
            .iter()
            .map(|&l| {
                let gain = match &self.post {
                    Some(_) => Some(Var::from_tensor(&ones)?),
                    None => None,
                };
                Ok((
                    l,
                    SiteMap {
                        u: Var::from_tensor(&eye)?,
                        gain,
                    },
                ))
            })
            .collect()
    }

    /// The post-MLP norm scale `g₀ ⊙ v` at fold layer `layer` for the relative gain `v` (f64),
    /// or `None` in a pre-norm family.
    pub fn scale(&self, layer: usize, v: &Tensor) -> Result<Option<Vec<f64>>> {
        let Some((_, gains)) = &self.post else {
            return Ok(None);
        };
        let g0 = gains
            .get(&layer)
            .ok_or_else(|| Error::Compute(format!("no post-MLP norm scale for layer {layer}")))?;
        let s = (g0 * v)?.to_vec1::<f32>()?;
        Ok(Some(s.into_iter().map(f64::from).collect()))
    }

    /// What fold layer `layer` adds to the residual stream for MLP output `u` `(b, t, h)` and
    /// map `map`: `u·U`, or after a post-MLP norm `norm(u·U)·(g₀ ⊙ v)`; Granite's residual
    /// multiplier on top. With `map` `None`, the unmapped contribution.
    fn contribution(
        &self,
        layer: usize,
        u: &Tensor,
        map: Option<&SiteMap<Tensor>>,
    ) -> Result<Tensor> {
        let (b, t, h) = u.dims3()?;
        let mapped = match map {
            Some(m) => u.reshape((b * t, h))?.matmul(&m.u)?.reshape((b, t, h))?,
            None => u.clone(),
        };
        let out = match &self.post {
            None => mapped,
            Some((p, gains)) => {
                let g0 = gains.get(&layer).ok_or_else(|| {
                    Error::Compute(format!("no post-MLP norm scale for layer {layer}"))
                })?;
                let g = match map.and_then(|m| m.gain.as_ref()) {
                    Some(v) => (g0 * v)?,
                    None => g0.clone(),
                };
                p.apply(&mapped, &g)?
            }
        };
        match self.model.config().family.residual_scale {
            Some(s) => Ok((out * f64::from(s))?),
            None => Ok(out),
        }
    }

    /// The kept layers from the first fold layer on: those the student runs.
    pub fn tail(&self) -> Vec<usize> {
        (self.first..self.model.n_layers())
            .filter(|i| !self.removed.contains(i))
            .collect()
    }

    /// The final hidden states from `xs`, the residual stream entering the first fold layer,
    /// with the MLP output `u` mapped at each layer in `maps` (`u·U`, before the post-MLP norm
    /// where there is one), and each layer in `layers` run in place of the model's own.
    pub fn hidden(
        &self,
        xs: &Tensor,
        ctx: &AttnCtx,
        maps: &Maps<Tensor>,
        layers: &Layers,
    ) -> Result<Tensor> {
        let mut xs = xs.clone();
        for i in self.tail() {
            let layer = match layers.get(&i) {
                Some(l) => l.clone(),
                None => self.model.fetch_layer(i)?,
            };
            let parts = layer.forward(&xs, ctx, None)?;
            xs = match maps.get(&i) {
                // The layer's output with its MLP contribution swapped for the mapped one (the
                // two terms cancel exactly in the gradient).
                Some(m) => {
                    let unmapped = self.contribution(i, &parts.mlp, None)?;
                    let mapped = self.contribution(i, &parts.mlp, Some(m))?;
                    ((&parts.output - unmapped)? + mapped)?
                }
                None => parts.output,
            };
        }
        Ok(xs)
    }

    /// Folds `maps` into `tensors` (the healed tensors by dense-model name; `source` the dense
    /// weights, for those not healed yet): at each fold layer `down_proj ← Uᵀ·down_proj`, on top of
    /// whatever `tensors` holds for it (a merged low-rank update, a closed-form map), and in a
    /// post-norm family the trained scale `g₀ ⊙ v` into its post-MLP norm, in the family's
    /// convention.
    pub fn fold(
        &self,
        maps: &Maps<Tensor>,
        tensors: &mut BTreeMap<String, Vec<f32>>,
        source: &dyn WeightSource,
    ) -> Result<()> {
        let arch = &self.model.config().arch;
        for (&l, m) in maps {
            let u: Vec<f64> = rows(&m.u)?.into_iter().map(f64::from).collect();
            for name in down_proj_names(arch, l) {
                let w = match tensors.get(&name) {
                    Some(w) => w.clone(),
                    None => rows(&source.tensor(&name)?)?,
                };
                tensors.insert(name, fold_down_proj(&u, &w, arch.hidden_size)?);
            }
            if let (Some(p), Some(v)) = (self.post_norm(), &m.gain) {
                let s = self.scale(l, v)?.ok_or_else(|| {
                    Error::Compute(format!("layer {l}: a gain without a post-MLP norm"))
                })?;
                tensors.insert(norm_name(l), p.encode(&s));
            }
        }
        Ok(())
    }

    /// The mean KL(teacher ‖ student) over the positions of one window and the gradients of the
    /// maps (and of whatever variables `layers` were built from). `teacher` is the dense model's logits `(seq, vocab)`; `xs` the stream entering the
    /// first fold layer.
    pub fn loss_and_grads(
        &self,
        xs: &Tensor,
        ctx: &AttnCtx,
        teacher: &[f32],
        maps: &Maps<Var>,
        layers: &Layers,
    ) -> Result<(f64, GradStore)> {
        let tensors: Maps<Tensor> = maps.iter().map(|(&l, m)| (l, m.tensors())).collect();
        let hidden = self.hidden(xs, ctx, &tensors, layers)?;
        let (_, t, h) = hidden.dims3()?;
        let normed = self.model.norm(&hidden.reshape((t, h))?)?;
        let logits: Vec<f32> = self
            .model
            .lm_head(&normed.detach())?
            .flatten_all()?
            .to_vec1()?;
        let (kl, mut g) = kl_and_grad(teacher, &logits, self.model.vocab_size())?;
        head_backward(&mut g, &logits, &self.model.config().family);
        let g = Tensor::from_vec(g, (t, self.model.vocab_size()), &Device::Cpu)?;
        let grad_normed = g.matmul(&self.model.lm_head_weight()?)?;
        // d/d(normed) of Σ normed ⊙ grad_normed is grad_normed: the head's backward by hand.
        let surrogate = (normed * grad_normed.detach())?.sum_all()?;
        Ok((kl, surrogate.backward()?))
    }

    /// The mean KL over positions without gradients, as [`Student::loss_and_grads`] computes it.
    #[cfg(test)]
    pub fn loss(
        &self,
        xs: &Tensor,
        ctx: &AttnCtx,
        teacher: &[f32],
        maps: &Maps<Tensor>,
        layers: &Layers,
    ) -> Result<f64> {
        let hidden = self.hidden(xs, ctx, maps, layers)?;
        let logits: Vec<f32> = self.model.logits(&hidden)?.flatten_all()?.to_vec1()?;
        Ok(kl_and_grad(teacher, &logits, self.model.vocab_size())?.0)
    }
}

/// Turns `g`, the gradient with respect to the logits `logits`, into the gradient with respect
/// to the head's product `normed·Wᵀ`: through Gemma 2's soft-capping `c·tanh(z / c)`, whose
/// derivative is `1 − (logit / c)²`, and Granite's divisor.
fn head_backward(g: &mut [f32], logits: &[f32], family: &crate::model::FamilyOpts) {
    if let Some(c) = family.final_softcap {
        g.par_iter_mut().zip(logits.par_iter()).for_each(|(g, l)| {
            let y = l / c;
            *g *= 1.0 - y * y;
        });
    }
    if let Some(d) = family.logits_divisor {
        g.par_iter_mut().for_each(|g| *g /= d);
    }
}

/// The mean over rows of KL(p ‖ q), with `p = softmax(teacher)` and `q = softmax(student)` per
/// row of `vocab` logits, and its gradient with respect to the student's logits, `(q − p) / n`.
pub(crate) fn kl_and_grad(
    teacher: &[f32],
    student: &[f32],
    vocab: usize,
) -> Result<(f64, Vec<f32>)> {
    let Some(n) = paired_rows(teacher, student, vocab) else {
        return Err(Error::Compute(format!(
            "distillation: {} teacher and {} student logits for a vocabulary of {vocab}",
            teacher.len(),
            student.len()
        )));
    };
    let mut grad = vec![0f32; student.len()];
    let kl: f64 = grad
        .par_chunks_mut(vocab)
        .zip(teacher.par_chunks(vocab).zip(student.par_chunks(vocab)))
        .map(|(g, (a, b))| {
            let (la, lb) = (lse(a), lse(b));
            let mut kl = 0f64;
            for ((g, &a), &b) in g.iter_mut().zip(a).zip(b) {
                let (lp, lq) = (a as f64 - la, b as f64 - lb);
                let p = lp.exp();
                kl += p * (lp - lq);
                *g = ((lq.exp() - p) / n as f64) as f32;
            }
            kl
        })
        .sum();
    Ok((kl / n as f64, grad))
}

/// `log Σ exp(x)` in f64.
pub(crate) fn lse(x: &[f32]) -> f64 {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
}
