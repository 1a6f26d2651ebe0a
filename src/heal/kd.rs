//! Distillation (`--heal kd`, issues 18 and 23): after the least-squares heal, train one
//! hidden × hidden map per fold site (and, with a rank, low-rank updates of the kept layers'
//! weights, [`super::lowrank`]) to bring the pruned model's next-token
//! distribution back to the dense model's, then fold each map into its `down_proj` as before.
//!
//! - **What trains.** At every fold layer `f` of the start (each healed or unhealed block's, and
//!   with per-layer maps each kept layer's), the MLP output `m` becomes `m·U_f`, with `U_f`
//!   starting at the identity, so step 0 is exactly the least-squares heal. The result folds as
//!   `down_proj ← U_fᵀ·down_proj`: a stock checkpoint, no new ops, for HF folders and GGUF alike.
//! - **Post-norm families** (Gemma 2/3, OLMo 2; issue 23). The MLP output `u` is normalised
//!   before the residual add, `r = norm(u)·g`. `U_f` then sits before the norm, `u ↦ u·U_f`, so
//!   it folds into `down_proj` exactly as above (the norm only sees `down_proj`'s output, now
//!   `h·(U_fᵀ·W)ᵀ`), and the norm's scale trains with it as `g₀ ⊙ v_f`, `v_f` starting at ones
//!   and `g₀` the closed-form heal's scale. The trained scale is written to the norm's weight in
//!   the family's convention ([`super::postnorm::PostNorm::encode`]): `U_f` is a general map
//!   here, more than the rotation the training-free fit is limited to. Gemma 2's soft-capped
//!   head is differentiated through its `tanh`.
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
//! et al.'s (2015) knowledge distillation. Starting from the closed-form fit, folding the result,
//! stopping on held-out KL, and in the post-norm families placing the map before the norm (where
//! any map folds) with the norm's scale trained beside it are this project's choices.

mod checkpoint;
mod student;

use super::lowrank::{lr_at, Adapters, Factors};
use super::overlay::healed_model;
use super::result::Healing;
use super::validate::Reference;
use crate::error::{Error, Result};
use crate::model::{open_checkpoint, Model, ModelConfig};
use crate::progress::Progress;
use candle_core::{Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
pub use checkpoint::KdCheckpoint;
use std::path::Path;
use std::time::Instant;
#[cfg(test)]
use student::kl_and_grad;
pub(crate) use student::{Layers, Maps, SiteMap, Student};

/// Default number of training steps (one calibration window each). On SmolLM2 (bi-8 and the
/// heal-aware 8) the held-out KL was still falling at 64 steps of 2e-4 and bottomed out near
/// step 128 at 5e-4.
pub const DEFAULT_STEPS: usize = 128;
/// Default Adam learning rate.
pub const DEFAULT_LR: f64 = 5e-4;
/// Default rank of the low-rank updates ([`super::lowrank`]); 0 trains the maps alone.
pub const DEFAULT_RANK: usize = 8;
/// Default peak Adam learning rate of the low-rank factors (warm-up, then cosine decay).
pub const DEFAULT_LOWRANK_LR: f64 = 1e-3;
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
    /// Rank of the updates on the kept layers' linear weights; 0 trains the maps alone.
    pub rank: usize,
    /// Peak learning rate of the low-rank factors.
    pub lowrank_lr: f64,
    /// Seconds of training after which it stops (the schedule then runs on time, not steps).
    pub time_limit: Option<f64>,
}

impl Default for KdOptions {
    fn default() -> Self {
        KdOptions {
            steps: DEFAULT_STEPS,
            lr: DEFAULT_LR,
            eval_every: DEFAULT_EVAL_EVERY,
            patience: DEFAULT_PATIENCE,
            rank: DEFAULT_RANK,
            lowrank_lr: DEFAULT_LOWRANK_LR,
            time_limit: None,
        }
    }
}

