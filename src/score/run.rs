//! Running a criterion with the engine over calibration windows, streaming: cosine criteria see
//! one batch of windows at a time, and perplexity criteria keep only the residual stream entering
//! each layer (windows × ctx × hidden × 4 bytes per layer), so each candidate removal restarts the
//! forward at the first layer it changes instead of at the embedding.

use super::cosine::{angular_distance, cosine};
use super::resample::WindowStats;
use super::scores::{GreedyStep, LayerScores, Metric};
use crate::error::{Error, Result};
use crate::model::stream::DenseCache;
use crate::model::Model;
use crate::progress::Progress;
use candle_core::Tensor;
use serde::Serialize;
use std::time::Instant;

/// Which positions of each window the angular distance is averaged over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum TokenSel {
    #[default]
    /// The last token of each window (Gromov et al.).
    Last,
    /// Every token.
    All,
}

impl TokenSel {
    pub fn name(self) -> &'static str {
        match self {
            TokenSel::Last => "last",
            TokenSel::All => "all",
        }
    }
}

/// How to run a criterion.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    pub metric: Metric,
    pub tokens: TokenSel,
    /// Largest block size for angular distances (clamped to the layer count).
    pub max_block: usize,
    /// Windows per forward for the cosine criteria.
    pub batch: usize,
    /// Greedy removal steps (default: all layers but one).
    pub greedy_steps: Option<usize>,
}

/// What activation reuse saved for `ppl` and `greedy`.
#[derive(Debug, Clone, Serialize)]
pub struct ReuseTiming {
    /// Candidate removals evaluated.
    pub candidates: usize,
    /// Seconds for one full forward of all windows (embedding to logits), measured.
    pub full_forward_s: f64,
    /// Seconds spent on the candidates, restarting from cached activations.
    pub seconds: f64,
    /// Bytes of cached activations.
    pub cache_bytes: u64,
}

impl ReuseTiming {
    /// The naive cost (one full forward per candidate) over the measured cost.
    pub fn speedup(&self) -> f64 {
        self.candidates as f64 * self.full_forward_s / self.seconds.max(1e-9)
    }
}

/// A criterion's scores, with the reuse timing when it ran perplexity forwards.
#[derive(Debug, Clone)]
pub struct ScoreOutcome {
    pub scores: LayerScores,
    pub timing: Option<ReuseTiming>,
    /// Each window's share of the scores, for the criteria whose calibration resamples are
    /// reweightings of the windows (`angular`, `bi`, `minitron`, `ppl`); `None` for the rest.
    pub windows: Option<WindowStats>,
}

impl ScoreOutcome {
    /// The scores on the windows `draws` picks from the scored ones, without a forward pass;
    /// `None` when the criterion must be scored again on the drawn windows (`greedy`, `healed`).
    pub fn reweighted(&self, draws: &[usize]) -> Option<Result<LayerScores>> {
        if self.scores.metric == Metric::Last {
            return Some(Ok(self.scores.clone()));
        }
        self.windows.as_ref().map(|w| w.scores(&self.scores, draws))
    }
}

/// Cuts `samples` consecutive windows of `ctx` tokens starting `offset` tokens into `tokens`,
/// refusing text that is too short.
pub fn calibration_windows(
    tokens: &[u32],
    ctx: usize,
    samples: usize,
    offset: usize,
) -> Result<Vec<Vec<u32>>> {
    if ctx < 2 || samples == 0 {
        return Err(Error::Invalid(format!(
            "calibration needs windows of at least 2 tokens (ctx) and at least 1 window (samples); got {ctx} and {samples}"
        )));
    }
    let need = ctx
        .checked_mul(samples)
        .and_then(|n| n.checked_add(offset))
        .ok_or_else(|| Error::Invalid("calibration size overflows".into()))?;
    if tokens.len() < need {
        return Err(Error::Invalid(format!(
            "calibration text too short: {} tokens, {samples} windows of {ctx} from offset {offset} need {need}",
            tokens.len()
        )));
    }
    Ok((0..samples)
        .map(|w| tokens[offset + w * ctx..offset + (w + 1) * ctx].to_vec())
        .collect())
}

/// Bytes the activation cache of `ppl`/`greedy` holds: one `(windows, ctx, hidden)` f32 tensor per
/// layer, plus the last layer's output.
pub fn activation_cache_bytes(n_layers: usize, windows: usize, ctx: usize, hidden: usize) -> u64 {
    (n_layers as u64 + 1) * windows as u64 * ctx as u64 * hidden as u64 * 4
}

