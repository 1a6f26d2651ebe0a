//! What a sweep produces: each cell's measurements with their intervals ([`Measured`]), one row
//! per strategy and count ([`SweepRow`]), the evaluation slice's description ([`EvalSet`]), and
//! the whole study as `sweep.json` holds it ([`Sweep`]).

use super::best::{self, Best};
use super::tasks::{SweepTask, TaskMetric};
use crate::choose::stability::{ChoiceStability, LayerStability};
use crate::choose::strategy::Protect;
use crate::eval::{Bootstrap, Difference, Interval, Totals};
use crate::score::{Calibration, LayerScores};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Perplexity and divergence from the dense model on the evaluation windows, with 95% intervals
/// from a bootstrap over the windows (absent in sweeps written before intervals existed).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub perplexity: f64,
    /// Mean KL(dense ‖ pruned) per scored token, in nats.
    pub mean_kl: f64,
    /// Share of scored tokens where the pruned model's top token is the dense model's.
    pub top1_agreement: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity_ci: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_kl_ci: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top1_agreement_ci: Option<Interval>,
}

impl Measured {
    /// Figures without intervals.
    pub fn point(perplexity: f64, mean_kl: f64, top1_agreement: f64) -> Self {
        Measured {
            perplexity,
            mean_kl,
            top1_agreement,
            perplexity_ci: None,
            mean_kl_ci: None,
            top1_agreement_ci: None,
        }
    }

    /// The figures of per-window sums, with bootstrap intervals over the windows.
    pub fn from_windows(windows: &[Totals], boot: &Bootstrap) -> Self {
        let mut t = Totals::default();
        for w in windows {
            t.add(*w);
        }
        let ci = boot.totals(windows);
        Measured {
            perplexity: t.perplexity(),
            mean_kl: t.mean_kl(),
            top1_agreement: t.top1_agreement(),
            perplexity_ci: Some(ci.perplexity),
            mean_kl_ci: Some(ci.mean_kl),
            top1_agreement_ci: Some(ci.top1_agreement),
        }
    }
}

impl From<Totals> for Measured {
    fn from(t: Totals) -> Self {
        Measured::point(t.perplexity(), t.mean_kl(), t.top1_agreement())
    }
}

/// One cell of the grid: a strategy at one number of layers removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepRow {
    pub strategy: String,
    /// Layers removed.
    pub k: usize,
    /// The removed layers, 0-based.
    pub removed: Vec<usize>,
    /// The same as half-open ranges (the `--drop` SPEC that reproduces it).
    pub drop: String,
    /// Parameters after removal.
    pub params: u64,
    /// Parameters kept, as a share of the dense model's.
    pub params_kept: f64,
    #[serde(flatten)]
    pub measured: Measured,
    /// Perplexity on the validation slice, the figure the best choice is made on.
    #[serde(default)]
    pub select_perplexity: Option<f64>,
    /// Evaluation perplexity minus the dense model's, with a paired interval over the windows.
    #[serde(default)]
    pub ppl_vs_dense: Option<Difference>,
    /// With `--heal`: the same removal with the least-squares maps folded in.
    pub healed: Option<Measured>,
    /// With `--heal`: the healed removal's perplexity on the validation slice.
    #[serde(default)]
    pub healed_select_perplexity: Option<f64>,
    /// With `--heal A,B,…`: the removal healed by each method after the first (whose figures
    /// are `healed`), by method name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub healed_by: BTreeMap<String, Measured>,
    /// With `--heal`: the relative residual of each block's fit.
    pub heal_residuals: Option<Vec<f64>>,
    /// With `--heal`: what each block got, `A..B:objective` or `A..B:unhealed` when validation
    /// found no map better than none.
    #[serde(default)]
    pub heal_choices: Option<Vec<String>>,
    /// With `--heal --finalists K`, for the `healed` strategy: the sets healed and judged on
    /// held-out calibration windows; the cell is the one chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalists: Option<Vec<crate::choose::finalists::Finalist>>,
    /// With `--tasks`: each task's headline metric (unhealed; the dense model's at 0 removed),
    /// in the order of [`Sweep::task_list`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_metrics: Vec<TaskMetric>,
    /// With `--tasks` and `--heal`: the same, healed by the first method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub healed_task_metrics: Vec<TaskMetric>,
    /// With `--tasks` and `--heal A,B,…`: the same, healed by each method after the first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub healed_by_task_metrics: BTreeMap<String, Vec<TaskMetric>>,
    /// With `--resamples`: how often resampled calibration text picks the same layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stability: Option<ChoiceStability>,
}

/// A slice of text, in words and numbers: the evaluation set, or the validation set the best
/// choices are made on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalSet {
    pub file: String,
    pub ctx: usize,
    pub windows: usize,
    pub offset_tokens: usize,
    /// Tokens whose next-token prediction is scored.
    pub scored_tokens: usize,
}

/// Everything a sweep measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sweep {
    /// Where the model was read from, as given (a path, or a hub reference).
    pub model: String,
    /// The model's name: a GGUF's `general.name`, else the file or folder name (issue 26: the
    /// report's title, instead of a cache path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    pub n_layers: usize,
    pub dense_params: u64,
    pub dense_perplexity: f64,
    #[serde(default)]
    pub dense_perplexity_ci: Option<Interval>,
    pub eval: EvalSet,
    /// The validation slice the best choice at each count is made on (absent in sweeps written
    /// before it existed, whose choices were made on the evaluation slice).
    #[serde(default)]
    pub select: Option<EvalSet>,
    pub calibration: Option<Calibration>,
    /// The bootstrap behind every interval.
    #[serde(default)]
    pub bootstrap: Option<Bootstrap>,
    /// With `--tasks`: each task, its headline metric and the dense model's result, in the order
    /// given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_list: Vec<SweepTask>,
    /// With `--resamples`: calibration resamples per strategy.
    #[serde(default)]
    pub resamples: Option<usize>,
    /// With `--resamples`: per-layer score stability of each criterion that reads text, choosing
    /// as many layers as the report's count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layer_stability: Vec<(String, LayerStability)>,
    pub strategies: Vec<String>,
    pub counts: Vec<usize>,
    pub protect: Protect,
    /// The healing settings, when the sweep healed.
    pub heal: Option<serde_json::Value>,
    pub rows: Vec<SweepRow>,
    /// The choice with the lowest validation perplexity (healed, when healed) at each count
    /// above 0, keyed by the count, with its evaluation figures and the runner-up.
    pub best: BTreeMap<String, Best>,
    /// The scores behind each strategy, in the order of `strategies`.
    pub scores: Vec<LayerScores>,
    pub seconds: f64,
    /// The kernels the products ran on, with their measured rates (issue 34).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernels: Vec<crate::model::kernel::KernelRecord>,
}

impl Sweep {
    /// The count the report's generations and the stability summary use unless told: the
    /// largest of at most 8 layers removed, else the largest.
    pub fn default_k(&self) -> usize {
        let max = self.counts.iter().copied().max().unwrap_or(0);
        self.counts
            .iter()
            .copied()
            .filter(|&k| k > 0 && k <= 8)
            .max()
            .unwrap_or(max)
    }

    /// The row chosen at `k` layers removed: lowest validation perplexity (healed, when healed).
    pub fn best_at(&self, k: usize) -> Option<&SweepRow> {
        best::best_at(&self.rows, k)
    }
}
