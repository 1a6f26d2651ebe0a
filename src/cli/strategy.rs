//! The `--strategy` flags of `plan` and `prune`: how much to remove, what to protect, and the
//! calibration set the criterion runs on.

use super::score::CalibArgs;
use depthprune::api::choose::LayerChoice;
use std::path::PathBuf;

/// How much to remove and what to keep, for `--strategy`.
#[derive(clap::Args, Debug, Clone)]
pub struct StrategyArgs {
    /// Remove exactly N layers.
    #[arg(long, requires = "strategy", value_name = "N", conflicts_with_all = ["target_params", "ratio"])]
    pub remove: Option<usize>,
    /// Remove as few layers as needed to reach at most P parameters.
    #[arg(
        long,
        requires = "strategy",
        value_name = "P",
        conflicts_with = "ratio"
    )]
    pub target_params: Option<u64>,
    /// Remove this fraction of the layers.
    #[arg(long, requires = "strategy", value_name = "R")]
    pub ratio: Option<f64>,
    /// Remove one contiguous block (the best by the metric).
    #[arg(long, requires = "strategy")]
    pub contiguous: bool,
    /// Never remove these: `first:K,last:K`.
    #[arg(long, requires = "strategy", value_name = "first:K,last:K")]
    pub protect: Option<String>,
    /// Read scores saved by `depthprune score --out` instead of running the metric.
    #[arg(long, requires = "strategy", value_name = "FILE")]
    pub scores: Option<PathBuf>,
    #[command(flatten)]
    pub calib: CalibArgs,
}

impl StrategyArgs {
    /// The library's choice, without the layers (`LayerArgs::choice` adds them).
    pub fn choice(&self) -> LayerChoice {
        LayerChoice {
            remove: self.remove,
            target_params: self.target_params,
            ratio: self.ratio,
            contiguous: self.contiguous,
            protect: self.protect.clone(),
            scores: self.scores.clone(),
            calib: self.calib.options(),
            ..Default::default()
        }
    }
}
