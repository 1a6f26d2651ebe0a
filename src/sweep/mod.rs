//! The study behind `depthprune sweep`: for each strategy and each number of layers removed, choose
//! the layers, prune them virtually (the layers are skipped, nothing is written) and measure the
//! result on evaluation text against the dense model.
//!
//! The dense model runs once over the evaluation windows and its residual stream is kept
//! ([`DenseCache`]); each virtual prune restarts at the first layer it removes, or the first layer
//! healing changed, so the grid costs a fraction of one full forward per cell. Identical removals
//! chosen by different strategies are measured once.
//!
//! Every cell is measured on two slices of text (issue 15): the validation slice, on which the
//! best choice at each count is made ([`best`]), and the evaluation slice, which reports it with
//! 95% intervals from a seeded bootstrap over windows and paired differences against the dense
//! model and between the best and the runner-up. Optional columns: each benchmark's headline
//! metric, unhealed and healed, with its retention against dense ([`tasks`]), and the stability
//! of each choice under resampled calibration text.

pub mod best;
pub mod csv;
mod finalists;
pub mod journal;
mod rows;
mod spec;
pub mod tasks;

pub use crate::model::stream::{cache_bytes, DenseCache};
pub use best::{Best, RunnerUp};
pub use journal::Journal;
pub use rows::{EvalSet, Measured, Sweep, SweepRow};
pub use spec::{parse_counts, StrategySpec};
pub use tasks::{SweepTask, TaskMetric, TaskPlan, TaskScorer};

use crate::arch::ParamCounts;
use crate::choose::stability::{chosen_sets, ChoiceStability};
use crate::choose::strategy::{choose, Amount, Protect};
use crate::error::{Error, Result};
use crate::eval::{score_hidden_windows, Bootstrap, ReferenceLogProbs, Totals};
use crate::heal::{self, HealOptions, Overlay};
use crate::model::{DecoderLayer, Model, WeightSource};
use crate::progress::{Progress, Silent};
use crate::score::{Calibration, LayerScores, Metric};
use crate::select::{format_ranges, Removal};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// The largest dense log-probability table kept for the whole sweep (rows × vocabulary × 4 bytes),
/// on the evaluation slice.
pub const REFERENCE_MAX_BYTES: u64 = 2 << 30;

/// What to sweep.
pub struct SweepPlan<'a> {
    /// Each strategy with its scores on the calibration set.
    pub strategies: Vec<(StrategySpec, LayerScores)>,
    /// For each strategy (same order), its scores on resampled calibration windows; empty for
    /// none.
    pub resampled: Vec<Vec<LayerScores>>,
    /// Numbers of layers to remove (0 is the dense model).
    pub counts: Vec<usize>,
    pub protect: Protect,
    /// Heal each removal, fitting on these calibration tokens.
    pub heal: Option<(HealOptions, &'a [u32])>,
    /// The first healing method's name (`heal.name` in `sweep.json`).
    pub heal_name: String,
    /// With `heal`: heal this many of the heal-aware proxy's best sets (and other criteria's) per
    /// count of the `healed` strategy, and keep the lowest held-out KL.
    pub finalists: Option<usize>,
    /// More healing methods to measure each removal with, by name, on the same tokens (their
    /// figures go to [`SweepRow::healed_by`]; the best choice follows the first method).
    pub heal_also: Vec<(String, HealOptions)>,
    pub eval: EvalSet,
    pub select: EvalSet,
    pub calibration: Option<Calibration>,
    pub tasks: Option<TaskPlan<'a>>,
    pub bootstrap: Bootstrap,
}

/// One slice's dense cache; for the evaluation slice, with the dense log-probabilities when they
/// fit. The validation slice only ranks removals by perplexity, so it skips the divergence (half
/// of a cell's cost is the KL over the vocabulary).
struct Slice<'a> {
    cache: &'a DenseCache,
    divergence: bool,
    reference: Option<ReferenceLogProbs>,
}

impl<'a> Slice<'a> {
    fn new(model: &Model, cache: &'a DenseCache, divergence: bool) -> Result<Self> {
        let (w, t) = (cache.windows().len(), cache.windows()[0].len());
        let fits = ReferenceLogProbs::bytes(w, t, model.vocab_size()) <= REFERENCE_MAX_BYTES;
        let reference = (divergence && fits)
            .then(|| ReferenceLogProbs::new(model, cache.dense_hidden(), cache.windows()))
            .transpose()?;
        Ok(Slice {
            cache,
            divergence,
            reference,
        })
    }

