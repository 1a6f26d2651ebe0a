//! Map-only distillation (`--heal kd`, issue 18): after the least-squares heal, train one
//! hidden × hidden map per fold site, and nothing else, to bring the pruned model's next-token
//! distribution back to the dense model's, then fold each map into its `down_proj` as before.
//!
//! - **What trains.** At every fold layer `f` of the start (each healed or unhealed block's, and
//!   with per-layer maps each kept layer's), the MLP output `m` becomes `m·U_f`, with `U_f`
//!   starting at the identity, so step 0 is exactly the least-squares heal. The result folds as
//!   `down_proj ← U_fᵀ·down_proj`: a stock checkpoint, no new ops, for HF folders and GGUF alike.
//! - **Loss.** The mean over positions of KL(dense ‖ healed) of the next-token distribution on
//!   one calibration window per step, minimised by Adam. Gradients flow back through the kept
//!   layers with candle's autograd (the layer code records a graph when its input does). The
//!   head is handled by hand: the gradient of the KL with respect to the logits is
//!   `(q − p) / n`, so the head's backward is one product with its weight, and the head's own
//!   (frozen) weight gets no gradient.
//! - **Cost.** The layers before the first fold site are the dense model's, so the residual
//!   stream entering that layer and the dense model's final hidden states are computed once per
//!   window; a step then runs the tail once forward and once back, and the dense head once.
//! - **Early stopping.** Every `eval_every` steps the maps are judged on the held-out windows
//!   (the same windows and KL as the guard). The best maps are kept; training stops after
//!   `patience` judgements without improvement. When no step beats the start, the start is
//!   returned unchanged: distillation cannot make the held-out windows worse either.
//!
//! Sources, in our words: training only the small linear maps that replace removed blocks,
//! against the dense model's output distribution, follows the distillation variants of
//! ReplaceMe (Shopkhoev et al., 2025) and of LLM-Streamline (Chen et al., 2024, which trains a
//! light replacement layer); distilling to the teacher's full next-token distribution is Hinton
//! et al.'s (2015) knowledge distillation. Starting from the closed-form fit, folding the result
//! and stopping on held-out KL are this project's choices.

use super::fit::fold_down_proj;
use super::overlay::healed_model;
use super::result::Healing;
use super::{down_proj_names, paired_rows, rows};
use crate::error::{Error, Result};
use crate::eval::ReferenceLogProbs;
use crate::model::{open_checkpoint, AttnCtx, Model, ModelConfig};
use crate::progress::Progress;
use candle_core::{backprop::GradStore, Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Default number of training steps (one calibration window each). On SmolLM2 (bi-8 and the
/// heal-aware 8) the held-out KL was still falling at 64 steps of 2e-4 and bottomed out near
/// step 128 at 5e-4.
pub const DEFAULT_STEPS: usize = 128;
/// Default Adam learning rate.
pub const DEFAULT_LR: f64 = 5e-4;
/// Default steps between validations.
pub const DEFAULT_EVAL_EVERY: usize = 16;
/// Default validations without improvement before stopping.
pub const DEFAULT_PATIENCE: usize = 3;

/// How to distil.
#[derive(Debug, Clone, PartialEq)]
pub struct KdOptions {
    /// Training steps, one calibration window each, cycling through the fit windows.
    pub steps: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Steps between validations (the last step is always validated).
    pub eval_every: usize,
    /// Validations without a new best before training stops; 0 never stops early.
    pub patience: usize,
}

impl Default for KdOptions {
    fn default() -> Self {
        KdOptions {
            steps: DEFAULT_STEPS,
            lr: DEFAULT_LR,
            eval_every: DEFAULT_EVAL_EVERY,
            patience: DEFAULT_PATIENCE,
        }
    }
}

impl KdOptions {
    fn check(&self) -> Result<()> {
        if self.steps == 0 || self.eval_every == 0 {
            return Err(Error::Invalid(format!(
                "distillation needs at least one step and a validation interval of at least one step, not {} and {}",
                self.steps, self.eval_every
            )));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Invalid(format!(
                "the learning rate must be a finite number > 0, not `{}`",
                self.lr
            )));
        }
        Ok(())
    }
}

/// One validation during distillation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KdPoint {
    pub step: usize,
    /// Mean training KL over the steps since the previous point (`null` at step 0).
    pub train_kl: Option<f64>,
    /// Mean next-token KL(dense ‖ healed) on the held-out windows.
    pub validation_kl: f64,
}

/// What distillation did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Distillation {
    /// The dense-model layers whose `down_proj` took a trained map.
    pub fold_layers: Vec<usize>,
    pub lr: f64,
    /// Steps run (fewer than asked when early stopping ended training).
    pub steps: usize,
    /// The step whose maps were kept (0: the start, that is, distillation did not help).
    pub best_step: usize,
    /// Validation KL of the start (the least-squares heal).
    pub start_kl: f64,
    /// Validation KL of the kept maps.
    pub best_kl: f64,
    /// Calibration tokens trained on (whole windows, validation windows excluded).
    pub samples: usize,
    pub seconds: f64,
    pub curve: Vec<KdPoint>,
}

