//! `--strategy M` on `plan` and `prune`: score the model (or read `--scores`), choose with
//! [`depthprune::select::strategy::choose`], and say why, with the `--drop` that reproduces it.

use super::common::LayerArgs;
use super::score::{describe_calibration, parse_metric, run_metric, CalibArgs};
use anyhow::{bail, Context, Result};
use depthprune::arch::ParamCounts;
use depthprune::score::LayerScores;
use depthprune::select::strategy::{choose, Amount, Protect};
use depthprune::select::{format_ranges, Removal};
use serde_json::json;
use std::fmt::Write;
use std::path::{Path, PathBuf};

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

/// A removal with the provenance of how it was chosen.
pub struct Chosen {
    pub removal: Removal,
    pub method: serde_json::Value,
    pub how_chosen: String,
    /// The explanation for stderr/stdout (scores behind the choice, the reproducing `--drop`).
    pub explain: Option<String>,
}

/// Turns `--drop`/`--keep` or `--strategy` into a removal.
pub fn resolve(
    layers: &LayerArgs,
    strat: &StrategyArgs,
    model_dir: &Path,
    n_layers: usize,
    counts: &ParamCounts,
) -> Result<Chosen> {
    let Some(name) = &layers.strategy else {
        return Ok(Chosen {
            removal: layers.removal(n_layers)?,
            method: layers.method(),
            how_chosen: layers.describe(),
            explain: None,
        });
    };
    let metric = parse_metric(name)?;
    let amount = match (strat.remove, strat.target_params, strat.ratio) {
        (Some(k), _, _) => Amount::Layers(k),
        (_, Some(p), _) => Amount::TargetParams(p),
        (_, _, Some(r)) => Amount::Ratio(r),
        _ => bail!("--strategy {name} needs an amount\nhint: add --remove N, --target-params P or --ratio R"),
    };
    let protect = match &strat.protect {
        Some(p) => Protect::parse(p)?,
        None => Protect::default(),
    };
    let scores: LayerScores = match &strat.scores {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("`{}`: cannot read", path.display()))?;
            let s: LayerScores = serde_json::from_str(&text)
                .with_context(|| format!("`{}`: not a score file", path.display()))?;
            if s.metric != metric || s.n_layers != n_layers || s.importance.len() != n_layers {
                bail!(
                    "`{}`: scores are {} for {} layers, but --strategy {} on a {n_layers}-layer model was asked",
                    path.display(),
                    s.metric.name(),
                    s.n_layers,
                    metric.name()
                );
            }
            s
        }
        None => {
            let steps = match amount {
                Amount::Layers(k)
                    if matches!(
                        metric,
                        depthprune::score::Metric::Greedy | depthprune::score::Metric::Healed
                    ) =>
                {
                    Some(k)
                }
                _ => None,
            };
            run_metric(model_dir, metric, &strat.calib, steps)?.scores
        }
    };
    let sel = choose(&scores, amount, strat.contiguous, protect, counts)?;
    let drop = format_ranges(&sel.removal.removed_ranges());
    let mut explain = String::new();
    writeln!(
        explain,
        "strategy     {}: {}",
        metric.name(),
        metric.describe()
    )?;
    writeln!(
        explain,
        "calibration  {}",
        describe_calibration(&scores.calibration)
    )?;
    if let Some((start, k, score)) = sel.block {
        writeln!(
            explain,
            "block        {start}..{} ({k} layers), block score {score:.6}",
            start + k
        )?;
    }
    writeln!(
        explain,
        "chosen layers and their scores (lower = less important):"
    )?;
    for (l, v) in &sel.justification {
        writeln!(explain, "  layer {l:>3}  {v:.6}")?;
    }
    writeln!(explain, "reproduce with: --drop {drop}")?;
    let method = json!({
        "kind": "strategy",
        "metric": metric.name(),
        "amount": amount,
        "contiguous": strat.contiguous,
        "protect": protect,
        "calibration": scores.calibration,
        "scores": scores.importance,
        "angular": scores.angular,
        "greedy": scores.greedy,
        "healed": scores.healed,
        "baseline_ppl": scores.baseline_ppl,
        "drop": drop,
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
    })
}
