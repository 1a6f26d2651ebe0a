//! Streaming perplexity and divergence from a reference: windows run in small batches, and the
//! head scores a batch's positions a vocabulary slab at a time ([`Model::score_rows`]), so no
//! full logit row is ever held.

use super::bootstrap::{Bootstrap, Interval};
use super::windows::{Convention, Window};
use crate::error::{Error, Result};
use crate::model::stream::batches_per_pass;
use crate::model::{Model, RowScore};
use crate::progress::{Progress, Silent};
use candle_core::{Device, Tensor};
use std::time::Instant;

/// Logit elements computed at once (rows × vocabulary) where whole logit rows are needed (the
/// choice tasks), 24 MiB of f32: about 128 rows of a 49k vocabulary, below glibc's largest mmap
/// threshold so the block's memory is reused rather than mapped and faulted in afresh each time.
pub(crate) const LOGIT_BLOCK_ELEMS: usize = 6 << 20;

/// One model to run: weights plus the layers it skips.
#[derive(Clone, Copy)]
pub struct Run<'a> {
    pub model: &'a Model,
    pub skip: &'a [usize],
}

/// How the model compares with a reference on the scored positions.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Divergence {
    /// Mean over scored positions of KL(reference ‖ model) of the next-token distributions, in nats.
    pub mean_kl: f64,
    /// Share of scored positions where both put their largest logit on the same token.
    pub top1_agreement: f64,
    /// The reference's perplexity on the same tokens.
    pub reference_perplexity: f64,
    /// 95% interval of `mean_kl`, by a bootstrap over windows.
    pub mean_kl_ci: Interval,
    /// 95% interval of `top1_agreement`, by a bootstrap over windows.
    pub top1_agreement_ci: Interval,
}

/// The result of a perplexity run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EvalReport {
    /// `chunks` or `sliding`.
    pub convention: String,
    /// Which tokens were scored, in words.
    pub scored: String,
    pub ctx: usize,
    pub stride: Option<usize>,
    pub windows: usize,
    /// Tokens whose prediction was scored.
    pub tokens_evaluated: usize,
    /// Tokens fed through the evaluated model (windows overlap under the sliding convention).
    pub tokens_forwarded: usize,
    /// Mean negative log-likelihood in nats.
    pub mean_nll: f64,
    pub perplexity: f64,
    /// 95% interval of `perplexity`, by a seeded bootstrap over windows ([`Bootstrap`]).
    pub perplexity_ci: Interval,
    /// The resamples and seed behind the intervals.
    pub bootstrap: Bootstrap,
    pub seconds: f64,
    /// Tokens forwarded through the evaluated model per second of the whole run (a reference
    /// pass, if any, is inside the time).
    pub tokens_per_s: f64,
    pub divergence: Option<Divergence>,
    /// Each window's sums, in window order (what the intervals resample).
    #[serde(skip)]
    pub per_window: Vec<Totals>,
}

/// Sums over scored positions: the model's and the reference's negative log-likelihoods, the KL
/// divergence and top-1 agreements. Callers that run the layers themselves (the sweep) get these
/// from [`score_hidden`].
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    pub nll: f64,
    pub ref_nll: f64,
    pub kl: f64,
    pub agree: usize,
    pub n: usize,
}

impl Totals {
    /// `exp(mean NLL)`.
    pub fn perplexity(&self) -> f64 {
        (self.nll / self.n.max(1) as f64).exp()
    }

    /// Mean KL(reference ‖ model) per scored position.
    pub fn mean_kl(&self) -> f64 {
        self.kl / self.n.max(1) as f64
    }

    /// Share of positions where model and reference agree on the top token.
    pub fn top1_agreement(&self) -> f64 {
        self.agree as f64 / self.n.max(1) as f64
    }

    /// The reference's perplexity on the same positions.
    pub fn reference_perplexity(&self) -> f64 {
        (self.ref_nll / self.n.max(1) as f64).exp()
    }
}

type Sums = Totals;

/// The log of the softmax denominator of one row, and the row's argmax (the first, on ties);
/// vectorised, since the LM head's rows (49k entries for SmolLM2) make this the largest
/// elementwise cost of an eval.
pub(crate) use crate::model::log_sum_exp;

impl Sums {
    /// Adds another set of sums (another window, another block of rows).
    pub fn add(&mut self, o: Sums) {
        self.nll += o.nll;
        self.ref_nll += o.ref_nll;
        self.kl += o.kl;
        self.agree += o.agree;
        self.n += o.n;
    }
}

