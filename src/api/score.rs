//! Scoring a model's layers on calibration text: the criterion's scores, their ranks, the reuse
//! timing of the perplexity criteria, and with resamples the stability of the scores and of the
//! layers they would choose.

use super::text::{CalibText, TextSlice};
use super::ModelSource;
use crate::arch::ParamCounts;
use crate::choose::stability::LayerStability;
use crate::choose::strategy::Protect;
use crate::error::{Error, Result};
use crate::eval::bootstrap::SEED;
use crate::hub::Need;
use crate::model::{open_checkpoint, Model};
use crate::progress::Progress;
use crate::score::run::{activation_cache_bytes, ReuseTiming};
use crate::score::{
    check_resamples, resample_draws, score as run_score, Calibration, LayerScores, Metric,
    ScoreOptions, TokenSel,
};
use serde::{Deserialize, Serialize};

/// Above this many bytes of cached activations, `ppl`/`greedy` warn that memory may spill.
const CACHE_WARN_BYTES: u64 = 8 << 30;

/// The calibration set and how a criterion runs on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(default)]
pub struct CalibOptions {
    /// The text, its window length and offset (`calib`, `ctx`, `calib_offset`).
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub text: CalibText,
    /// Calibration windows.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 16, value_name = "N"))]
    pub samples: usize,
    /// Angular distance on each window's last token or on all tokens.
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = TokenSel::Last))]
    pub tokens: TokenSel,
    /// Largest block size for angular distances (default: all).
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub max_block: Option<usize>,
    /// Windows per forward for angular/bi/minitron.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 4, value_name = "B"))]
    pub batch: usize,
    /// Keep only one layer's weights resident (slower, for models larger than memory).
    #[cfg_attr(feature = "cli", arg(long))]
    pub offload: bool,
}

impl Default for CalibOptions {
    fn default() -> Self {
        CalibOptions {
            text: CalibText::default(),
            samples: 16,
            tokens: TokenSel::Last,
            max_block: None,
            batch: 4,
            offload: false,
        }
    }
}

impl CalibOptions {
    /// Refuses counts that mean nothing: a `batch` or `max_block` of 0 (issue 25: they were
    /// silently taken as 1 and as "no blocks").
    pub fn check(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::Invalid("`batch` must be at least 1".into()));
        }
        if self.max_block == Some(0) {
            return Err(Error::Invalid("`max_block` must be at least 1".into()));
        }
        Ok(())
    }

    /// The calibration windows as a text slice, if a file was given.
    pub fn slice(&self) -> Option<TextSlice> {
        self.text.slice(self.samples)
    }

    /// How the calibration set is described in score files and provenance.
    pub fn describe(&self) -> Option<Calibration> {
        self.text.calib.as_ref().map(|f| Calibration {
            file: f.display().to_string(),
            ctx: self.text.ctx,
            samples: self.samples,
            offset_tokens: self.text.calib_offset,
            tokens: self.tokens.name().to_string(),
        })
    }
}

/// What `score` runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(default)]
pub struct ScoreRequest {
    /// The criterion: angular, bi, minitron, ppl, greedy, healed or last.
    #[cfg_attr(feature = "cli", arg(long, value_name = "M", value_parser = Metric::from_name))]
    pub metric: Metric,
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub calib: CalibOptions,
    /// Greedy removal steps (default: all layers but one).
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub steps: Option<usize>,
    /// Also score on K bootstrap resamples of the calibration windows: each layer's mean ± sd,
    /// how often it lands in the chosen set, and how much the chosen sets overlap.
    #[cfg_attr(feature = "cli", arg(long, value_name = "K"))]
    pub resamples: Option<usize>,
    /// With resamples: layers in each chosen set (default: a quarter of the layers).
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", requires = "resamples"))]
    pub choose: Option<usize>,
    /// Seed of the resamples.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = SEED, value_name = "N"))]
    pub seed: u64,
    /// How the call runs: precision, threads, symlink policy (the CLI's global flags).
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", arg(skip))]
    pub run: crate::api::RunOptions,
}

