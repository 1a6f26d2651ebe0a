//! Healing (issues 6 and 18): a linear map fitted per removed block and folded into the
//! `down_proj` of the last kept layer before it, in the manner of ReplaceMe; optionally refined by
//! cosine distance ([`cosine`]) or distilled on the dense model's next-token distribution
//! ([`kd`]).
//!
//! For a removed block `[s, e)` (a maximal run of removed layers), let `M` be the MLP output of
//! layer `s − 1`, `X` its output and `Y` the dense model's output of layer `e − 1`. After pruning,
//! layer `s − 1`'s output feeds layer `e`; healing replaces its MLP output `M` with `M·T`, so the
//! map is fitted to `M·T ≈ Y − X + M` ([`fit`]) and folded as `down_proj ← Tᵀ·down_proj`.
//!
//! Design choices:
//! - **Identity prior.** The default ridge is `α‖T − I‖²`: where the calibration data says
//!   little, the block stays as it was pruned rather than shrinking the MLP output towards zero.
//!   `Prior::Zero` gives the paper's `α‖T‖²`. `α` is relative to the mean diagonal of `MᵀM`.
//! - **Order.** Blocks are healed bottom-up (ascending start), and before each fit the pruned
//!   model is run with every earlier fold applied, so `M` and `X` are what the healed model
//!   really computes there while `Y` always comes from the dense model. A later fold thus also
//!   corrects the drift left by earlier ones. Top-down would fit against inputs that the earlier
//!   folds then change.
//! - **Cost.** One dense pass per window gives every block's target. The pruned model's residual
//!   stream is kept per window at the input of the last fold layer, so each block runs only the
//!   layers between its fold layer and the previous one: about one dense and one pruned forward
//!   per window in all, whatever the number of blocks.
//! - **Post-norm families** (Gemma 2/3, OLMo 2; issue 23). Their `post_feedforward_layernorm`
//!   normalises the MLP output before the residual add, so a general map in `down_proj` would
//!   act through the norm non-linearly. A rotation does not change a row's norm, so a map
//!   `Q·diag(s)` on the normalised MLP output folds exactly: `Q` into `down_proj`, `s` into the
//!   norm's scale ([`postnorm`], fitted by [`rotation`]). The linear objectives become that
//!   rotation and scale there, `scale` becomes the per-channel scale alone, and the guard
//!   chooses among them and "unhealed" as for every other family. `kd` trains a general map
//!   *before* that norm, which folds into `down_proj` all the same, and the norm's scale with it
//!   ([`kd`]).
//! - **A block at layer 0** has no MLP before it to fold into; it is refused with a message
//!   (mapping the embedding output would change the tied embedding and `lm_head` too).
//! - Activations are streamed a batch of windows at a time into f64 Gram matrices; no batch's
//!   activations outlive its forward. What grows with the calibration tokens is the two residual
//!   streams (dense and pruned, `tokens × hidden` each); the guard keeps the dense model's final
//!   hidden states, not its log-probabilities (`heal/validate.rs`).
//! - **The guard** ([`HealOptions::holdout`], issue 18). One calibration window in `holdout` is
//!   kept out of the fits. For each block and objective the ridge weight comes from a grid by
//!   the held-out residual; then each objective's map is judged by the mean next-token
//!   KL(dense ‖ healed) on the held-out windows, against the same KL with the block left
//!   unhealed. The best wins, and "unhealed" is a candidate, so healing never makes the
//!   held-out windows worse. The unhealed KL of a block is the chosen KL of the block before it
//!   (the same model), so each block costs one tail forward per objective on the held-out
//!   windows.
//!
//! Where the ideas come from, in our words:
//! - Fitting one linear map per removed block on calibration activations and folding it into
//!   the preceding `down_proj`, so the result is a stock checkpoint: ReplaceMe (Shopkhoev et
//!   al., 2025, "ReplaceMe: Network Simplification via Depth Pruning and Transformer Block
//!   Linearization"), whose least-squares variant is [`Objective::Lstsq`] with the zero prior.
//! - Weighting tokens by the inverse norm of their target ([`Objective::Weighted`]): a response
//!   to the "massive activations" that a few tokens (the first token, delimiters) carry in the
//!   residual stream (Sun et al., 2024, "Massive Activations in Large Language Models"; the
//!   attention sinks of Xiao et al., 2023, "Efficient Streaming Language Models with Attention
//!   Sinks"). In plain least squares those rows dominate `MᵀM`; the weighting is ours.
//! - The scalar map ([`Objective::Scale`]): the magnitude compensation of Prune&Comp (Chen et
//!   al., 2025, "Prune&Comp: Free Lunch for Layer-Pruned LLMs via Iterative Pruning with
//!   Magnitude Compensation"), which rescales what the removal leaves so the stream's magnitude
//!   matches the dense model's; here one least-squares scalar folded into the same `down_proj`.
//! - The cosine objective and map-only distillation: see [`cosine`] and [`kd`].
//! - A rotation plus a per-channel scaling standing in for the removed layers: LinearPatch
//!   (Chen et al., 2025, "A Simple Linear Patch Revives Layer-Pruned Large Language Models"),
//!   which inserts a Hadamard rotation and a channel-wise scale at the pruning interface to
//!   suppress outlier channels and match magnitudes. Here the rotation is fitted rather than
//!   fixed, and it is the post-MLP RMSNorm, unchanged by any rotation, that lets the pair fold
//!   into existing tensors.
//! - Fitting that rotation: orthogonal Procrustes (Schönemann, 1966, "A generalized solution of
//!   the orthogonal Procrustes problem"): the orthogonal `Q` nearest to a cross-covariance is
//!   its polar factor. Alternating it with a per-channel least-squares scale, the Procrustes
//!   step taken on the target divided by that scale, is the reference experiment; the
//!   polar factor by Newton's iteration with scaling is Higham's (1986, "Computing the polar
//!   decomposition — with applications").
//! - The low-rank weight updates trained with distillation (LoRA, merged): see [`lowrank`].
//! - The identity prior, the bottom-up order with the healed model's own inputs, the held-out
//!   KL guard, the choice among objectives and ridge weights by validation, and heal-aware
//!   selection ([`crate::score::healed`]) are this project's.