impl KdOptions {
    fn check(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::Invalid(
                "`steps` 0: distillation needs at least one step".into(),
            ));
        }
        if self.eval_every == 0 {
            return Err(Error::Invalid(
                "`kd_eval_every` 0: distillation validates every 1 or more steps".into(),
            ));
        }
        for (key, lr) in [("lr", self.lr), ("lowrank_lr", self.lowrank_lr)] {
            if !(lr.is_finite() && lr > 0.0) {
                return Err(Error::Invalid(format!(
                    "`{key}`: the learning rate must be a finite number > 0, not `{lr}`"
                )));
            }
        }
        if let Some(t) = self.time_limit.filter(|t| !(t.is_finite() && *t > 0.0)) {
            return Err(Error::Invalid(format!(
                "`time_limit`: training time must be a finite number of seconds > 0, not `{t}`"
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
    /// Whether the scale of each fold layer's post-MLP norm trained too (post-norm families).
    pub post_norm_gains: bool,
    pub lr: f64,
    /// Rank of the low-rank updates (0: none).
    pub rank: usize,
    /// Peak learning rate of the low-rank factors.
    pub lowrank_lr: f64,
    /// Trainable values in the low-rank factors.
    pub lowrank_parameters: usize,
    /// The weights that took a merged low-rank update (dense-model names), when kept.
    pub lowrank_tensors: Vec<String>,
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
        let lowrank = if self.rank > 0 {
            format!(
                " and rank-{} updates on {} weights",
                self.rank,
                self.lowrank_tensors.len()
            )
        } else {
            String::new()
        };
        let gains = if self.post_norm_gains {
            " (before the post-MLP norm, with its scale)"
        } else {
            ""
        };
        if self.kept() {
            format!(
                "distilled maps at layers {sites}{gains}{lowrank}: validation KL {:.4} → {:.4} (step {} of {}, lr {:e}, {:.0} s)",
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
    distil_with(dense_dir, calib, start, opts, None, progress)
}

/// [`distil`], saving the best state at every validation to `checkpoint` and, when it resumes,
/// continuing from the state saved there (after the step it was saved at, from the best maps,
/// with fresh optimiser moments). `steps` and the time limit may differ from the saved run's;
/// the other settings may not.
pub fn distil_with(
    dense_dir: &Path,
    calib: &[u32],
    start: &Healing,
    opts: &KdOptions,
    checkpoint: Option<&KdCheckpoint>,
    progress: &dyn Progress,
) -> Result<Healing> {
    opts.check()?;
    // A time limit covers the whole call: the dense passes before training count against it.
    let entered = Instant::now();
    let ctx_len = start.options.ctx;
    let holdout = start.options.holdout;
    if holdout < 2 {
        return Err(Error::Invalid(
            "distillation stops on held-out windows, so it needs a hold-out of 2 or more".into(),
        ));
    }
    let windows: Vec<&[u32]> = crate::eval::windows::whole_windows(calib, ctx_len).collect();
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
    let reference = Reference::new(Tensor::cat(&val_finals, 0)?, val_windows);
    let adapters = match opts.rank {
        0 => None,
        r => Some(Adapters::new(
            dense.config(),
            student.model.source().clone(),
            &student.tail(),
            r,
            0x5eed,
        )?),
    };
    let frozen = |f: &Option<Factors>| -> Result<Layers> {
        match (&adapters, f) {
            (Some(a), Some(f)) => a.layers(Some(f)),
            _ => Ok(Layers::new()),
        }
    };
    let validate = |maps: &Maps<Tensor>, layers: &Layers| -> Result<f64> {
        let finals = val
            .iter()
            .map(|&i| student.hidden(&inputs[i].start, &ctx, maps, layers))
            .collect::<Result<Vec<_>>>()?;
        reference.mean_kl(&dense, &student.model, &Tensor::cat(&finals, 0)?)
    };

    let started = Instant::now();
    let vars = student.identity_maps(&fold_layers)?;
    // A copy, not a view: the optimiser writes the variables' storage in place.
    let snapshot = |vars: &Maps<Var>| -> Result<Maps<Tensor>> {
        vars.iter().map(|(&l, m)| Ok((l, m.snapshot()?))).collect()
    };
    let factors =
        || -> Result<Option<Factors>> { adapters.as_ref().map(|a| a.snapshot()).transpose() };
    let mut best = (snapshot(&vars)?, factors()?);
    let mut start_kl = validate(&best.0, &frozen(&best.1)?)?;
    let mut best_kl = start_kl;
    let mut best_step = 0;
    let settings = serde_json::json!({
        "removed": removed, "fold_layers": fold_layers, "lr": opts.lr, "rank": opts.rank,
        "lowrank_lr": opts.lowrank_lr, "eval_every": opts.eval_every, "ctx": ctx_len,
        "holdout": holdout, "calibration_tokens": calib.len(),
    });
    let mut first = 1;
    if let Some(saved) = checkpoint.map(|c| c.load(&settings)).transpose()?.flatten() {
        for (l, m) in &vars {
            let Some(s) = saved.maps.get(l) else {
                return Err(Error::Invalid(format!(
                    "the saved distillation has no map for layer {l}"
                )));
            };
            m.u.set(&s.u)?;
            if let (Some(g), Some(sg)) = (&m.gain, &s.gain) {
                g.set(sg)?;
            }
        }
        if let (Some(a), Some(f)) = (&adapters, &saved.factors) {
            a.restore(f)?;
        }
        // The restored state must give the held-out KL it was saved with.
        let again = validate(&snapshot(&vars)?, &frozen(&factors()?)?)?;
        if (again - saved.best_kl).abs() > 1e-6 * saved.best_kl.abs().max(1e-12) {
            return Err(Error::Invalid(format!(
                "the distillation saved in `{}` gives a validation KL of {again} on reload, not the {} it was saved with; remove it to start over",
                checkpoint.map_or_else(String::new, |c| c.path.display().to_string()),
                saved.best_kl
            )));
        }
        progress.message(&format!(
            "kd: resuming after step {} (best validation KL {:.4} at step {}, reproduced)",
            saved.step, saved.best_kl, saved.best_step
        ));
        (best, best_kl, best_step, start_kl) = (
            (saved.maps, saved.factors),
            saved.best_kl,
            saved.best_step,
            saved.start_kl,
        );
        first = saved.step + 1;
    }
    let mut curve = vec![KdPoint {
        step: 0,
        train_kl: None,
        validation_kl: start_kl,
    }];
    let mut adam = AdamW::new(
        vars.values().flat_map(SiteMap::vars).collect(),
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?;
    let peak = opts.lowrank_lr;
    let mut lowrank_adam = match &adapters {
        Some(a) => Some(AdamW::new(
            a.vars(),
            ParamsAdamW {
                lr: lr_at(peak, 0.0),
                weight_decay: 0.0,
                ..ParamsAdamW::default()
            },
        )?),
        None => None,
    };
    progress.start("kd: training", opts.steps as u64);
    let (mut since, mut n_since, mut stale, mut steps) = (0f64, 0usize, 0usize, 0usize);
    let train_start = Instant::now();
    let time_limit = opts
        .time_limit
        .map(|t| (t - entered.elapsed().as_secs_f64()).max(0.1 * t));
    for step in first..=opts.steps {
        // How far along training is: by steps, or by time when a limit is nearer.
        let done = time_limit
            .map_or(0.0, |t| train_start.elapsed().as_secs_f64() / t)
            .max((step - 1) as f64 / opts.steps as f64);
        if done >= 1.0 {
            break;
        }
        let w = &inputs[train[(step - 1) % train.len()]];
        let teacher: Vec<f32> = dense.logits(&w.dense_final)?.flatten_all()?.to_vec1()?;
        let layers = match &adapters {
            Some(a) => a.layers(None)?,
            None => Layers::new(),
        };
        let (kl, grads) = student.loss_and_grads(&w.start, &ctx, &teacher, &vars, &layers)?;
        drop(layers);
        adam.step(&grads)?;
        if let Some(opt) = lowrank_adam.as_mut() {
            opt.set_learning_rate(lr_at(peak, done));
            opt.step(&grads)?;
        }
        since += kl;
        n_since += 1;
        steps = step;
        progress.advance(1);
        let out_of_time = time_limit.is_some_and(|t| train_start.elapsed().as_secs_f64() >= t);
        if step % opts.eval_every == 0 || step == opts.steps || out_of_time {
            let now = (snapshot(&vars)?, factors()?);
            let v = validate(&now.0, &frozen(&now.1)?)?;
            curve.push(KdPoint {
                step,
                train_kl: Some(since / n_since as f64),
                validation_kl: v,
            });
            let left = time_limit.map_or(String::new(), |t| {
                format!(
                    ", {:.0} s left",
                    (t - train_start.elapsed().as_secs_f64()).max(0.0)
                )
            });
            progress.message(&format!(
                "kd: step {step}, train KL {:.4}, validation KL {v:.4} (start {start_kl:.4}){left}",
                since / n_since as f64
            ));
            (since, n_since) = (0.0, 0);
            let stop = if v < best_kl {
                (best, best_kl, best_step, stale) = (now, v, step, 0);
                false
            } else {
                stale += 1;
                opts.patience > 0 && stale >= opts.patience
            };
            if let Some(c) = checkpoint {
                let saved = checkpoint::Saved {
                    step,
                    best_step,
                    best_kl,
                    start_kl,
                    maps: best.0.clone(),
                    factors: best.1.clone(),
                };
                c.save(&settings, &saved)?;
            }
            if stop {
                break;
            }
        }
    }
    progress.finish();
    let mut out = start.clone();
    let mut lowrank_tensors = Vec::new();
    if best_step > 0 {
        // The low-rank updates first (on the healed weights), then the maps on top of them.
        if let (Some(a), Some(f)) = (&adapters, &best.1) {
            for (name, w) in a.merged(f)? {
                lowrank_tensors.push(name.clone());
                out.tensors.insert(name, w);
            }
        }
        student.fold(&best.0, &mut out.tensors, source.as_ref())?;
    }
    out.distillation = Some(Distillation {
        post_norm_gains: student.post_norm().is_some(),
        fold_layers,
        lr: opts.lr,
        rank: opts.rank,
        lowrank_lr: opts.lowrank_lr,
        lowrank_parameters: adapters.as_ref().map_or(0, |a| a.parameters()),
        lowrank_tensors,
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
mod fold_tests;
#[cfg(test)]
mod tests;
