//! Streaming perplexity and divergence from a reference: windows run in small batches, and
//! logits exist only for a bounded block of scored positions at a time.

use super::windows::{Convention, Window};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::progress::Progress;
use candle_core::{Device, Tensor};
use std::time::Instant;

/// Logit elements computed at once (rows × vocabulary), about 128 MiB of f32.
const LOGIT_BLOCK_ELEMS: usize = 32 << 20;

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
    pub seconds: f64,
    /// Tokens forwarded through the evaluated model per second of the whole run (a reference
    /// pass, if any, is inside the time).
    pub tokens_per_s: f64,
    pub divergence: Option<Divergence>,
}

#[derive(Default)]
struct Sums {
    nll: f64,
    ref_nll: f64,
    kl: f64,
    agree: usize,
    n: usize,
}

/// Log-softmax of one row, in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let lse = row
        .iter()
        .map(|&v| (v as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    row.iter().map(|&v| v as f64 - lse).collect()
}

fn argmax(row: &[f32]) -> usize {
    crate::model::argmax(row) as usize
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
        return Err(Error::Invalid("--batch must be at least 1".into()));
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
    let mut sums = Sums::default();
    let mut i = 0;
    while i < windows.len() {
        // A batch: up to `batch` consecutive windows of equal length.
        let len = windows[i].len;
        let mut j = i + 1;
        while j < windows.len() && j - i < batch && windows[j].len == len {
            j += 1;
        }
        score_batch(run, reference, tokens, &windows[i..j], &mut sums)?;
        progress.advance((len * (j - i)) as u64);
        i = j;
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
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
        seconds,
        tokens_per_s: forwarded as f64 / seconds.max(1e-9),
        divergence: reference.map(|_| Divergence {
            mean_kl: sums.kl / n,
            top1_agreement: sums.agree as f64 / n,
            reference_perplexity: (sums.ref_nll / n).exp(),
        }),
    })
}

/// Runs one batch of equal-length windows and adds its scored positions to `sums`.
fn score_batch(
    run: Run<'_>,
    reference: Option<Run<'_>>,
    tokens: &[u32],
    batch: &[Window],
    sums: &mut Sums,
) -> Result<()> {
    let rows: Vec<&[u32]> = batch
        .iter()
        .map(|w| &tokens[w.start..w.start + w.len])
        .collect();
    let ids = run.model.tokens(&rows)?;
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
    let gather = |r: Run<'_>| -> Result<Tensor> {
        let hidden = r
            .model
            .forward_hidden(&ids, r.skip, None, &mut |_| Ok(()))?;
        let h = hidden.dim(2)?;
        let flat = hidden.reshape((batch.len() * len, h))?;
        let index = Tensor::from_vec(picks.clone(), picks.len(), &Device::Cpu)?;
        Ok(flat.index_select(&index, 0)?)
    };
    let hidden = gather(run)?;
    let ref_hidden = reference.map(gather).transpose()?;
    let vocab = run.model.vocab_size();
    let block = (LOGIT_BLOCK_ELEMS / vocab).max(1);
    let mut start = 0;
    while start < picks.len() {
        let n = block.min(picks.len() - start);
        let logits = run.model.logits(&hidden.narrow(0, start, n)?)?;
        let logits: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        let ref_logits: Option<Vec<f32>> = match (&ref_hidden, reference) {
            (Some(h), Some(r)) => Some(
                r.model
                    .logits(&h.narrow(0, start, n)?)?
                    .flatten_all()?
                    .to_vec1()?,
            ),
            _ => None,
        };
        for k in 0..n {
            let row = &logits[k * vocab..(k + 1) * vocab];
            let lp = log_softmax(row);
            let target = targets[start + k] as usize;
            sums.nll -= lp[target];
            if let Some(rl) = &ref_logits {
                let rrow = &rl[k * vocab..(k + 1) * vocab];
                let rlp = log_softmax(rrow);
                sums.ref_nll -= rlp[target];
                sums.kl += rlp
                    .iter()
                    .zip(&lp)
                    .map(|(&r, &m)| r.exp() * (r - m))
                    .sum::<f64>();
                if argmax(row) == argmax(rrow) {
                    sums.agree += 1;
                }
            }
            sums.n += 1;
        }
        start += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_normalises() {
        let lp = log_softmax(&[1.0, 2.0, 3.0]);
        let total: f64 = lp.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert!((lp[2] - lp[1] - 1.0).abs() < 1e-12);
    }
}