/// The sums of per-row scores.
fn sums_of(rows: &[RowScore]) -> Sums {
    let mut sums = Sums::default();
    for r in rows {
        sums.nll += r.nll;
        sums.ref_nll += r.ref_nll;
        sums.kl += r.kl;
        sums.agree += usize::from(r.agree);
        sums.n += 1;
    }
    sums
}

/// Scores `tokens` under `conv`, running `batch` windows at a time; with `reference`, also the
/// divergence of the evaluated model from it on the same positions.
pub fn evaluate(
    run: Run<'_>,
    reference: Option<Run<'_>>,
    tokens: &[u32],
    windows: &[Window],
    conv: Convention,
    batch: usize,
    progress: &dyn Progress,
) -> Result<EvalReport> {
    if batch == 0 {
        return Err(Error::Invalid("`batch` must be at least 1".into()));
    }
    run.model.check_skip(run.skip)?;
    if let Some(r) = reference {
        r.model.check_skip(r.skip)?;
        if r.model.vocab_size() != run.model.vocab_size() {
            return Err(Error::Invalid(format!(
                "the reference `{}` has a vocabulary of {} entries, the model {}; they must share a tokenizer",
                r.model.path().display(),
                r.model.vocab_size(),
                run.model.vocab_size()
            )));
        }
    }
    let forwarded: usize = windows.iter().map(|w| w.len).sum();
    progress.start("eval", forwarded as u64);
    let started = Instant::now();
    let mut per_window = Vec::with_capacity(windows.len());
    // Batches: up to `batch` consecutive windows of equal length.
    let mut batches: Vec<&[Window]> = Vec::new();
    let mut i = 0;
    while i < windows.len() {
        let len = windows[i].len;
        let mut j = i + 1;
        while j < windows.len() && j - i < batch && windows[j].len == len {
            j += 1;
        }
        batches.push(&windows[i..j]);
        i = j;
    }
    let offloaded = !run.model.resident_except(run.skip)
        || reference.is_some_and(|r| !r.model.resident_except(r.skip));
    if offloaded {
        // Layer-major passes: each layer is read once per pass over many batches.
        let hidden = run.model.config().arch.hidden_size;
        let mut at = 0;
        while at < batches.len() {
            let sizes: Vec<(usize, usize)> =
                batches[at..].iter().map(|b| (b.len(), b[0].len)).collect();
            let n = batches_per_pass(&sizes, hidden);
            let pass = &batches[at..at + n];
            let ids = pass
                .iter()
                .map(|b| batch_ids(run.model, tokens, b))
                .collect::<Result<Vec<_>>>()?;
            let forward = |r: Run<'_>| {
                r.model
                    .forward_batches(&ids, r.skip, &Silent, &mut |_, _| Ok(()))
            };
            let mine = forward(run)?;
            let theirs = reference.map(forward).transpose()?;
            for (k, b) in pass.iter().enumerate() {
                let ref_hidden = reference
                    .zip(theirs.as_ref())
                    .map(|(r, t)| (r.model, &t[k]));
                score_hidden_batch(run.model, ref_hidden, tokens, b, &mine[k], &mut per_window)?;
                progress.advance((b[0].len * b.len()) as u64);
            }
            at += n;
        }
    } else {
        for b in &batches {
            score_batch(run, reference, tokens, b, &mut per_window)?;
            progress.advance((b[0].len * b.len()) as u64);
        }
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    let mut sums = Sums::default();
    for w in &per_window {
        sums.add(*w);
    }
    let boot = Bootstrap::default();
    let ci = boot.totals(&per_window);
    let n = sums.n.max(1) as f64;
    let mean_nll = sums.nll / n;
    let stride = match conv {
        Convention::Sliding { stride, .. } => Some(stride),
        Convention::Chunks { .. } => None,
    };
    Ok(EvalReport {
        convention: conv.name().to_string(),
        scored: conv.describe(),
        ctx: conv.ctx(),
        stride,
        windows: windows.len(),
        tokens_evaluated: sums.n,
        tokens_forwarded: forwarded,
        mean_nll,
        perplexity: mean_nll.exp(),
        perplexity_ci: ci.perplexity,
        bootstrap: boot,
        seconds,
        tokens_per_s: forwarded as f64 / seconds.max(1e-9),
        divergence: reference.map(|_| Divergence {
            mean_kl: sums.kl / n,
            top1_agreement: sums.agree as f64 / n,
            reference_perplexity: (sums.ref_nll / n).exp(),
            mean_kl_ci: ci.mean_kl,
            top1_agreement_ci: ci.top1_agreement,
        }),
        per_window,
    })
}

