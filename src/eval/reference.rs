//! The dense model's next-token log-probabilities on fixed windows, computed once so that many
//! pruned variants are compared with it without rerunning its head and softmax each time (the
//! sweep). Holds `rows × vocab` f32 values; callers check [`ReferenceLogProbs::bytes`] first.

use super::perplexity::{log_sum_exp, Totals};
use crate::error::{Error, Result};
use crate::model::Model;
use candle_core::{Device, Tensor};

/// Logit elements computed at once (rows × vocabulary), about 128 MiB of f32.
const BLOCK_ELEMS: usize = 32 << 20;

/// Log-probabilities of every scored position of some windows, with their targets.
pub struct ReferenceLogProbs {
    vocab: usize,
    logp: Vec<f32>,
    top: Vec<u32>,
    targets: Vec<u32>,
    /// Flat row indices `(window × seq + position)` of the scored positions.
    picks: Vec<u32>,
    shape: (usize, usize, usize),
}

/// The scored positions of whole windows: every position but each window's last, and the token
/// it predicts.
fn picks(windows: &[Vec<u32>], t: usize) -> (Vec<u32>, Vec<u32>) {
    let mut p = Vec::with_capacity(windows.len() * (t - 1));
    let mut targets = Vec::with_capacity(p.capacity());
    for (b, w) in windows.iter().enumerate() {
        for i in 0..t - 1 {
            p.push((b * t + i) as u32);
            targets.push(w[i + 1]);
        }
    }
    (p, targets)
}

/// Splits `0..n` into one contiguous range per thread.
fn spans(n: usize) -> Vec<std::ops::Range<usize>> {
    let threads = rayon::current_num_threads().clamp(1, n.max(1));
    let per = n.div_ceil(threads);
    (0..threads)
        .map(|t| (t * per).min(n)..((t + 1) * per).min(n))
        .collect()
}

impl ReferenceLogProbs {
    /// Bytes held for `windows` windows of `seq` tokens and a vocabulary of `vocab`.
    pub fn bytes(windows: usize, seq: usize, vocab: usize) -> u64 {
        windows as u64 * seq.saturating_sub(1) as u64 * vocab as u64 * 4
    }

    /// Computes them from `model`'s final hidden states `(windows, seq, hidden)` (before the
    /// final norm) on `windows`.
    pub fn new(model: &Model, hidden: &Tensor, windows: &[Vec<u32>]) -> Result<Self> {
        let (w, t, h) = hidden.dims3()?;
        if w != windows.len() || t < 2 || windows.iter().any(|x| x.len() != t) {
            return Err(Error::Invalid(format!(
                "hidden states of shape ({w}, {t}, {h}) do not match {} windows of at least 2 tokens",
                windows.len()
            )));
        }
        let vocab = model.vocab_size();
        let (picks, targets) = picks(windows, t);
        let rows = Self::rows(hidden, &picks, (w, t, h))?;
        let mut logp = Vec::with_capacity(picks.len() * vocab);
        let mut top = Vec::with_capacity(picks.len());
        let block = (BLOCK_ELEMS / vocab).max(1);
        let mut start = 0;
        while start < picks.len() {
            let n = block.min(picks.len() - start);
            let mut l: Vec<f32> = model
                .logits(&rows.narrow(0, start, n)?)?
                .flatten_all()?
                .to_vec1()?;
            for row in l.chunks_mut(vocab) {
                let (lse, best) = log_sum_exp(row);
                for v in row.iter_mut() {
                    *v = (*v as f64 - lse) as f32;
                }
                top.push(best as u32);
            }
            logp.extend_from_slice(&l);
            start += n;
        }
        Ok(ReferenceLogProbs {
            vocab,
            logp,
            top,
            targets,
            picks,
            shape: (w, t, h),
        })
    }

    fn rows(hidden: &Tensor, picks: &[u32], (w, t, h): (usize, usize, usize)) -> Result<Tensor> {
        let index = Tensor::from_slice(picks, picks.len(), &Device::Cpu)?;
        Ok(hidden.reshape((w * t, h))?.index_select(&index, 0)?)
    }

    /// Scores `model`'s final hidden states on the same windows against the reference:
    /// perplexity, KL(reference ‖ model) and top-1 agreement.
    pub fn compare(&self, model: &Model, hidden: &Tensor) -> Result<Totals> {
        let mut total = Totals::default();
        for w in self.compare_windows(model, hidden)? {
            total.add(w);
        }
        Ok(total)
    }

    /// [`Self::compare`], window by window: one [`Totals`] per window, in order.
    pub fn compare_windows(&self, model: &Model, hidden: &Tensor) -> Result<Vec<Totals>> {
        if hidden.dims3()? != self.shape || model.vocab_size() != self.vocab {
            return Err(Error::Invalid(format!(
                "hidden states {:?} or vocabulary {} do not match the reference's {:?} and {}",
                hidden.dims(),
                model.vocab_size(),
                self.shape,
                self.vocab
            )));
        }
        let rows = Self::rows(hidden, &self.picks, self.shape)?;
        let vocab = self.vocab;
        let block = (BLOCK_ELEMS / vocab).max(1);
        let mut per_window = vec![Totals::default(); self.shape.0];
        let mut start = 0;
        while start < self.picks.len() {
            let n = block.min(self.picks.len() - start);
            let l: Vec<f32> = model
                .logits(&rows.narrow(0, start, n)?)?
                .flatten_all()?
                .to_vec1()?;
            let parts: Vec<Vec<Totals>> = std::thread::scope(|scope| {
                let handles: Vec<_> = spans(n)
                    .into_iter()
                    .map(|span| {
                        let l = &l;
                        scope.spawn(move || self.score(l, start, span))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_default())
                    .collect()
            });
            for part in parts {
                for (acc, p) in per_window.iter_mut().zip(part) {
                    acc.add(p);
                }
            }
            start += n;
        }
        Ok(per_window)
    }

    /// Rows `span` of a logit block that starts at scored row `offset`, summed per window.
    fn score(&self, logits: &[f32], offset: usize, span: std::ops::Range<usize>) -> Vec<Totals> {
        let v = self.vocab;
        let per = self.shape.1 - 1;
        let mut out = vec![Totals::default(); self.shape.0];
        for k in span {
            let s = &mut out[(offset + k) / per];
            let row = &logits[k * v..(k + 1) * v];
            let r = offset + k;
            let lp = &self.logp[r * v..(r + 1) * v];
            let target = self.targets[r] as usize;
            let (lse, best) = log_sum_exp(row);
            s.nll += lse - row[target] as f64;
            s.ref_nll -= lp[target] as f64;
            // KL = Σ p_r (log p_r − (m − lse_m)).
            let kl: f64 = lp
                .iter()
                .zip(row)
                .map(|(&a, &m)| (a as f64).exp() * (a as f64 - m as f64))
                .sum();
            s.kl += kl + lse;
            s.agree += usize::from(best as u32 == self.top[r]);
            s.n += 1;
        }
        out
    }
}
