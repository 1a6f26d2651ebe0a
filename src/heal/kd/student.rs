//! The student of distillation: the pruned, healed model run from the first fold site with a
//! trainable map on the MLP output at each fold layer and, for low-rank healing, layers rebuilt
//! with updated weights ([`crate::heal::lowrank`]); and the KL to the teacher with its gradient.

use crate::error::{Error, Result};
use crate::heal::paired_rows;
use crate::model::{AttnCtx, DecoderLayer, Model};
use candle_core::{backprop::GradStore, Device, Tensor, Var};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Layers to run in place of the model's own, by index.
pub(crate) type Layers = BTreeMap<usize, Arc<DecoderLayer>>;

/// The pruned, healed model with a trainable map at each fold layer.
pub(crate) struct Student {
    pub(crate) model: Model,
    removed: Vec<usize>,
    /// The first fold layer: the stream entering it is the dense model's.
    pub(crate) first: usize,
}

impl Student {
    /// `model` must already carry the start's healed tensors.
    pub fn new(model: Model, removed: &[usize], fold_layers: &[usize]) -> Result<Self> {
        let first = *fold_layers
            .iter()
            .min()
            .ok_or_else(|| Error::Invalid("distillation needs at least one fold site".into()))?;
        Ok(Student {
            model,
            removed: removed.to_vec(),
            first,
        })
    }

    /// The kept layers from the first fold layer on: those the student runs.
    pub fn tail(&self) -> Vec<usize> {
        (self.first..self.model.n_layers())
            .filter(|i| !self.removed.contains(i))
            .collect()
    }

    /// The final hidden states from `xs`, the residual stream entering the first fold layer,
    /// with `m·U` in place of the MLP output `m` at each layer in `maps`, and each layer in
    /// `layers` run in place of the model's own.
    pub fn hidden(
        &self,
        xs: &Tensor,
        ctx: &AttnCtx,
        maps: &BTreeMap<usize, Tensor>,
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
                Some(u) => {
                    let (b, t, h) = parts.mlp.dims3()?;
                    let mapped = parts.mlp.reshape((b * t, h))?.matmul(u)?;
                    ((&xs + &parts.attn)? + mapped.reshape((b, t, h))?)?
                }
                None => parts.output,
            };
        }
        Ok(xs)
    }

    /// The mean KL(teacher ‖ student) over the positions of one window and the gradients of the
    /// maps (and of whatever variables `layers` were built from). `teacher` is the dense model's logits `(seq, vocab)`; `xs` the stream entering the
    /// first fold layer.
    pub fn loss_and_grads(
        &self,
        xs: &Tensor,
        ctx: &AttnCtx,
        teacher: &[f32],
        maps: &BTreeMap<usize, Var>,
        layers: &Layers,
    ) -> Result<(f64, GradStore)> {
        let tensors: BTreeMap<usize, Tensor> = maps
            .iter()
            .map(|(&l, v)| (l, v.as_tensor().clone()))
            .collect();
        let hidden = self.hidden(xs, ctx, &tensors, layers)?;
        let (_, t, h) = hidden.dims3()?;
        let normed = self.model.norm(&hidden.reshape((t, h))?)?;
        let logits: Vec<f32> = self
            .model
            .lm_head(&normed.detach())?
            .flatten_all()?
            .to_vec1()?;
        let (kl, g) = kl_and_grad(teacher, &logits, self.model.vocab_size())?;
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
        maps: &BTreeMap<usize, Tensor>,
        layers: &Layers,
    ) -> Result<f64> {
        let hidden = self.hidden(xs, ctx, maps, layers)?;
        let logits: Vec<f32> = self.model.logits(&hidden)?.flatten_all()?.to_vec1()?;
        Ok(kl_and_grad(teacher, &logits, self.model.vocab_size())?.0)
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