/// Scores whole windows from their final hidden states `(windows, seq, hidden)` (before the final
/// norm): every position but each window's last predicts the next token of `windows`. With
/// `reference`, the reference's hidden states on the same windows give the divergence; both
/// pass through `model`'s final norm and head, so they must share them (a model and its pruned or
/// healed self).
pub fn score_hidden(
    model: &Model,
    hidden: &Tensor,
    reference: Option<&Tensor>,
    windows: &[Vec<u32>],
) -> Result<Totals> {
    let mut total = Totals::default();
    for w in score_hidden_windows(model, hidden, reference, windows)? {
        total.add(w);
    }
    Ok(total)
}

/// [`score_hidden`], window by window: one [`Totals`] per window, in order.
pub fn score_hidden_windows(
    model: &Model,
    hidden: &Tensor,
    reference: Option<&Tensor>,
    windows: &[Vec<u32>],
) -> Result<Vec<Totals>> {
    let (w, t, h) = hidden.dims3()?;
    if w != windows.len() || windows.iter().any(|x| x.len() != t) || t < 2 {
        return Err(Error::Invalid(format!(
            "hidden states of shape ({w}, {t}, {h}) do not match {} windows of at least 2 tokens",
            windows.len()
        )));
    }
    let mut picks = Vec::with_capacity(w * (t - 1));
    let mut targets = Vec::with_capacity(w * (t - 1));
    for (b, tokens) in windows.iter().enumerate() {
        for p in 0..t - 1 {
            picks.push((b * t + p) as u32);
            targets.push(tokens[p + 1]);
        }
    }
    let index = Tensor::from_vec(picks, targets.len(), &Device::Cpu)?;
    let rows =
        |x: &Tensor| -> Result<Tensor> { Ok(x.reshape((w * t, h))?.index_select(&index, 0)?) };
    let mine = rows(hidden)?;
    let theirs = reference.map(rows).transpose()?;
    let scores = model.score_rows(&mine, &targets, theirs.as_ref().map(|r| (model, r)))?;
    Ok(scores.chunks(t - 1).map(sums_of).collect())
}

/// Token ids `(windows, len)` of one batch of equal-length windows.
fn batch_ids(model: &Model, tokens: &[u32], batch: &[Window]) -> Result<Tensor> {
    let rows: Vec<&[u32]> = batch
        .iter()
        .map(|w| &tokens[w.start..w.start + w.len])
        .collect();
    model.tokens(&rows)
}

/// Runs one batch of equal-length windows and pushes each window's sums onto `out`.
fn score_batch(
    run: Run<'_>,
    reference: Option<Run<'_>>,
    tokens: &[u32],
    batch: &[Window],
    out: &mut Vec<Sums>,
) -> Result<()> {
    let ids = batch_ids(run.model, tokens, batch)?;
    let forward = |r: Run<'_>| r.model.forward_hidden(&ids, r.skip, None, &mut |_| Ok(()));
    let hidden = forward(run)?;
    let ref_hidden = reference.map(forward).transpose()?;
    let theirs = reference.map(|r| r.model).zip(ref_hidden.as_ref());
    score_hidden_batch(run.model, theirs, tokens, batch, &hidden, out)
}

/// Scores one batch of equal-length windows from its final hidden states `(windows, len,
/// hidden)` (and the reference's), pushing each window's sums onto `out`.
fn score_hidden_batch(
    model: &Model,
    reference: Option<(&Model, &Tensor)>,
    tokens: &[u32],
    batch: &[Window],
    hidden: &Tensor,
    out: &mut Vec<Sums>,
) -> Result<()> {
    let len = batch[0].len;
    // Flat row indices (window × position) of the positions whose next token is scored, and
    // the targets they predict.
    let mut picks = Vec::new();
    let mut targets = Vec::new();
    for (b, w) in batch.iter().enumerate() {
        for p in w.score_from..w.len {
            picks.push((b * len + p - 1) as u32);
            targets.push(tokens[w.start + p]);
        }
    }
    let index = Tensor::from_vec(picks, targets.len(), &Device::Cpu)?;
    let gather = |hidden: &Tensor| -> Result<Tensor> {
        let h = hidden.dim(2)?;
        let flat = hidden.reshape((batch.len() * len, h))?;
        Ok(flat.index_select(&index, 0)?)
    };
    let hidden = gather(hidden)?;
    let ref_hidden = reference.map(|(_, h)| gather(h)).transpose()?;
    let theirs = reference.map(|(r, _)| r).zip(ref_hidden.as_ref());
    let scores = model.score_rows(&hidden, &targets, theirs)?;
    let mut start = 0;
    for w in batch {
        let n = w.scored();
        out.push(sums_of(&scores[start..start + n]));
        start += n;
    }
    Ok(())
}
