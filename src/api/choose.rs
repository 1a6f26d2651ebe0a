//! Which layers to remove: named by hand (`drop`, `keep`), or chosen by a criterion (`strategy`)
//! with an amount, from scores computed here or read from a score file; with the provenance of
//! the choice and an explanation that ends with the `--drop` that reproduces it.

use super::score::{describe_calibration, CalibOptions};
use super::ModelSource;
use crate::arch::ParamCounts;
use crate::choose::strategy::{choose as choose_layers, Amount, Protect};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::score::{LayerScores, Metric};
use crate::select::{format_ranges, LayerSpec, Removal};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The layers named by hand, or the criterion that chooses them: at most one of the three. With
/// none, `prune --heal` with an amount chooses heal-aware with finalists
/// ([`crate::choose::finalists`]); anything else must name one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[cfg_attr(feature = "cli", group(required = false, multiple = false))]
#[serde(default)]
pub struct Layers {
    /// Layers to remove: N, A..B (half-open), A.., ..B, first:K, last:K, joined with commas.
    #[cfg_attr(
        feature = "cli",
        arg(long, value_name = "SPEC", allow_hyphen_values = true)
    )]
    pub drop: Option<String>,
    /// Layers to keep (all others are removed); same grammar as --drop.
    #[cfg_attr(
        feature = "cli",
        arg(long, value_name = "SPEC", allow_hyphen_values = true)
    )]
    pub keep: Option<String>,
    /// Choose the layers with a criterion (angular, bi, minitron, ppl, greedy, healed, last) and
    /// --remove N, --target-params P or --ratio R. With --heal it defaults to `healed`, whose
    /// finalists are healed and judged on held-out windows (--finalists); without, it is needed.
    #[cfg_attr(feature = "cli", arg(long, value_name = "M", value_parser = Metric::from_name))]
    pub strategy: Option<Metric>,
}

/// How the layers are chosen: [`Layers`], and for a strategy how many and from which scores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(default)]
pub struct LayerChoice {
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub layers: Layers,
    /// Remove exactly N layers: chosen by --strategy, or with --heal and no strategy heal-aware
    /// with finalists (the default one command: `prune MODEL --remove 8 --heal --calib TEXT`).
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", conflicts_with_all = ["target_params", "ratio", "drop", "keep"]))]
    pub remove: Option<usize>,
    /// Remove as few layers as needed to reach at most P parameters.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "P",
            conflicts_with_all = ["ratio", "drop", "keep"]
        )
    )]
    pub target_params: Option<u64>,
    /// Remove this fraction of the layers.
    #[cfg_attr(feature = "cli", arg(long, value_name = "R", conflicts_with_all = ["drop", "keep"]))]
    pub ratio: Option<f64>,
    /// Remove one contiguous block (the best by the metric).
    #[cfg_attr(feature = "cli", arg(long, requires = "strategy"))]
    pub contiguous: bool,
    /// Never remove these: `first:K,last:K`.
    #[cfg_attr(
        feature = "cli",
        arg(long, value_name = "first:K,last:K", conflicts_with_all = ["drop", "keep"])
    )]
    pub protect: Option<String>,
    /// Read scores saved by `depthprune score --out` instead of running the metric.
    #[cfg_attr(feature = "cli", arg(long, requires = "strategy", value_name = "FILE"))]
    pub scores: Option<PathBuf>,
    /// Heal-aware selection with --heal: how many of the proxy's best sets (a beam search) are
    /// healed for real and judged on the held-out windows, beside the greedy set with its last
    /// choice swapped, Block Influence's set and the best angular block; the lowest
    /// validation KL wins. 0 takes the proxy's first choice without judging.
    #[cfg_attr(feature = "cli", arg(long, value_name = "K"))]
    pub finalists: Option<usize>,
    /// With finalists: also judge them on N windows of calibration text right after the heal's
    /// tokens (disjoint from every fit and from the held-out windows), pooled with the held-out
    /// windows' KL by positions. Default 0: the held-out windows alone.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub judge_windows: Option<usize>,
    /// With finalists: the calibration tokens each finalist is healed on, the first of the heal's
    /// (default 16384). When --heal-samples is more, the winner is healed again on all of them.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub finalist_samples: Option<usize>,
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub calib: CalibOptions,
}

