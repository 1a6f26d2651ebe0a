//! The options of healing: objectives, ridge weights, the validation hold-out and where maps go.

use super::fit::Prior;
use crate::error::{Error, Result};

/// The ridge weights tried per block when validation chooses (relative to the mean diagonal of
/// `MᵀM`).
pub const DEFAULT_ALPHAS: &[f64] = &[1e-4, 1e-3, 1e-2, 1e-1];

/// Calibration tokens a heal uses by default (validation windows included). On SmolLM2 with 8
/// of 30 layers removed (13..20 and 28..29, WikiText), the closed-form heal reached perplexity
/// 89.3 on 16,384 tokens and 79.5 on 65,536: the d × d maps need many more rows than
/// parameters' worth of directions. A heal costs about its token count in forward passes.
pub const DEFAULT_HEAL_SAMPLES: usize = 65536;

/// One calibration window in this many is held out for validation by default.
pub const DEFAULT_HOLDOUT: usize = 8;

/// Whether calibration window `window` (0-based) is held out for validation with `holdout`:
/// one in `holdout`, spread through the text rather than at its end; none with `holdout` 0.
/// Heal-aware selection's finalists are judged on these same windows.
pub fn held_out(window: usize, holdout: usize) -> bool {
    holdout > 0 && (window + 1).is_multiple_of(holdout)
}

/// What the per-block map is fitted to minimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// `Σₜ ‖mₜ·T − zₜ‖²` over every calibration token (ReplaceMe's closed form).
    Lstsq,
    /// The same with token `t` weighted by `1/‖zₜ‖`: a few tokens (attention sinks) carry
    /// activations orders of magnitude larger than the rest and otherwise dominate the Gram.
    Weighted,
    /// One scalar: `T = c·I` with `c = tr(MᵀZ) / tr(MᵀM)`, the least-squares magnitude
    /// compensation of the MLP output (after Prune&Comp's rescaling of what the removal leaves).
    /// One parameter per block cannot overfit; it helps where the block mostly changed the
    /// stream's scale.
    Scale,
    /// The least-squares map refined to minimise the mean cosine distance between `mₜ·T` and
    /// `zₜ` (ReplaceMe's second variant; [`super::cosine`]).
    Cosine,
    /// A rotation and a per-channel scale, `T = Q·diag(s)`, on the normalised MLP output of a
    /// post-norm family (Gemma 2/3, OLMo 2), where it folds exactly into `down_proj` and the
    /// post-MLP norm ([`super::postnorm`]). Chosen in place of the linear objectives there.
    Rotation,
    /// The per-channel scale alone (`Q = I`) of a post-norm family, in place of [`Objective::Scale`].
    Gain,
}

impl Objective {
    /// The closed-form objectives that `auto` (and `kd`, which starts from it) tries. Cosine is
    /// left out: its refinement costs several dense forwards' worth of products per block.
    pub const AUTO: &'static [Objective] =
        &[Objective::Lstsq, Objective::Weighted, Objective::Scale];

    pub const ALL: &'static [Objective] = &[
        Objective::Lstsq,
        Objective::Weighted,
        Objective::Scale,
        Objective::Cosine,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Objective::Lstsq => "lstsq",
            Objective::Weighted => "weighted",
            Objective::Scale => "scale",
            Objective::Cosine => "cosine",
            Objective::Rotation => "rotation",
            Objective::Gain => "gain",
        }
    }

    /// The objective named `s` (`lstsq`, `weighted`, `scale` or `cosine`).
    pub fn parse(s: &str) -> Option<Objective> {
        Objective::ALL.iter().copied().find(|o| o.name() == s)
    }
}