/// Runs `opts.metric` on `windows` (each of the same length). The returned scores carry no
/// calibration description; the caller knows where the windows came from.
pub fn score(
    model: &Model,
    windows: &[Vec<u32>],
    opts: &ScoreOptions,
    progress: &dyn Progress,
) -> Result<ScoreOutcome> {
    let n = model.n_layers();
    let name = model.path().display().to_string();
    if opts.metric == Metric::Last {
        return Ok(ScoreOutcome {
            scores: LayerScores::last_baseline(&name, n),
            timing: None,
            windows: None,
        });
    }
    let t = windows.first().map_or(0, Vec::len);
    if t < 2 || windows.iter().any(|w| w.len() != t) {
        return Err(Error::Invalid(
            "calibration windows must be non-empty, of equal length, and at least 2 tokens long"
                .into(),
        ));
    }
    let mut scores = LayerScores {
        model: name,
        metric: opts.metric,
        n_layers: n,
        calibration: None,
        importance: vec![0.0; n],
        angular: None,
        greedy: None,
        healed: None,
        baseline_ppl: None,
    };
    let (timing, stats) = match opts.metric {
        Metric::Angular | Metric::Bi | Metric::Minitron => {
            let stats = cosine_scores(model, windows, opts, progress)?;
            (None, Some(stats))
        }
        Metric::Ppl | Metric::Greedy => {
            let (timing, stats) = ppl_scores(model, windows, opts, &mut scores, progress)?;
            (Some(timing), stats)
        }
        Metric::Healed => {
            super::healed::healed_scores(model, windows, opts.greedy_steps, &mut scores, progress)?;
            (None, None)
        }
        Metric::Last => (None, None),
    };
    // The scores of the criteria that keep window sums are those sums over every window, so a
    // resample's scores and the full ones come from one routine.
    if let Some(st) = &stats {
        scores = st.all(&scores)?;
    }
    Ok(ScoreOutcome {
        scores,
        timing,
        windows: stats,
    })
}

/// Rows `(seq, hidden)` of window `w` of a `(batch, seq, hidden)` tensor.
fn rows(xs: &Tensor, w: usize) -> Result<Vec<Vec<f32>>> {
    Ok(xs.narrow(0, w, 1)?.squeeze(0)?.to_vec2::<f32>()?)
}