    /// Per-window sums of the final hidden states `hidden`, against the dense model when the
    /// slice measures divergence; without a stored reference, the dense head runs alongside.
    fn compare(&self, model: &Model, hidden: &candle_core::Tensor) -> Result<Vec<Totals>> {
        match &self.reference {
            Some(r) => r.compare_windows(model, hidden),
            None => score_hidden_windows(
                model,
                hidden,
                self.divergence.then(|| self.cache.dense_hidden()),
                self.cache.windows(),
            ),
        }
    }

    /// Per-window sums with `removed` skipped and `replaced` swapped in.
    fn measure(
        &self,
        model: &Model,
        removed: &[usize],
        replaced: &BTreeMap<usize, DecoderLayer>,
    ) -> Result<Vec<Totals>> {
        self.compare(model, &self.cache.run(model, removed, replaced)?)
    }
}

/// A removal measured on both slices: per-window sums on the evaluation windows, and the
/// validation perplexity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Cell {
    eval: Vec<Totals>,
    select: f64,
}

/// Perplexity of summed windows.
fn perplexity(windows: &[Totals]) -> f64 {
    let mut t = Totals::default();
    for w in windows {
        t.add(*w);
    }
    t.perplexity()
}

/// Runs the grid. `model_path` is where `model` was opened from (healing reads it). `cache` holds
/// the evaluation windows, `select_cache` the validation windows. `progress` counts cells.
///
/// Each finished cell goes to `journal` at once, and a cell already in it is taken from there
/// instead of being measured (issue 33). Before each cell a stop request
/// ([`crate::base::cancel`]) ends the run with [`Error::Interrupted`].
pub fn run(
    model: &Model,
    model_path: &Path,
    cache: &DenseCache,
    select_cache: &DenseCache,
    plan: SweepPlan<'_>,
    journal: &mut Journal,
    progress: &dyn Progress,
) -> Result<Sweep> {
    let started = Instant::now();
    let n = model.n_layers();
    let boot = plan.bootstrap;
    let counts_p = ParamCounts::from_config(&model.config().arch);
    let dense_params = counts_p.total();
    if !plan.resampled.is_empty() && plan.resampled.len() != plan.strategies.len() {
        return Err(Error::Invalid(
            "resampled scores must be given for every strategy or none".into(),
        ));
    }
    let dense_windows = score_hidden_windows(model, cache.dense_hidden(), None, cache.windows())?;
    let eval = Slice::new(model, cache, true)?;
    let select = Slice::new(model, select_cache, false)?;
    let dense_select = perplexity(&score_hidden_windows(
        model,
        select_cache.dense_hidden(),
        None,
        select_cache.windows(),
    )?);
    let mut dense_measured = Measured::from_windows(&dense_windows, &boot);
    dense_measured.mean_kl = 0.0;
    dense_measured.top1_agreement = 1.0;
    dense_measured.mean_kl_ci = Some([0.0, 0.0]);
    dense_measured.top1_agreement_ci = Some([1.0, 1.0]);
    let dense_cell = Cell {
        eval: dense_windows.clone(),
        select: dense_select,
    };
    let mut measured: HashMap<Vec<usize>, Cell> = HashMap::new();
    let mut healed: HashMap<Vec<usize>, Healed> = HashMap::new();
    let mut healed_also: HashMap<(String, Vec<usize>), Healed> = HashMap::new();
    let mut task_cells: HashMap<Vec<usize>, Vec<TaskMetric>> = HashMap::new();
    let tasks = plan.tasks.as_ref().map(|t| (t, &boot));
    let dense_tasks = match tasks {
        Some((t, _)) => {
            progress.message(&format!(
                "scoring the dense model on {} tasks",
                t.tasks.len()
            ));
            tasks::measure(t, model, &[], &boot)?
        }
        None => Vec::new(),
    };
    let mut rows = Vec::new();
    let mut cells: Vec<(Cell, Option<Cell>)> = Vec::new();
    let total = plan.strategies.len() * plan.counts.len();
    progress.start("sweep", total as u64);
    let mut judged = match (&plan.heal, plan.finalists) {
        (Some((opts, calib)), Some(w))
            if w > 0
                && plan
                    .strategies
                    .iter()
                    .any(|(s, _)| s.metric == Metric::Healed && !s.contiguous) =>
        {
            Some(finalists::CellFinalists::new(
                model, calib, opts, w, &Silent,
            )?)
        }
        _ => None,
    };
    for (si, (spec, scores)) in plan.strategies.iter().enumerate() {
        for &k in &plan.counts {
            if crate::base::cancel::requested() {
                return Err(Error::Interrupted(format!(
                    "interrupted: {} of {total} cells finished",
                    rows.len()
                )));
            }
            // A cell measured before, as the uninterrupted run would have it; the caches of
            // removals measured once get what it measured, as they would have.
            if let Some(e) = journal.take(&spec.label(), k) {
                let removed = &e.row.removed;
                if k > 0 {
                    measured.entry(removed.clone()).or_insert(e.cell.clone());
                }
                if let Some(h) = &e.healed {
                    healed.entry(removed.clone()).or_insert(h.clone());
                }
                for (name, h) in &e.healed_also {
                    let key = (name.clone(), removed.clone());
                    healed_also.entry(key).or_insert(h.clone());
                }
                if k > 0 && !e.row.task_metrics.is_empty() {
                    let t = e.row.task_metrics.clone();
                    task_cells.entry(removed.clone()).or_insert(t);
                }
                rows.push(e.row);
                cells.push((e.cell, e.healed.map(|h| h.cell)));
                progress.step_done(&format!("{}, {k} removed (saved)", spec.label()));
                continue;
            }
            let mut cell_finalists = None;
            let removal = match (&mut judged, &plan.heal) {
                _ if k == 0 => None,
                (Some(j), Some((opts, calib)))
                    if spec.metric == Metric::Healed && !spec.contiguous =>
                {
                    let (set, list, healing) =
                        j.choose(k, plan.protect, model_path, calib, opts)?;
                    cell_finalists = Some(list);
                    if !healed.contains_key(&set) {
                        let h = measure_healed(model, &eval, &select, &set, &healing, tasks)?;
                        healed.insert(set.clone(), h);
                    }
                    Some(Removal::from_layers(n, set)?)
                }
                _ => Some(
                    choose(
                        scores,
                        Amount::Layers(k),
                        spec.contiguous,
                        plan.protect,
                        &counts_p,
                    )?
                    .removal,
                ),
            };
            let removed = removal.as_ref().map(Removal::removed).unwrap_or_default();
            let cell = if k == 0 {
                dense_cell.clone()
            } else if let Some(c) = measured.get(&removed) {
                c.clone()
            } else {
                let none = BTreeMap::new();
                let c = Cell {
                    eval: eval.measure(model, &removed, &none)?,
                    select: perplexity(&select.measure(model, &removed, &none)?),
                };
                measured.insert(removed.clone(), c.clone());
                c
            };
            let m = if k == 0 {
                dense_measured
            } else {
                Measured::from_windows(&cell.eval, &boot)
            };
            // A removal that starts at layer 0 has no MLP before it to fold a map into; its
            // healed columns stay empty.
            let heal_result = match &plan.heal {
                Some((opts, calib)) if k > 0 && !removed.contains(&0) => {
                    Some(match healed.get(&removed) {
                        Some(h) => h.clone(),
                        None => {
                            let h = heal_and_measure(
                                model, model_path, &eval, &select, &removed, calib, opts, tasks,
                            )?;
                            healed.insert(removed.clone(), h.clone());
                            h
                        }
                    })
                }
                _ => None,
            };
            let mut healed_by = BTreeMap::new();
            let mut healed_also_cell = BTreeMap::new();
            if let Some((_, calib)) = &plan.heal {
                for (name, opts) in &plan.heal_also {
                    if k == 0 || removed.contains(&0) {
                        break;
                    }
                    let key = (name.clone(), removed.clone());
                    let h = match healed_also.get(&key) {
                        Some(h) => h.clone(),
                        None => {
                            let h = heal_and_measure(
                                model, model_path, &eval, &select, &removed, calib, opts, tasks,
                            )?;
                            healed_also.insert(key, h.clone());
                            h
                        }
                    };
                    healed_by.insert(name.clone(), Measured::from_windows(&h.cell.eval, &boot));
                    healed_also_cell.insert(name.clone(), h);
                }
            }
            let task_metrics = match tasks {
                Some(_) if k == 0 => dense_tasks.clone(),
                Some((t, _)) => match task_cells.get(&removed) {
                    Some(c) => c.clone(),
                    None => {
                        let c = tasks::measure(t, model, &removed, &boot)?;
                        task_cells.insert(removed.clone(), c.clone());
                        c
                    }
                },
                None => Vec::new(),
            };
            let stability = match plan.resampled.get(si) {
                Some(r) if k > 0 && !r.is_empty() => {
                    let sets = chosen_sets(r, k, spec.contiguous, plan.protect, &counts_p)?;
                    Some(ChoiceStability::of(&removed, &sets))
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
                select_perplexity: Some(cell.select),
                ppl_vs_dense: (k > 0)
                    .then(|| boot.paired(&cell.eval, &dense_windows, Totals::perplexity))
                    .transpose()?,
                healed: heal_result
                    .as_ref()
                    .map(|h| Measured::from_windows(&h.cell.eval, &boot)),
                healed_select_perplexity: heal_result.as_ref().map(|h| h.cell.select),
                healed_by,
                heal_residuals: heal_result.as_ref().map(|h| h.residuals.clone()),
                heal_choices: heal_result.as_ref().map(|h| h.choices.clone()),
                finalists: cell_finalists,
                task_metrics,
                healed_task_metrics: heal_result
                    .as_ref()
                    .map(|h| h.tasks.clone())
                    .unwrap_or_default(),
                healed_by_task_metrics: healed_also_cell
                    .iter()
                    .filter(|(_, h)| !h.tasks.is_empty())
                    .map(|(name, h)| (name.clone(), h.tasks.clone()))
                    .collect(),
                stability,
            });
            journal.record(
                &journal::Entry {
                    strategy: spec.label(),
                    k,
                    row: rows[rows.len() - 1].clone(),
                    cell: cell.clone(),
                    healed: heal_result.clone(),
                    healed_also: healed_also_cell,
                },
                model_path,
            )?;
            cells.push((cell, heal_result.map(|h| h.cell)));
            progress.step_done(&format!("{}, {k} removed", spec.label()));
        }
    }
    progress.finish();
    // Retention against dense, for cells measured now and cells read back alike.
    for r in &mut rows {
        let healed_by = r.healed_by_task_metrics.values_mut().flatten();
        for m in (r.task_metrics.iter_mut())
            .chain(r.healed_task_metrics.iter_mut())
            .chain(healed_by)
        {
            m.retain(&dense_tasks);
        }
    }
    let task_list = match tasks {
        Some((t, _)) => (t.tasks.iter())
            .zip(&dense_tasks)
            .map(|((_, data), d)| {
                let mut dense = d.clone();
                dense.retain(&dense_tasks);
                SweepTask {
                    task: d.task.clone(),
                    data: data.clone(),
                    metric: d.metric.clone(),
                    n: d.n,
                    dense,
                }
            })
            .collect(),
        None => Vec::new(),
    };
    let best = best_per_count(&rows, &cells, &plan.counts, &boot)?;
    Ok(Sweep {
        model: model_path.display().to_string(),
        model_name: None,
        n_layers: n,
        dense_params,
        dense_perplexity: dense_measured.perplexity,
        dense_perplexity_ci: dense_measured.perplexity_ci,
        eval: plan.eval,
        select: Some(plan.select),
        calibration: plan.calibration,
        bootstrap: Some(boot),
        task_list,
        resamples: plan.resampled.first().map(Vec::len).filter(|&r| r > 0),
        layer_stability: Vec::new(),
        strategies: plan.strategies.iter().map(|(s, _)| s.label()).collect(),
        counts: plan.counts,
        protect: plan.protect,
        heal: plan.heal.as_ref().map(|(o, calib)| {
            serde_json::json!({
                "method": heal::METHOD,
                "name": plan.heal_name,
                "objectives": o.objectives.iter().map(|o| o.name()).collect::<Vec<_>>(),
                "prior": o.prior.name(),
                "alpha": o.alphas[0],
                "alphas": o.alphas,
                "holdout": o.holdout,
                "ctx": o.ctx,
                "calibration_tokens": calib.len() / o.ctx * o.ctx,
                "also": plan.heal_also.iter().map(|(name, o)| serde_json::json!({
                    "name": name,
                    "objectives": o.objectives.iter().map(|o| o.name()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        }),
        rows,
        best,
        scores: plan.strategies.into_iter().map(|(_, s)| s).collect(),
        seconds: started.elapsed().as_secs_f64(),
        kernels: Vec::new(),
    })
}

/// The best row at each count, chosen on the validation slice, with its evaluation figures and a
/// paired comparison with the runner-up on the evaluation windows. `cells[i]` holds row `i`'s
/// per-window sums (unhealed, healed).
fn best_per_count(
    rows: &[SweepRow],
    cells: &[(Cell, Option<Cell>)],
    counts: &[usize],
    boot: &Bootstrap,
) -> Result<BTreeMap<String, Best>> {
    let index = |r: &SweepRow| rows.iter().position(|x| std::ptr::eq(x, r)).unwrap_or(0);
    let figure = |i: usize| -> (&Vec<Totals>, Measured) {
        let (c, h) = &cells[i];
        match (h, &rows[i].healed) {
            (Some(h), Some(m)) => (&h.eval, *m),
            _ => (&c.eval, rows[i].measured),
        }
    };
    let mut out = BTreeMap::new();
    for &k in counts {
        let Some(b) = best::best_at(rows, k) else {
            continue;
        };
        let (bw, bm) = figure(index(b));
        let runner_up = match best::runner_up_at(rows, b) {
            Some(r) => {
                let (rw, rm) = figure(index(r));
                Some(RunnerUp {
                    strategy: r.strategy.clone(),
                    drop: r.drop.clone(),
                    perplexity: rm.perplexity,
                    select_perplexity: Some(best::selection_key(r)),
                    difference: boot.paired(rw, bw, Totals::perplexity)?,
                })
            }
            None => None,
        };
        out.insert(
            k.to_string(),
            Best {
                strategy: b.strategy.clone(),
                drop: b.drop.clone(),
                perplexity: bm.perplexity,
                perplexity_ci: bm.perplexity_ci,
                select_perplexity: Some(best::selection_key(b)),
                runner_up,
            },
        );
    }
    Ok(out)
}

/// A healed removal as measured: per-window sums on both slices, each block's fit residual and
/// what each block got.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Healed {
    cell: Cell,
    residuals: Vec<f64>,
    choices: Vec<String>,
    /// With `--tasks`: each task on the healed model.
    #[serde(default)]
    tasks: Vec<TaskMetric>,
}

/// Heals `removed` on the calibration tokens and measures the healed model from both caches
/// (and on the tasks, when given).
#[allow(clippy::too_many_arguments)]
fn heal_and_measure(
    model: &Model,
    model_path: &Path,
    eval: &Slice<'_>,
    select: &Slice<'_>,
    removed: &[usize],
    calib: &[u32],
    opts: &HealOptions,
    tasks: Option<(&TaskPlan<'_>, &Bootstrap)>,
) -> Result<Healed> {
    let healing = heal::heal(model_path, removed, calib, opts, &Silent)?;
    measure_healed(model, eval, select, removed, &healing, tasks)
}

/// Measures the model healed by `healing` (of `removed`) from both caches, and on the tasks
/// (the healed layers swapped into the model).
fn measure_healed(
    model: &Model,
    eval: &Slice<'_>,
    select: &Slice<'_>,
    removed: &[usize],
    healing: &heal::Healing,
    tasks: Option<(&TaskPlan<'_>, &Bootstrap)>,
) -> Result<Healed> {
    let overlay: Arc<dyn WeightSource> =
        Arc::new(Overlay::new(model.source().clone(), &healing.tensors)?);
    let mut replaced = BTreeMap::new();
    for b in healing.sites().filter(|b| b.healed()) {
        replaced.insert(
            b.fold_layer,
            DecoderLayer::load(overlay.as_ref(), model.config(), b.fold_layer)?,
        );
    }
    let cell = Cell {
        eval: eval.measure(model, removed, &replaced)?,
        select: perplexity(&select.measure(model, removed, &replaced)?),
    };
    let tasks = match tasks {
        Some((t, boot)) => {
            let healed = model.with_layers(&replaced)?;
            tasks::measure(t, &healed, removed, boot)?
        }
        None => Vec::new(),
    };
    let choices = healing
        .blocks
        .iter()
        .map(|b| {
            let what = b.objective.map_or("unhealed", |o| o.name());
            format!("{}..{}:{what}", b.range.start, b.range.end)
        })
        .collect();
    Ok(Healed {
        cell,
        residuals: healing.blocks.iter().map(|b| b.relative_residual).collect(),
        choices,
        tasks,
    })
}