impl Distillation {
    /// Whether trained maps were kept.
    pub fn kept(&self) -> bool {
        self.best_step > 0
    }

    /// One line for the user.
    pub fn describe(&self) -> String {
        let sites = self
            .fold_layers
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if self.kept() {
            format!(
                "distilled maps at layers {sites}: validation KL {:.4} → {:.4} (step {} of {}, lr {:e}, {:.0} s)",
                self.start_kl, self.best_kl, self.best_step, self.steps, self.lr, self.seconds
            )
        } else {
            format!(
                "distillation kept the least-squares maps: no step beat validation KL {:.4} ({} steps, lr {:e}, {:.0} s)",
                self.start_kl, self.steps, self.lr, self.seconds
            )
        }
    }
}

/// The pruned, healed model with a trainable map at each fold layer.
pub(crate) struct Student {
    model: Model,
    removed: Vec<usize>,
    /// The first fold layer: the stream entering it is the dense model's.
    first: usize,
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

    /// The final hidden states from `xs`, the residual stream entering the first fold layer,
    /// with `m·U` in place of the MLP output `m` at each layer in `maps`.
    pub fn hidden(
        &self,
        xs: &Tensor,
        ctx: &AttnCtx,
        maps: &BTreeMap<usize, Tensor>,
    ) -> Result<Tensor> {
        let mut xs = xs.clone();
        for i in (self.first..self.model.n_layers()).filter(|i| !self.removed.contains(i)) {
            let layer = self.model.fetch_layer(i)?;
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
    /// maps. `teacher` is the dense model's logits `(seq, vocab)`; `xs` the stream entering the
    /// first fold layer.
    pub fn loss_and_grads(
        &self,
        xs: &Tensor,
        ctx: &AttnCtx,
        teacher: &[f32],
        maps: &BTreeMap<usize, Var>,
    ) -> Result<(f64, GradStore)> {
        let tensors: BTreeMap<usize, Tensor> = maps
            .iter()
            .map(|(&l, v)| (l, v.as_tensor().clone()))
            .collect();
        let hidden = self.hidden(xs, ctx, &tensors)?;
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
    ) -> Result<f64> {
        let hidden = self.hidden(xs, ctx, maps)?;
        let logits: Vec<f32> = self.model.logits(&hidden)?.flatten_all()?.to_vec1()?;
        Ok(kl_and_grad(teacher, &logits, self.model.vocab_size())?.0)
    }
}

/// The mean over rows of KL(p ‖ q), with `p = softmax(teacher)` and `q = softmax(student)` per
/// row of `vocab` logits, and its gradient with respect to the student's logits, `(q − p) / n`.
fn kl_and_grad(teacher: &[f32], student: &[f32], vocab: usize) -> Result<(f64, Vec<f32>)> {
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
fn lse(x: &[f32]) -> f64 {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
}

/// One window's inputs: the stream entering the first fold layer and the dense final hidden
/// states (before the final norm).
struct Window {
    start: Tensor,
    dense_final: Tensor,
}

/// Distils the maps of `start` (a heal of `removed` on the dense model at `dense_dir`, fitted
/// with `heal_ctx`-token windows and hold-out `holdout`) on the calibration tokens `calib`, cut
/// into windows as the heal cut them: the same fit and validation windows. Returns `start` with
/// its tensors replaced by the distilled ones (or unchanged, when no step helped) and the
/// record of what happened.
pub fn distil(
    dense_dir: &Path,
    calib: &[u32],
    start: &Healing,
    opts: &KdOptions,
    progress: &dyn Progress,
) -> Result<Healing> {
    opts.check()?;
    let ctx_len = start.options.ctx;
    let holdout = start.options.holdout;
    if holdout < 2 {
        return Err(Error::Invalid(
            "distillation stops on held-out windows, so it needs a hold-out of 2 or more".into(),
        ));
    }
    let windows: Vec<&[u32]> = calib
        .chunks(ctx_len)
        .filter(|w| w.len() == ctx_len)
        .collect();
    let held = |i: usize| (i + 1).is_multiple_of(holdout);
    let (val, train): (Vec<usize>, Vec<usize>) = (0..windows.len()).partition(|&i| held(i));
    if val.is_empty() || train.is_empty() {
        return Err(Error::Invalid(format!(
            "distillation needs fit and validation windows, but the calibration text gives {} windows of {ctx_len} tokens with one in {holdout} held out",
            windows.len()
        )));
    }
    let removed = start.removed();
    let mut fold_layers: Vec<usize> = start.sites().map(|s| s.fold_layer).collect();
    fold_layers.sort_unstable();
    fold_layers.dedup();
    let (cfg, source) = open_checkpoint(dense_dir)?;
    super::check_foldable(&cfg)?;
    let dense = Model::from_source(cfg.clone(), source.clone(), &|_| true)?;
    // Gradients flow through the student's layers, which needs f32 weights whatever the
    // teacher runs in.
    let student_cfg = ModelConfig {
        compute: crate::model::Compute::F32,
        ..cfg
    };
    let student = Student::new(
        healed_model(student_cfg, source.clone(), &start.tensors, &removed)?,
        &removed,
        &fold_layers,
    )?;
    let ctx = dense.attn_ctx(0, ctx_len)?;
    let hidden = dense.config().arch.hidden_size;

    progress.start("kd: dense", windows.len() as u64);
    let mut inputs = Vec::with_capacity(windows.len());
    for w in &windows {
        let mut entering = None;
        let dense_final = dense.forward_hidden(&dense.tokens(&[*w])?, &[], None, &mut |tap| {
            if tap.layer == student.first {
                entering = Some(tap.input.clone());
            }
            Ok(())
        })?;
        let entry =
            entering.ok_or_else(|| Error::Compute("the first fold layer did not run".into()))?;
        inputs.push(Window {
            start: entry,
            dense_final,
        });
        progress.advance(1);
    }
    let val_windows: Vec<Vec<u32>> = val.iter().map(|&i| windows[i].to_vec()).collect();
    let val_finals: Vec<Tensor> = val.iter().map(|&i| inputs[i].dense_final.clone()).collect();
    let reference = ReferenceLogProbs::new(&dense, &Tensor::cat(&val_finals, 0)?, &val_windows)?;
    let validate = |maps: &BTreeMap<usize, Tensor>| -> Result<f64> {
        let finals = val
            .iter()
            .map(|&i| student.hidden(&inputs[i].start, &ctx, maps))
            .collect::<Result<Vec<_>>>()?;
        Ok(reference
            .compare(&student.model, &Tensor::cat(&finals, 0)?)?
            .mean_kl())
    };

    let started = Instant::now();
    let identity = Tensor::eye(hidden, candle_core::DType::F32, &Device::Cpu)?;
    let vars: BTreeMap<usize, Var> = fold_layers
        .iter()
        .map(|&l| Ok((l, Var::from_tensor(&identity)?)))
        .collect::<Result<_>>()?;
    // A copy, not a view: the optimiser writes the variables' storage in place.
    let snapshot = |vars: &BTreeMap<usize, Var>| -> Result<BTreeMap<usize, Tensor>> {
        vars.iter()
            .map(|(&l, v)| Ok((l, v.as_tensor().detach().copy()?)))
            .collect()
    };
    let mut best = snapshot(&vars)?;
    let start_kl = validate(&best)?;
    let mut best_kl = start_kl;
    let mut best_step = 0;
    let mut curve = vec![KdPoint {
        step: 0,
        train_kl: None,
        validation_kl: start_kl,
    }];
    let mut adam = AdamW::new(
        vars.values().cloned().collect(),
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?;
    progress.start("kd: training", opts.steps as u64);
    let (mut since, mut n_since, mut stale, mut steps) = (0f64, 0usize, 0usize, 0usize);
    for step in 1..=opts.steps {
        let w = &inputs[train[(step - 1) % train.len()]];
        let teacher: Vec<f32> = dense.logits(&w.dense_final)?.flatten_all()?.to_vec1()?;
        let (kl, grads) = student.loss_and_grads(&w.start, &ctx, &teacher, &vars)?;
        adam.step(&grads)?;
        since += kl;
        n_since += 1;
        steps = step;
        progress.advance(1);
        if step % opts.eval_every == 0 || step == opts.steps {
            let maps = snapshot(&vars)?;
            let v = validate(&maps)?;
            curve.push(KdPoint {
                step,
                train_kl: Some(since / n_since as f64),
                validation_kl: v,
            });
            progress.message(&format!(
                "kd: step {step}, train KL {:.4}, validation KL {v:.4} (start {start_kl:.4})",
                since / n_since as f64
            ));
            (since, n_since) = (0.0, 0);
            if v < best_kl {
                (best, best_kl, best_step, stale) = (maps, v, step, 0);
            } else {
                stale += 1;
                if opts.patience > 0 && stale >= opts.patience {
                    break;
                }
            }
        }
    }
    progress.finish();
    let mut out = start.clone();
    if best_step > 0 {
        for (&l, u) in &best {
            let u: Vec<f64> = rows(u)?.into_iter().map(f64::from).collect();
            for name in down_proj_names(&dense.config().arch, l) {
                let w = match start.tensors.get(&name) {
                    Some(w) => w.clone(),
                    None => rows(&source.tensor(&name)?)?,
                };
                out.tensors.insert(name, fold_down_proj(&u, &w, hidden)?);
            }
        }
    }
    out.distillation = Some(Distillation {
        fold_layers,
        lr: opts.lr,
        steps,
        best_step,
        start_kl,
        best_kl,
        samples: train.len() * ctx_len,
        seconds: started.elapsed().as_secs_f64(),
        curve,
    });
    Ok(out)
}

#[cfg(test)]
mod tests;
