//! What a heal is asked to do: the method, how the maps are fitted (ridge weights, prior,
//! hold-out, map placement, distillation), and the calibration text, with the CLI's defaults and
//! the checks that refuse combinations that cannot work.

use crate::api::text::CalibText;
use crate::error::{Error, Result};
use crate::heal::{self, HealOptions, KdOptions, Maps, Objective, Prior};
use serde::{Deserialize, Serialize};

/// The healing methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum HealMethod {
    /// Held-out validation chooses among `lstsq`, `weighted` and `scale` per block, or none.
    #[default]
    Auto,
    Lstsq,
    Weighted,
    Scale,
    /// The least-squares map refined by cosine distance.
    Cosine,
    /// `auto`, then the maps trained on the dense model's next-token distribution.
    Kd,
}

impl HealMethod {
    pub const ALL: [HealMethod; 6] = [
        HealMethod::Auto,
        HealMethod::Lstsq,
        HealMethod::Weighted,
        HealMethod::Scale,
        HealMethod::Cosine,
        HealMethod::Kd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HealMethod::Auto => "auto",
            HealMethod::Lstsq => "lstsq",
            HealMethod::Weighted => "weighted",
            HealMethod::Scale => "scale",
            HealMethod::Cosine => "cosine",
            HealMethod::Kd => "kd",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// How the maps are fitted (the calibration text is given beside them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(default)]
pub struct HealFit {
    /// Ridge weights to try, relative to the mean diagonal of MᵀM (comma-separated); each block
    /// takes the one with the lowest held-out residual. With --holdout 0, give exactly one.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_delimiter = ',',
            default_value = "1e-4,1e-3,1e-2,1e-1",
            value_name = "A[,A...]"
        )
    )]
    pub alpha: Vec<f64>,
    /// What the ridge pulls the map towards: `identity` (keep the MLP output) or `zero` (the
    /// ReplaceMe paper's plain ridge).
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value = "identity"))]
    pub ridge: Prior,
    /// Calibration tokens to heal on (cut into windows of --ctx), validation windows included;
    /// fewer when the text ends first (with a warning). Heal-aware finalists use the first 16,384.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = heal::DEFAULT_HEAL_SAMPLES, value_name = "N"))]
    pub heal_samples: usize,
    /// Hold out one calibration window in N for validation: each block keeps the map (objective
    /// and ridge weight) with the lowest next-token KL to the dense model there, or none when
    /// leaving it unhealed is better. 0 heals every block without validation.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = heal::DEFAULT_HOLDOUT, value_name = "N"))]
    pub holdout: usize,
    /// Where maps go: `per-block` (one per removed block, into the layer before it),
    /// `per-layer` (also one per kept layer after the first removed block, each fitted to the
    /// dense output of that layer and validated like the others), or `auto` (the default:
    /// per-layer on the post-norm families Gemma 2/3 and OLMo 2, where it measured better,
    /// per-block elsewhere).
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value = "auto"))]
    pub maps: Maps,
    /// With `kd`: training steps, one calibration window each (the fit windows in turn). Training
    /// stops at these steps or at --time-budget, whichever comes first: raise both for a long run.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = heal::kd::DEFAULT_STEPS, value_name = "N"))]
    pub steps: usize,
    /// With `kd`: Adam's learning rate for the maps.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = heal::kd::DEFAULT_LR, value_name = "LR"))]
    pub lr: f64,
    /// With `kd`: steps between validations on the held-out windows (the best maps are kept).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = heal::kd::DEFAULT_EVAL_EVERY, value_name = "N"))]
    pub kd_eval_every: usize,
    /// With `kd`: validations without improvement before training stops (0: never early).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = heal::kd::DEFAULT_PATIENCE, value_name = "N"))]
    pub patience: usize,
    /// With `kd`: rank of the updates trained on every linear weight of the kept layers after
    /// the first cut and merged into them (0: train the maps alone).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = heal::kd::DEFAULT_RANK, value_name = "R"))]
    pub rank: usize,
    /// With `kd`: peak Adam learning rate of the low-rank updates (warm-up, then cosine decay).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = heal::kd::DEFAULT_LOWRANK_LR, value_name = "LR"))]
    pub lowrank_lr: f64,
    /// With `kd`: the heal's time, after which training stops (the learning-rate schedule follows
    /// the time; the best validated weights are kept). The closed-form fit and the dense passes
    /// before training count against it; training gets at least a tenth. Accepts `900`, `15m`
    /// or `1h`. For `prune` it is the whole command's: heal-aware selection and its finalists
    /// take up to 40% of it, healing what is left, and the progress messages show the time left.
    /// Training also stops at --steps (default 128), so a budget beyond that needs more steps.
    #[cfg_attr(feature = "cli", arg(long, value_parser = parse_seconds, value_name = "TIME"))]
    pub time_budget: Option<f64>,
}