/// Where maps are folded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Maps {
    /// The default: for a closed-form heal `per-layer` on the post-norm families (Gemma 2, Gemma 3,
    /// OLMo 2), where it measured better (Gemma 3 270M, 8,192 heal tokens: 6..12 removed 280.2
    /// against 325.9, 8..11 120.5 against 132.9), `per-block` elsewhere (SmolLM2, 8 removed:
    /// per-layer 91.9 against 89.3); `kd` starts from `per-block` everywhere (Gemma 3 8..11: 93.4
    /// from per-block maps; from per-layer ones no step beat the start, 120.55).
    Auto,
    /// One map per removed block, into the `down_proj` of the layer before it (ReplaceMe).
    PerBlock,
    /// Those, and one map per kept layer after the first removed block, each fitted so that the
    /// layer's output matches the dense model's output of the same layer: the drift the removal
    /// leaves downstream is corrected where it arises. Each is validated like a block's map.
    PerLayer,
}

impl Maps {
    pub fn name(self) -> &'static str {
        match self {
            Maps::Auto => "auto",
            Maps::PerBlock => "per-block",
            Maps::PerLayer => "per-layer",
        }
    }

    /// What `auto` means for a family: per-layer when its MLP output passes a norm
    /// (`post_norm`), else per-block; the other choices are kept.
    pub fn resolve(self, post_norm: bool) -> Maps {
        match self {
            Maps::Auto if post_norm => Maps::PerLayer,
            Maps::Auto => Maps::PerBlock,
            m => m,
        }
    }
}

/// How to heal.
#[derive(Debug, Clone)]
pub struct HealOptions {
    /// Ridge weights to try, relative to the mean diagonal of `MᵀM`. Several need validation.
    pub alphas: Vec<f64>,
    pub prior: Prior,
    /// Calibration window length in tokens.
    pub ctx: usize,
    /// Objectives to try. Several need validation.
    pub objectives: Vec<Objective>,
    /// Every `holdout`-th calibration window is held out of the fits and used to validate them:
    /// each block takes the candidate with the lowest next-token KL to the dense model on those
    /// windows, and stays unhealed when no candidate beats leaving it so. 0 fits on every
    /// window and heals every block with the one objective and ridge weight given.
    pub holdout: usize,
    /// Where maps are folded.
    pub maps: Maps,
}

impl HealOptions {
    /// One objective and one ridge weight, every block healed, no validation (the behaviour
    /// before the guard).
    pub fn fixed(objective: Objective, alpha: f64, prior: Prior, ctx: usize) -> Self {
        HealOptions {
            alphas: vec![alpha],
            prior,
            ctx,
            objectives: vec![objective],
            holdout: 0,
            maps: Maps::PerBlock,
        }
    }

    /// The default: the [`Objective::AUTO`] objectives, [`DEFAULT_ALPHAS`], one window in [`DEFAULT_HOLDOUT`]
    /// held out, identity prior.
    pub fn validated(ctx: usize) -> Self {
        HealOptions {
            alphas: DEFAULT_ALPHAS.to_vec(),
            prior: Prior::Identity,
            ctx,
            objectives: Objective::AUTO.to_vec(),
            holdout: DEFAULT_HOLDOUT,
            maps: Maps::Auto,
        }
    }

    pub(super) fn check(&self) -> Result<()> {
        if self.ctx < 2 {
            return Err(Error::Invalid(format!(
                "`ctx` {}: the calibration window must be at least 2 tokens",
                self.ctx
            )));
        }
        if self.alphas.is_empty() || self.objectives.is_empty() {
            return Err(Error::Invalid(
                "healing needs at least one ridge weight and one objective".into(),
            ));
        }
        if let Some(a) = self.alphas.iter().find(|a| !(a.is_finite() && **a >= 0.0)) {
            return Err(Error::Invalid(format!(
                "`alpha` must be finite numbers ≥ 0, not `{a}`"
            )));
        }
        if self.holdout == 0 && (self.alphas.len() > 1 || self.objectives.len() > 1) {
            return Err(Error::Invalid(format!(
                "choosing among {} ridge weights and {} objectives needs held-out validation windows, but the hold-out is 0",
                self.alphas.len(),
                self.objectives.len()
            )));
        }
        if self.holdout == 1 {
            return Err(Error::Invalid(
                "a hold-out of 1 would leave no window to fit on; use 0 (no validation) or 2 or more".into(),
            ));
        }
        Ok(())
    }
}