impl Default for ScoreRequest {
    fn default() -> Self {
        ScoreRequest {
            metric: Metric::Bi,
            calib: CalibOptions::default(),
            steps: None,
            resamples: None,
            choose: None,
            seed: SEED,
            run: crate::api::RunOptions::default(),
        }
    }
}

/// Scores with their ranks, as `score --json` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreReport {
    #[serde(flatten)]
    pub scores: LayerScores,
    /// Rank 1 is the least important layer (removed first).
    pub rank: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reuse: Option<ReuseTiming>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stability: Option<LayerStability>,
    /// The kernels the products ran on, with their measured rates (issue 34).
    pub kernels: Vec<crate::model::kernel::KernelRecord>,
    /// The scores on each resample (not printed; the stability summarises them).
    #[serde(skip)]
    pub resampled: Vec<LayerScores>,
    /// The model's parameter counts, for choosing by parameters.
    #[serde(skip)]
    pub counts: ParamCounts,
}

/// Runs `req.metric` on `model` (and on `req.resamples` resamples of its calibration windows).
///
/// ```no_run
/// use depthprune::api::{score::{score, CalibOptions, ScoreRequest}, text::CalibText, ModelSource};
/// use depthprune::score::Metric;
///
/// let req = ScoreRequest {
///     metric: Metric::Bi,
///     calib: CalibOptions {
///         text: CalibText { calib: Some("wiki.txt".into()), calib_offset: 65536, ..Default::default() },
///         ..Default::default()
///     },
///     ..Default::default()
/// };
/// let report = score(&ModelSource::new("smol"), &req, &depthprune::progress::Silent)?;
/// println!("{:?} (rank 1 goes first: {:?})", report.scores.importance, report.rank);
/// # Ok::<(), depthprune::Error>(())
/// ```
pub fn score(
    model: &ModelSource,
    req: &ScoreRequest,
    progress: &dyn Progress,
) -> Result<ScoreReport> {
    req.run.install(progress, || {
    req.calib.check()?;
    if req.steps == Some(0) {
        return Err(Error::Invalid("`steps` must be at least 1".into()));
    }
    if req.choose == Some(0) {
        return Err(Error::Invalid("`choose` must be at least 1".into()));
    }
    if let Some(r) = req.resamples {
        check_resamples(r, "resamples")?;
    }
    let path = model.resolve(Need::Snapshot, progress)?.path;
    let (cfg, source) = open_checkpoint(&path)?;
    let counts = ParamCounts::from_config(&cfg.arch);
    let n = cfg.n_layers();
    let k = req.choose.unwrap_or_else(|| default_choose(n));
    if req.resamples.is_some() && k >= n {
        return Err(Error::Invalid(format!(
            "`choose` {k}: at most {} of {n} layers",
            n.saturating_sub(1)
        )));
    }
    let resamples = req.resamples.unwrap_or(0);
    let (scores, resampled, reuse) = if req.metric == Metric::Last {
        let scores = LayerScores::last_baseline(&path.display().to_string(), n);
        (scores.clone(), vec![scores; resamples], None)
    } else {
        let Some(slice) = req.calib.slice() else {
            return Err(Error::Invalid(format!(
                "metric {} needs calibration text (`calib`)",
                req.metric.name()
            )));
        };
        let hidden = cfg.arch.hidden_size;
        let c = &req.calib;
        let resident = !c.offload;
        let m = Model::from_source(cfg, source, &|_| resident)?;
        let (tok, _notes) = crate::tokenizer::open_tokenizer(&path)?;
        let windows = slice.cut(&tok, "calibration")?;
        if matches!(req.metric, Metric::Ppl | Metric::Greedy) {
            let bytes = activation_cache_bytes(n, c.samples, c.text.ctx, hidden);
            if bytes > CACHE_WARN_BYTES {
                progress.warn(&format!(
                    "the activation cache for {} needs {:.1} GiB; it may spill to swap (fewer samples or a shorter ctx)",
                    req.metric.name(),
                    bytes as f64 / (1u64 << 30) as f64
                ));
            }
        }
        let opts = ScoreOptions {
            metric: req.metric,
            tokens: c.tokens,
            max_block: c.max_block.unwrap_or(n),
            batch: c.batch,
            greedy_steps: req.steps,
        };
        let out = run_score(&m, &windows, &opts, progress)?;
        let mut scores = out.scores.clone();
        scores.calibration = c.describe();
        // A resample reweights the scored windows where the criterion allows it, and scores
        // the drawn windows again where it does not (greedy, healed).
        let mut again = Vec::new();
        for (i, d) in resample_draws(windows.len(), resamples, req.seed)
            .iter()
            .enumerate()
        {
            let mut s = match out.reweighted(d) {
                Some(s) => s?,
                None => {
                    progress.message(&format!("calibration resample {} of {resamples}", i + 1));
                    let w: Vec<Vec<u32>> = d.iter().map(|&j| windows[j].clone()).collect();
                    run_score(&m, &w, &opts, progress)?.scores
                }
            };
            s.calibration = scores.calibration.clone();
            again.push(s);
        }
        if let Some(t) = &out.timing {
            progress.warn(&format!(
                "activation reuse: {} candidates in {:.2} s; a full forward per candidate would take ~{:.2} s ({:.1}x)",
                t.candidates,
                t.seconds,
                t.candidates as f64 * t.full_forward_s,
                t.speedup()
            ));
        }
        (scores, again, out.timing)
    };
    let stability = match req.resamples {
        Some(_) => Some(stability(&resampled, k, Protect::default(), &counts)?),
        None => None,
    };
    let report = ScoreReport {
        rank: ranks(&scores),
        scores,
        reuse,
        stability,
        kernels: crate::model::kernel::report(),
        resampled,
        counts,
    };
    crate::eval::ensure_finite(&report, "the scoring", &path)?;
    Ok(report)
    })
}

