//! The study behind `depthprune sweep`: for each strategy and each number of layers removed, choose
//! the layers, prune them virtually (the layers are skipped, nothing is written) and measure the
//! result on evaluation text against the dense model.
//!
//! The dense model runs once over the evaluation windows and its residual stream is kept
//! ([`DenseCache`]); each virtual prune restarts at the first layer it removes, or the first layer
//! healing changed, so the grid costs a fraction of one full forward per cell. Identical removals
//! chosen by different strategies are measured once.

pub mod cache;
mod spec;

pub use cache::{cache_bytes, DenseCache};
pub use spec::{parse_counts, StrategySpec};

use crate::arch::ParamCounts;
use crate::error::Result;
use crate::eval::{score_hidden, ReferenceLogProbs, Totals};
use crate::heal::{self, HealOptions, Overlay};
use crate::model::{DecoderLayer, Model, WeightSource};
use crate::progress::{Progress, Silent};
use crate::score::{Calibration, LayerScores};
use crate::select::strategy::{choose, Amount, Protect};
use crate::select::{format_ranges, Removal};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// The largest dense log-probability table kept for the whole sweep (rows × vocabulary × 4 bytes).
pub const REFERENCE_MAX_BYTES: u64 = 2 << 30;

/// Perplexity and divergence from the dense model on the evaluation windows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub perplexity: f64,
    /// Mean KL(dense ‖ pruned) per scored token, in nats.
    pub mean_kl: f64,
    /// Share of scored tokens where the pruned model's top token is the dense model's.
    pub top1_agreement: f64,
}

impl From<Totals> for Measured {
    fn from(t: Totals) -> Self {
        Measured {
            perplexity: t.perplexity(),
            mean_kl: t.mean_kl(),
            top1_agreement: t.top1_agreement(),
        }
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
    /// With `--heal`: the same removal with the least-squares maps folded in.
    pub healed: Option<Measured>,
    /// With `--heal`: the relative residual of each block's fit.
    pub heal_residuals: Option<Vec<f64>>,
    /// With `--heal`: what each block got, `A..B:objective` or `A..B:unhealed` when validation
    /// found no map better than none.
    #[serde(default)]
    pub heal_choices: Option<Vec<String>>,
}

/// The evaluation set, in words and numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalSet {
    pub file: String,
    pub ctx: usize,
    pub windows: usize,
    pub offset_tokens: usize,
    /// Tokens whose next-token prediction is scored.
    pub scored_tokens: usize,
}

/// The best choice at one count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Best {
    pub strategy: String,
    pub drop: String,
    pub perplexity: f64,
}

/// Everything a sweep measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sweep {
    pub model: String,
    pub n_layers: usize,
    pub dense_params: u64,
    pub dense_perplexity: f64,
    pub eval: EvalSet,
    pub calibration: Option<Calibration>,
    pub strategies: Vec<String>,
    pub counts: Vec<usize>,
    pub protect: Protect,
    /// The healing settings, when the sweep healed.
    pub heal: Option<serde_json::Value>,
    pub rows: Vec<SweepRow>,
    /// The lowest-perplexity choice (healed, when healed) at each count above 0, keyed by the
    /// count.
    pub best: BTreeMap<String, Best>,
    /// The scores behind each strategy, in the order of `strategies`.
    pub scores: Vec<LayerScores>,
    pub seconds: f64,
}

impl Sweep {
    /// The row with the lowest perplexity (healed, when healed) at `k` layers removed.
    pub fn best_at(&self, k: usize) -> Option<&SweepRow> {
        let key = |r: &SweepRow| r.healed.unwrap_or(r.measured).perplexity;
        self.rows
            .iter()
            .filter(|r| r.k == k && r.k > 0)
            .min_by(|a, b| key(a).total_cmp(&key(b)))
    }
}

/// What to sweep.
pub struct SweepPlan<'a> {
    /// Each strategy with its scores on the calibration set.
    pub strategies: Vec<(StrategySpec, LayerScores)>,
    /// Numbers of layers to remove (0 is the dense model).
    pub counts: Vec<usize>,
    pub protect: Protect,
    /// Heal each removal, fitting on these calibration tokens.
    pub heal: Option<(HealOptions, &'a [u32])>,
    pub eval: EvalSet,
    pub calibration: Option<Calibration>,
}