/// Seconds from `900`, `900s`, `15m` or `1h`.
pub fn parse_seconds(s: &str) -> std::result::Result<f64, String> {
    let t = s.trim();
    let (num, unit) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1.0),
        Some((i, 'm')) => (&t[..i], 60.0),
        Some((i, 'h')) => (&t[..i], 3600.0),
        _ => (t, 1.0),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v * unit),
        _ => Err(format!(
            "`{s}` is not a duration; write seconds (`900`) or minutes/hours (`15m`, `1h`)"
        )),
    }
}

impl Default for HealFit {
    fn default() -> Self {
        HealFit {
            alpha: heal::DEFAULT_ALPHAS.to_vec(),
            ridge: Prior::Identity,
            heal_samples: heal::DEFAULT_HEAL_SAMPLES,
            holdout: heal::DEFAULT_HOLDOUT,
            maps: Maps::Auto,
            steps: heal::kd::DEFAULT_STEPS,
            lr: heal::kd::DEFAULT_LR,
            kd_eval_every: heal::kd::DEFAULT_EVAL_EVERY,
            patience: heal::kd::DEFAULT_PATIENCE,
            rank: heal::kd::DEFAULT_RANK,
            lowrank_lr: heal::kd::DEFAULT_LOWRANK_LR,
            time_budget: None,
        }
    }
}

impl HealFit {
    /// The library options for `method` with windows of `ctx` tokens, refusing combinations
    /// that cannot work.
    pub fn options(&self, method: HealMethod, ctx: usize) -> Result<HealOptions> {
        let objectives = match method {
            HealMethod::Auto | HealMethod::Kd => Objective::AUTO.to_vec(),
            m => vec![Objective::parse(m.name())
                .ok_or_else(|| Error::Invalid(format!("unknown healing method `{}`", m.name())))?],
        };
        let invalid = |m: &str| Err(Error::Invalid(m.to_string()));
        if self.holdout == 0 && self.alpha.len() != 1 {
            return Err(Error::Invalid(format!(
                "`holdout` 0 heals without validation, so it takes exactly one `alpha` (e.g. 1e-3), not {}",
                self.alpha.len()
            )));
        }
        if self.holdout == 0 && method == HealMethod::Kd {
            return invalid("heal kd stops training on held-out windows, so it needs `holdout` 2 or more, not 0");
        }
        if self.holdout == 0 && objectives.len() != 1 {
            return invalid("`holdout` 0 heals without validation, so it needs one method (lstsq or weighted), not `auto`");
        }
        if self.holdout == 1 {
            return invalid(
                "`holdout` 1 would hold out every window; use 2 or more, or 0 for no validation",
            );
        }
        Ok(HealOptions {
            alphas: self.alpha.clone(),
            prior: self.ridge,
            ctx,
            objectives,
            holdout: self.holdout,
            maps: match (method, self.maps) {
                // kd starts from per-block maps: from per-layer maps on Gemma 3 (8..11 removed)
                // no training step beat the start in 48 steps (120.55), from per-block it
                // reached 93.4.
                (HealMethod::Kd, Maps::Auto) => Maps::PerBlock,
                (_, m) => m,
            },
        })
    }

    /// The distillation options of `kd`.
    pub fn kd(&self) -> KdOptions {
        KdOptions {
            steps: self.steps,
            lr: self.lr,
            eval_every: self.kd_eval_every,
            patience: self.patience,
            rank: self.rank,
            lowrank_lr: self.lowrank_lr,
            time_limit: self.time_budget,
        }
    }
}

/// What to heal on and how: a method, its fit, and the calibration text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(default)]
pub struct HealRequest {
    /// `auto` tries every objective; `lstsq` fits plain least squares; `weighted` weights each
    /// token by the inverse norm of its target (so attention-sink tokens do not dominate);
    /// `scale` fits one scalar per block (magnitude compensation); `cosine` refines the
    /// least-squares map to minimise the cosine distance (slower); `kd` starts from `auto` and
    /// trains only the maps to match the dense model's next-token distribution (--steps, --lr).
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value = "auto"))]
    pub method: HealMethod,
    /// The calibration text, its window length and offset (`calib`, `ctx`, `calib_offset`),
    /// tokenized with the dense model's tokenizer; healing takes `heal_samples` of its tokens.
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub text: CalibText,
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub fit: HealFit,
    /// Keep only one layer of the dense model resident, read from the mapped file when a
    /// forward needs it (slower, for models larger than memory).
    #[cfg_attr(feature = "cli", arg(long))]
    pub offload: bool,
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub tasks: super::tasks::HealTasks,
    /// How the call runs: precision, threads, symlink policy (the CLI's global flags).
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", arg(skip))]
    pub run: crate::api::RunOptions,
}

impl Default for HealRequest {
    fn default() -> Self {
        HealRequest {
            method: HealMethod::Auto,
            text: CalibText::default(),
            fit: HealFit::default(),
            offload: false,
            tasks: Default::default(),
            run: crate::api::RunOptions::default(),
        }
    }
}