/// Saves `scores` as JSON at `path`, the file `plan`/`prune` read back to choose from.
pub fn save(scores: &LayerScores, path: &std::path::Path) -> Result<()> {
    use crate::error::IoContext;
    let json = serde_json::to_string_pretty(scores).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(path, json).at(path)
}

/// Layers in a chosen set unless told: a quarter of the layers, at least one.
pub fn default_choose(n_layers: usize) -> usize {
    (n_layers / 4).max(1)
}

impl ScoreReport {
    /// The `choose` layers (default: [`default_choose`]) the criterion removes first, in its own
    /// form (one block for the block criteria), with nothing protected.
    pub fn chosen(&self, choose: Option<usize>) -> Result<Vec<usize>> {
        let n = self.scores.n_layers;
        let k = choose
            .unwrap_or_else(|| default_choose(n))
            .min(n.saturating_sub(1));
        let sel = crate::choose::strategy::choose(
            &self.scores,
            crate::choose::strategy::Amount::Layers(k),
            self.scores.metric.prefers_blocks(),
            Protect::default(),
            &self.counts,
        )?;
        Ok(sel.removal.removed())
    }
}

/// Ranks: 1 is the least important layer (removed first).
pub fn ranks(s: &LayerScores) -> Vec<usize> {
    let mut r = vec![0; s.n_layers];
    for (k, l) in s.removal_order().into_iter().enumerate() {
        r[l] = k + 1;
    }
    r
}

/// The calibration set in one line.
pub fn describe_calibration(c: &Option<Calibration>) -> String {
    match c {
        Some(c) => format!(
            "`{}`, {} windows of {} tokens from token {} (angular on {} tokens)",
            c.file, c.samples, c.ctx, c.offset_tokens, c.tokens
        ),
        None => "none (the baseline needs no text)".into(),
    }
}

pub use crate::score::shown_values;

/// Stability over resampled scores, on the values [`shown_values`] gives (the same order, so the
/// same choices), choosing `k` layers in the criterion's own form.
pub fn stability(
    resampled: &[LayerScores],
    k: usize,
    protect: Protect,
    counts: &ParamCounts,
) -> Result<LayerStability> {
    let shown: Vec<LayerScores> = resampled
        .iter()
        .map(|s| {
            let mut t = s.clone();
            t.importance = shown_values(s).0;
            t
        })
        .collect();
    let contiguous = resampled.first().is_some_and(|s| s.metric.prefers_blocks());
    LayerStability::of(&shown, k, contiguous, protect, counts)
}