/// Runs every window through every layer and shows each layer to `tap` with the index of the
/// batch of windows it ran on; returns each batch's last hidden states. Layer-major when layers
/// are loaded on demand, so an offloaded model reads each layer once ([`Model::forward_batches`]).
fn for_each_layer(
    model: &Model,
    batches: &[&[Vec<u32>]],
    progress: &dyn Progress,
    tap: &mut dyn FnMut(usize, crate::model::LayerTap<'_>) -> Result<()>,
) -> Result<Vec<Tensor>> {
    let ids = batches
        .iter()
        .map(|b| {
            let refs: Vec<&[u32]> = b.iter().map(|w| w.as_slice()).collect();
            model.tokens(&refs)
        })
        .collect::<Result<Vec<_>>>()?;
    model.forward_batches(&ids, &[], progress, tap)
}

/// Each window's sums of the cosine criterion over its tokens: `1 − cos(input, output)` per
/// layer (`bi`, `minitron`), or the angular distance per block (`angular`, rows `d[n-1][ℓ]` one
/// after another).
fn cosine_scores(
    model: &Model,
    windows: &[Vec<u32>],
    opts: &ScoreOptions,
    progress: &dyn Progress,
) -> Result<WindowStats> {
    let n = model.n_layers();
    let angular = opts.metric == Metric::Angular;
    let max_n = opts.max_block.clamp(1, n);
    let batches: Vec<&[Vec<u32>]> = windows.chunks(opts.batch.max(1)).collect();
    let t = windows[0].len() as u64;
    // Block Influence: per window, per layer, the sum over its tokens.
    let mut bi_sums = vec![vec![0f64; n]; windows.len()];
    // Per window, per depth: the rows the angular distance needs (inputs of layers 0..n, then
    // the last output).
    let mut depths: Vec<Vec<Vec<Vec<f32>>>> = vec![Vec::with_capacity(n + 1); windows.len()];
    let starts: Vec<usize> = batches
        .iter()
        .scan(0, |acc, b| {
            let s = *acc;
            *acc += b.len();
            Some(s)
        })
        .collect();
    let lasts = for_each_layer(model, &batches, progress, &mut |bi, tap| {
        for w in 0..batches[bi].len() {
            let input = rows(tap.input, w)?;
            if angular {
                depths[starts[bi] + w].push(select(input, opts.tokens));
            } else {
                let output = rows(&tap.parts.output, w)?;
                let sum = &mut bi_sums[starts[bi] + w][tap.layer];
                for (x, y) in input.iter().zip(&output) {
                    *sum += 1.0 - cosine(x, y);
                }
            }
        }
        Ok(())
    })?;
    progress.finish();
    if !angular {
        let tokens = vec![t; windows.len()];
        return Ok(if opts.metric == Metric::Minitron {
            WindowStats::minitron(bi_sums, tokens, batches.len())
        } else {
            WindowStats::bi(bi_sums, tokens)
        });
    }
    let mut sums = Vec::with_capacity(windows.len());
    let mut tokens = Vec::with_capacity(windows.len());
    for (i, last) in lasts.iter().enumerate() {
        for w in 0..batches[i].len() {
            let states = &mut depths[starts[i] + w];
            states.push(select(rows(last, w)?, opts.tokens));
            let per_token = states[0].len();
            let mut row = Vec::with_capacity(max_n * n);
            for size in 1..=max_n {
                for l in 0..=n - size {
                    row.push(
                        (0..per_token)
                            .map(|k| angular_distance(&states[l][k], &states[l + size][k]))
                            .sum::<f64>(),
                    );
                }
            }
            sums.push(row);
            tokens.push(per_token as u64);
            states.clear();
        }
    }
    Ok(WindowStats::angular(n, max_n, sums, tokens))
}

fn select(mut rows: Vec<Vec<f32>>, sel: TokenSel) -> Vec<Vec<f32>> {
    match sel {
        TokenSel::All => rows,
        TokenSel::Last => rows.pop().into_iter().collect(),
    }
}

/// Calibration perplexity from final hidden states: every position but each window's last
/// predicts the next token, scored by the evaluation's routine.
fn ppl_of(model: &Model, hidden: &Tensor, windows: &[Vec<u32>]) -> Result<f64> {
    Ok(crate::eval::score_hidden(model, hidden, None, windows)?.perplexity())
}

/// Each window's NLL sum and scored tokens from final hidden states, appended to `sums` (one
/// entry per window) and `tokens`.
fn nll_of(
    model: &Model,
    hidden: &Tensor,
    windows: &[Vec<u32>],
    sums: &mut [Vec<f64>],
    tokens: &mut [u64],
) -> Result<()> {
    let per = crate::eval::perplexity::score_hidden_windows(model, hidden, None, windows)?;
    for ((s, t), w) in sums.iter_mut().zip(tokens.iter_mut()).zip(per) {
        s.push(w.nll);
        *t = w.n as u64;
    }
    Ok(())
}

fn ppl_scores(
    model: &Model,
    windows: &[Vec<u32>],
    opts: &ScoreOptions,
    scores: &mut LayerScores,
    progress: &dyn Progress,
) -> Result<(ReuseTiming, Option<WindowStats>)> {
    let n = model.n_layers();
    let hidden = model.config().arch.hidden_size;
    // The stream entering every layer under the current removals; the last entry is the output.
    let t0 = Instant::now();
    let cache = DenseCache::build(model, windows.to_vec(), &crate::progress::Silent)?;
    // Per window: the whole model's NLL sum, then each single removal's (`ppl`).
    let mut sums = vec![Vec::with_capacity(n + 1); windows.len()];
    let mut tokens = vec![0u64; windows.len()];
    nll_of(model, cache.input(n), windows, &mut sums, &mut tokens)?;
    let full_forward_s = t0.elapsed().as_secs_f64();
    let mut candidates = 0;
    let t1 = Instant::now();
    let mut stats = None;
    if opts.metric == Metric::Ppl {
        progress.start("layers", n as u64);
        for l in 0..n {
            let out = cache.run_from(model, l, &[l])?;
            nll_of(model, &out, windows, &mut sums, &mut tokens)?;
            candidates += 1;
            progress.advance(1);
        }
        progress.finish();
        stats = Some(WindowStats::ppl(sums, tokens));
    } else {
        let baseline: (f64, u64) = sums
            .iter()
            .zip(&tokens)
            .fold((0.0, 0), |(s, t), (w, &n)| (s + w[0], t + n));
        scores.baseline_ppl = Some((baseline.0 / baseline.1.max(1) as f64).exp());
        let steps = opts.greedy_steps.unwrap_or(n - 1).min(n - 1);
        let cache = std::cell::RefCell::new(cache);
        let mut cost = |set: &[usize], c: usize| -> Result<f64> {
            candidates += 1;
            let out = cache.borrow().run_from(model, c, set)?;
            ppl_of(model, &out, windows)
        };
        let mut refresh =
            |c: usize, removed: &[usize]| cache.borrow_mut().refresh(model, c, removed);
        let chosen =
            super::greedy::order(n, steps, "greedy steps", progress, &mut cost, &mut refresh)?;
        scores.importance = super::greedy::importance(n, &chosen);
        let order: Vec<GreedyStep> = chosen
            .into_iter()
            .map(|(layer, ppl)| GreedyStep { layer, ppl })
            .collect();
        scores.greedy = Some(order);
    }
    let timing = ReuseTiming {
        candidates,
        full_forward_s,
        seconds: t1.elapsed().as_secs_f64(),
        cache_bytes: activation_cache_bytes(n, windows.len(), windows[0].len(), hidden),
    };
    Ok((timing, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_windows_are_consecutive_after_the_offset() {
        let tokens: Vec<u32> = (0..20).collect();
        let w = calibration_windows(&tokens, 4, 2, 3).unwrap();
        assert_eq!(w, vec![vec![3, 4, 5, 6], vec![7, 8, 9, 10]]);
    }

    #[test]
    fn short_calibration_text_is_refused() {
        let tokens: Vec<u32> = (0..10).collect();
        let err = calibration_windows(&tokens, 4, 2, 3)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("too short") && err.contains("need 11"),
            "{err}"
        );
    }
}