/// Runs the grid. `model_path` is where `model` was opened from (healing reads it).
/// `progress` counts cells.
pub fn run(
    model: &Model,
    model_path: &Path,
    cache: &DenseCache,
    plan: SweepPlan<'_>,
    progress: &dyn Progress,
) -> Result<Sweep> {
    let started = Instant::now();
    let n = model.n_layers();
    let counts_p = ParamCounts::from_config(&model.config().arch);
    let dense_params = counts_p.total();
    let dense_hidden = cache.dense_hidden();
    let dense = score_hidden(model, dense_hidden, None, cache.windows())?;
    // The dense model's log-probabilities, once, when they fit; otherwise each cell recomputes
    // the dense head alongside its own.
    let (w, t) = (cache.windows().len(), cache.windows()[0].len());
    let reference = (ReferenceLogProbs::bytes(w, t, model.vocab_size()) <= REFERENCE_MAX_BYTES)
        .then(|| ReferenceLogProbs::new(model, dense_hidden, cache.windows()))
        .transpose()?;
    let compare = |hidden: &candle_core::Tensor| -> Result<Measured> {
        Ok(Measured::from(match &reference {
            Some(r) => r.compare(model, hidden)?,
            None => score_hidden(model, hidden, Some(dense_hidden), cache.windows())?,
        }))
    };
    let dense_measured = Measured {
        perplexity: dense.perplexity(),
        mean_kl: 0.0,
        top1_agreement: 1.0,
    };
    let mut measured: HashMap<Vec<usize>, Measured> = HashMap::new();
    let mut healed: HashMap<Vec<usize>, Healed> = HashMap::new();
    let mut rows = Vec::new();
    progress.start("sweep", (plan.strategies.len() * plan.counts.len()) as u64);
    for (spec, scores) in &plan.strategies {
        for &k in &plan.counts {
            let removal = if k == 0 {
                None
            } else {
                Some(
                    choose(
                        scores,
                        Amount::Layers(k),
                        spec.contiguous,
                        plan.protect,
                        &counts_p,
                    )?
                    .removal,
                )
            };
            let removed = removal.as_ref().map(Removal::removed).unwrap_or_default();
            let m = if k == 0 {
                dense_measured
            } else if let Some(m) = measured.get(&removed) {
                *m
            } else {
                let m = compare(&cache.run(model, &removed, &BTreeMap::new())?)?;
                measured.insert(removed.clone(), m);
                m
            };
            // A removal that starts at layer 0 has no MLP before it to fold a map into; its
            // healed columns stay empty.
            let heal_result = match &plan.heal {
                Some((opts, calib)) if k > 0 && !removed.contains(&0) => {
                    Some(match healed.get(&removed) {
                        Some(h) => h.clone(),
                        None => {
                            let h = heal_and_measure(
                                model, model_path, cache, &removed, calib, opts, &compare,
                            )?;
                            healed.insert(removed.clone(), h.clone());
                            h
                        }
                    })
                }
                _ => None,
            };
            let params = removal
                .as_ref()
                .map_or(dense_params, |r| counts_p.after(r).total());
            rows.push(SweepRow {
                strategy: spec.label(),
                k,
                drop: removal
                    .as_ref()
                    .map(|r| format_ranges(&r.removed_ranges()))
                    .unwrap_or_default(),
                removed,
                params,
                params_kept: params as f64 / dense_params.max(1) as f64,
                measured: m,
                healed: heal_result.as_ref().map(|h| h.0),
                heal_residuals: heal_result.as_ref().map(|h| h.1.clone()),
                heal_choices: heal_result.map(|h| h.2),
            });
            progress.advance(1);
        }
    }
    progress.finish();
    let mut sweep = Sweep {
        model: model_path.display().to_string(),
        n_layers: n,
        dense_params,
        dense_perplexity: dense.perplexity(),
        eval: plan.eval,
        calibration: plan.calibration,
        strategies: plan.strategies.iter().map(|(s, _)| s.label()).collect(),
        counts: plan.counts,
        protect: plan.protect,
        heal: plan.heal.as_ref().map(|(o, calib)| {
            serde_json::json!({
                "method": heal::METHOD,
                "objectives": o.objectives.iter().map(|o| o.name()).collect::<Vec<_>>(),
                "prior": o.prior.name(),
                "alpha": o.alphas[0],
                "alphas": o.alphas,
                "holdout": o.holdout,
                "ctx": o.ctx,
                "calibration_tokens": calib.len() / o.ctx * o.ctx,
            })
        }),
        rows,
        best: BTreeMap::new(),
        scores: plan.strategies.into_iter().map(|(_, s)| s).collect(),
        seconds: started.elapsed().as_secs_f64(),
    };
    for &k in &sweep.counts {
        if let Some(r) = sweep.best_at(k) {
            let best = Best {
                strategy: r.strategy.clone(),
                drop: r.drop.clone(),
                perplexity: r.healed.unwrap_or(r.measured).perplexity,
            };
            sweep.best.insert(k.to_string(), best);
        }
    }
    Ok(sweep)
}

/// A healed removal as measured: the metrics, each block's fit residual and what each block got.
type Healed = (Measured, Vec<f64>, Vec<String>);

/// Heals `removed` on the calibration tokens and measures the healed model from the cache.
fn heal_and_measure(
    model: &Model,
    model_path: &Path,
    cache: &DenseCache,
    removed: &[usize],
    calib: &[u32],
    opts: &HealOptions,
    compare: &dyn Fn(&candle_core::Tensor) -> Result<Measured>,
) -> Result<Healed> {
    let healing = heal::heal(model_path, removed, calib, opts, &Silent)?;
    let overlay: Arc<dyn WeightSource> =
        Arc::new(Overlay::new(model.source().clone(), &healing.tensors)?);
    let mut replaced = BTreeMap::new();
    for b in healing.sites().filter(|b| b.healed()) {
        replaced.insert(
            b.fold_layer,
            DecoderLayer::load(overlay.as_ref(), model.config(), b.fold_layer)?,
        );
    }
    let m = compare(&cache.run(model, removed, &replaced)?)?;
    let choices = healing
        .blocks
        .iter()
        .map(|b| {
            let what = b.objective.map_or("unhealed", |o| o.name());
            format!("{}..{}:{what}", b.range.start, b.range.end)
        })
        .collect();
    Ok((
        m,
        healing.blocks.iter().map(|b| b.relative_residual).collect(),
        choices,
    ))
}