/// A removal with the provenance of how it was chosen.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub removal: Removal,
    /// The method as recorded in provenance.
    pub method: serde_json::Value,
    /// One sentence for the model card.
    pub how_chosen: String,
    /// For a strategy: the scores behind the choice and the reproducing `--drop`.
    pub explain: Option<String>,
    /// Layers named more than once (merged).
    pub duplicates: Vec<usize>,
}

impl LayerChoice {
    /// Removes the layers in `spec`.
    pub fn drop(spec: &str) -> Self {
        LayerChoice {
            layers: Layers {
                drop: Some(spec.to_string()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// The amount asked for, if any.
    pub fn amount(&self) -> Option<Amount> {
        match (self.remove, self.target_params, self.ratio) {
            (Some(k), _, _) => Some(Amount::Layers(k)),
            (_, Some(p), _) => Some(Amount::TargetParams(p)),
            (_, _, Some(r)) => Some(Amount::Ratio(r)),
            _ => None,
        }
    }

    /// Whether `prune --heal` chooses these layers heal-aware with finalists: no layers named,
    /// `healed` or no strategy with an amount, no score file, no contiguous block, and
    /// `finalists` not 0.
    pub fn heal_aware_finalists(&self) -> bool {
        let l = &self.layers;
        l.drop.is_none()
            && l.keep.is_none()
            && matches!(l.strategy, None | Some(Metric::Healed))
            && self.amount().is_some()
            && self.scores.is_none()
            && !self.contiguous
            && self.finalists != Some(0)
    }

    /// Whether choosing runs a metric on the model (rather than reading names or a file).
    pub fn runs_metric(&self) -> bool {
        self.layers.strategy.is_some() && self.scores.is_none()
    }

    /// The removal `drop` or `keep` names, for a model with `n_layers` layers.
    pub fn by_hand(&self, n_layers: usize) -> Result<Chosen> {
        let (r, method, how) = match (&self.layers.drop, &self.layers.keep) {
            (Some(d), None) => (
                Removal::drop(&LayerSpec::parse(d)?, n_layers)?,
                json!({"kind": "manual", "drop": d}),
                format!("chosen by hand with `--drop {d}`"),
            ),
            (None, Some(k)) => (
                Removal::keep(&LayerSpec::parse(k)?, n_layers)?,
                json!({"kind": "manual", "keep": k}),
                format!("chosen by hand with `--keep {k}`"),
            ),
            (Some(_), Some(_)) => return Err(Error::Invalid("give drop or keep, not both".into())),
            (None, None) => {
                return Err(Error::Invalid(
                    "name the layers to remove (drop or keep), or a strategy and an amount to choose them (with --heal, an amount alone: `remove` N)".into(),
                ))
            }
        };
        Ok(Chosen {
            duplicates: r.duplicates(),
            removal: r,
            method,
            how_chosen: how,
            explain: None,
        })
    }
}

/// The removal `choice` asks for on the model at `model` (resolved) with `n_layers` layers and
/// parameter counts `counts`, scoring it when a strategy needs that.
pub fn choose(
    model: &Path,
    choice: &LayerChoice,
    n_layers: usize,
    counts: &ParamCounts,
    run: &super::RunOptions,
    progress: &dyn Progress,
) -> Result<Chosen> {
    let metric = match (choice.layers.strategy, choice.amount()) {
        (Some(m), _) => m,
        // Heal-aware with finalists is chosen by `prune --heal` before this is reached.
        (None, Some(_)) if choice.layers.drop.is_none() && choice.layers.keep.is_none() => {
            return Err(Error::Invalid(
                "an amount (`remove`, `target_params` or `ratio`) without a `strategy` chooses heal-aware layers only when healing; hint: add --heal, or name a strategy (e.g. --strategy bi)".into(),
            ))
        }
        _ => return choice.by_hand(n_layers),
    };
    if choice.layers.drop.is_some() || choice.layers.keep.is_some() {
        return Err(Error::Invalid(
            "a strategy chooses the layers itself; give it, drop or keep, not two of them".into(),
        ));
    }
    let Some(amount) = choice.amount() else {
        return Err(Error::Invalid(format!(
            "strategy {} needs an amount: `remove` N, `target_params` P or `ratio` R",
            metric.name()
        )));
    };
    let protect = match &choice.protect {
        Some(p) => Protect::parse(p)?,
        None => Protect::default(),
    };
    let scores = match &choice.scores {
        Some(path) => read_scores(path, metric, n_layers)?,
        None => {
            let steps = match amount {
                Amount::Layers(k) if matches!(metric, Metric::Greedy | Metric::Healed) => Some(k),
                _ => None,
            };
            let req = super::score::ScoreRequest {
                metric,
                calib: choice.calib.clone(),
                steps,
                // The caller's precision, threads and kernel: a default here would score an f32
                // checkpoint in f32 under `prune --compute bf16`.
                run: run.clone(),
                ..Default::default()
            };
            super::score::score(&ModelSource::new(model), &req, progress)?.scores
        }
    };
    let sel = choose_layers(&scores, amount, choice.contiguous, protect, counts)?;
    let drop = format_ranges(&sel.removal.removed_ranges());
    let mut explain = String::new();
    let _ = writeln!(
        explain,
        "strategy     {}: {}",
        metric.name(),
        metric.describe()
    );
    let _ = writeln!(
        explain,
        "calibration  {}",
        describe_calibration(&scores.calibration)
    );
    if let Some((start, k, score)) = sel.block {
        let _ = writeln!(
            explain,
            "block        {start}..{} ({k} layers), block score {score:.6}",
            start + k
        );
    }
    let _ = writeln!(
        explain,
        "chosen layers and their scores (lower = less important):"
    );
    for (l, v) in &sel.justification {
        let _ = writeln!(explain, "  layer {l:>3}  {v:.6}");
    }
    let _ = writeln!(explain, "reproduce with: --drop {drop}");
    let method = json!({
        "kind": "strategy",
        "metric": metric.name(),
        "amount": amount,
        "contiguous": choice.contiguous,
        "protect": protect,
        "calibration": scores.calibration,
        "scores": scores.importance,
        "angular": scores.angular,
        "greedy": scores.greedy,
        "healed": scores.healed,
        "baseline_ppl": scores.baseline_ppl,
        "drop": drop,
        "kernels": crate::model::kernel::report(),
    });
    Ok(Chosen {
        removal: sel.removal,
        method,
        how_chosen: format!(
            "chosen by `--strategy {}` ({}); calibration {}; reproduce with `--drop {drop}`",
            metric.name(),
            metric.describe(),
            describe_calibration(&scores.calibration)
        ),
        explain: Some(explain),
        duplicates: Vec::new(),
    })
}

/// Scores saved by `score`, checked against the metric and the model.
fn read_scores(path: &Path, metric: Metric, n_layers: usize) -> Result<LayerScores> {
    let text = crate::checkpoint::limits::read_text_capped(
        path,
        crate::checkpoint::limits::MAX_JSON_BYTES,
    )?;
    let s: LayerScores = serde_json::from_str(&text)
        .map_err(|e| Error::Invalid(format!("`{}`: not a score file: {e}", path.display())))?;
    if s.metric != metric || s.n_layers != n_layers || s.importance.len() != n_layers {
        return Err(Error::Invalid(format!(
            "`{}`: scores are {} for {} layers, but strategy {} on a {n_layers}-layer model was asked",
            path.display(),
            s.metric.name(),
            s.n_layers,
            metric.name()
        )));
    }
    Ok(s)
}