pub mod cosine;
pub mod fit;
pub mod gguf;
pub mod kd;
mod linalg;
pub mod lowrank;
mod options;
mod overlay;
pub mod postnorm;
mod result;
pub mod rotation;
mod run;
mod site;
mod validate;

pub use fit::{fold_down_proj, Fit, Gram, Prior, Solver};
pub use kd::{distil, distil_with, Distillation, KdCheckpoint, KdOptions};
pub use options::{
    held_out, HealOptions, Maps, Objective, DEFAULT_ALPHAS, DEFAULT_HEAL_SAMPLES, DEFAULT_HOLDOUT,
};
pub use overlay::{open_healed, Overlay};
pub use result::{Candidate, HealedBlock, Healing, Validation};
pub use run::heal;

use crate::error::Result;
use candle_core::Tensor;
use std::ops::Range;

/// The method name recorded in `pruning.json`.
pub const METHOD: &str = "lstsq";

/// The name of layer `i`'s `down_proj` weight.
pub fn down_proj_name(layer: usize) -> String {
    format!("model.layers.{layer}.mlp.down_proj.weight")
}

/// The names of every `down_proj` weight a map for layer `layer` folds into: the MLP's, or in a
/// MoE layer each expert's and the shared expert's ([`crate::model::moe::down_proj_names`]).
pub fn down_proj_names(arch: &crate::arch::ArchConfig, layer: usize) -> Vec<String> {
    crate::model::moe::down_proj_names(arch, layer)
}

/// Maximal runs of consecutive layers in `removed` (sorted or not).
pub fn blocks(removed: &[usize]) -> Vec<Range<usize>> {
    let mut v = removed.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<Range<usize>> = Vec::new();
    for l in v {
        match out.last_mut() {
            Some(r) if r.end == l => r.end += 1,
            _ => out.push(l..l + 1),
        }
    }
    out
}

/// Row-major f32 values of the `(1, seq, hidden)` tensor `t`.
pub(crate) fn rows(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// How many rows of `width` values each of `a` and `b` holds, when both hold the same whole
/// number of rows of a non-zero width; else `None`.
pub(crate) fn paired_rows(a: &[f32], b: &[f32], width: usize) -> Option<usize> {
    (width > 0 && a.len() == b.len() && a.len().is_multiple_of(width)).then(|| a.len() / width)
}
