//! The LM head for scoring (issue 24): each row's log-sum-exp, argmax and target logit, computed
//! a vocabulary slab at a time so that no full logit row ever exists and the head's weight is
//! read once per call, however many rows there are.
//!
//! Every thread takes a contiguous share of the vocabulary. For each slab of `SLAB` vocabulary
//! rows it gets the slab's weights as f32 (borrowed from an f32 head; widened once from a 16-bit
//! or quantized one), multiplies every row block against them with a single-threaded `gemm`
//! (the slab stays in cache across row blocks, so the product is compute-bound rather than a
//! stream of the whole weight per block) and folds the block's logits into a running
//! log-sum-exp per row. The target logit is picked up when its slab passes. With a reference
//! model the same pass also carries the reference's running sums and the cross term of the KL
//! divergence. Threads' partial results merge in vocabulary order, so the outcome does not
//! depend on scheduling.

use super::fastmath::log_sum_exp;
use super::half_gemm::{gemm_f32, HalfWeight};
use super::linear::WeightRef;
use super::Model;
use crate::error::{Error, Result};
use candle_core::quantized::QTensor;
use candle_core::{CpuStorage, Storage, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Vocabulary rows per slab: 256 rows of a 640-wide head are 640 KiB of f32, which stay in L2
/// while every row block passes over them.
const SLAB: usize = 256;
/// Rows per `gemm` call: a 256 × 256 block of logits is 256 KiB.
const ROW_BLOCK: usize = 256;

/// What one scored row contributes: its negative log-likelihood and, against a reference, the
/// reference's, the KL divergence KL(reference ‖ model) and whether both put their largest logit
/// on the same token.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RowScore {
    pub nll: f64,
    pub ref_nll: f64,
    pub kl: f64,
    pub agree: bool,
}

/// A head's weight as the slab loop reads it.
#[derive(Clone, Copy)]
pub(crate) enum HeadWeight<'a> {
    F32(&'a [f32]),
    Half(HalfWeight<'a>),
    Quant(&'a [Arc<QTensor>]),
}

/// One side of a scoring pass: normed hidden rows `xs (rows, hidden)`, the head `(vocab,
/// hidden)` and what the family does to the logits after it.
#[derive(Clone, Copy)]
pub(crate) struct HeadSide<'a> {
    pub xs: &'a [f32],
    /// The hidden size: the width of `xs` and of the head.
    pub h: usize,
    pub weight: HeadWeight<'a>,
    pub bias: Option<&'a [f32]>,
    /// Granite's `logits_scaling`: logits are divided by it.
    pub divisor: Option<f32>,
    /// Gemma 2's final soft-capping `tanh(x / c) · c`.
    pub softcap: Option<f32>,
}

/// A running log-sum-exp, argmax and target logit of one row over the slabs seen so far.
#[derive(Debug, Clone, Copy)]
struct Side {
    lse: f64,
    top: f32,
    at: usize,
    target: Option<f32>,
}

impl Side {
    const EMPTY: Side = Side {
        lse: f64::NEG_INFINITY,
        top: f32::NEG_INFINITY,
        at: 0,
        target: None,
    };

    /// Folds in a later part of the vocabulary (ties keep the earlier index).
    fn merge(&mut self, o: &Side) {
        self.lse = log_add_exp(self.lse, o.lse);
        if o.top > self.top {
            self.top = o.top;
            self.at = o.at;
        }
        if o.target.is_some() {
            self.target = o.target;
        }
    }
}

/// One row's running state: the model's side, the reference's and the KL cross term
/// `Σ p_ref (ref − model)` relative to the reference's running log-sum-exp.
#[derive(Debug, Clone, Copy)]
struct Row {
    m: Side,
    r: Side,
    cross: f64,
}

impl Row {
    const EMPTY: Row = Row {
        m: Side::EMPTY,
        r: Side::EMPTY,
        cross: 0.0,
    };

    fn merge(&mut self, o: &Row) {
        let lse = log_add_exp(self.r.lse, o.r.lse);
        let weight = |l: f64| {
            if l == f64::NEG_INFINITY {
                0.0
            } else {
                (l - lse).exp()
            }
        };
        self.cross = self.cross * weight(self.r.lse) + o.cross * weight(o.r.lse);
        self.m.merge(&o.m);
        self.r.merge(&o.r);
    }
}

/// `ln(eᵃ + eᵇ)`, exact when either is `-∞`.
fn log_add_exp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// A thread's working buffers.
struct Scratch {
    slab: Vec<f32>,
    ref_slab: Vec<f32>,
    logits: Vec<f32>,
    ref_logits: Vec<f32>,
}

impl HeadSide<'_> {
    /// Slab `start..start + len` of the weight as f32 rows: borrowed, or widened into `buf`.
    fn slab<'b>(&'b self, start: usize, len: usize, buf: &'b mut Vec<f32>) -> Result<&'b [f32]> {
        let h = self.h;
        match self.weight {
            HeadWeight::F32(w) => Ok(&w[start * h..(start + len) * h]),
            HeadWeight::Half(w) => {
                buf.resize(len * h, 0.0);
                w.widen(start * h, buf);
                Ok(buf)
            }
            HeadWeight::Quant(parts) => {
                buf.clear();
                let mut first = 0;
                for q in parts {
                    let n = q.shape().dims()[0];
                    let (lo, hi) = (start.max(first), (start + len).min(first + n));
                    if lo < hi {
                        super::quantized::widen_rows(q, lo - first..hi - first, buf)?;
                    }
                    first += n;
                }
                Ok(buf)
            }
        }
    }

    /// Logits of rows `rows` against slab `start..start + len` (weights `w`) into `out`, with
    /// the bias and the family's scaling and soft-capping applied as [`Model::lm_head`] does.
    fn logits(&self, rows: std::ops::Range<usize>, w: &[f32], start: usize, out: &mut Vec<f32>) {
        let h = self.h;
        let (m, len) = (rows.len(), w.len() / h.max(1));
        out.resize(m * len, 0.0);
        let xs = &self.xs[rows.start * h..rows.end * h];
        // SAFETY: `out` is `m × len`, `xs` is `m × h` and `w` is `len × h` row-major, read as the
        // `h × len` matrix `wᵀ` (column stride `h`, row stride 1); `out` is a separate buffer.
        unsafe {
            gemm_f32(
                (m, len, h),
                (out.as_mut_ptr(), len),
                (xs.as_ptr(), h),
                (w.as_ptr(), h, 1),
            );
        }
        if let Some(b) = self.bias {
            for row in out.chunks_exact_mut(len) {
                row.iter_mut()
                    .zip(&b[start..start + len])
                    .for_each(|(v, b)| *v += b);
            }
        }
        // The same f32 steps as candle's `x / d` and `tanh(x / c) · c`.
        if let Some(d) = self.divisor {
            let inv = (1.0 / d as f64) as f32;
            out.iter_mut().for_each(|v| *v *= inv);
        }
        if let Some(c) = self.softcap {
            let inv = (1.0 / c as f64) as f32;
            out.iter_mut().for_each(|v| *v = (*v * inv).tanh() * c);
        }
    }
}

/// Folds one slab's logits of one row into its running [`Side`].
fn fold(side: &mut Side, row: &[f32], start: usize, target: usize) {
    let (lse, at) = log_sum_exp(row);
    side.merge(&Side {
        lse,
        top: row[at],
        at: start + at,
        target: (start..start + row.len())
            .contains(&target)
            .then(|| row[target - start]),
    });
}

/// Scores rows against a head of `vocab` rows: the model's `side` and, optionally, a
/// reference's rows at the same positions through its own head. `slab` and `block` set the tiling (the
/// defaults are [`SLAB`] and [`ROW_BLOCK`]).
pub(crate) fn score_with(
    side: HeadSide<'_>,
    reference: Option<HeadSide<'_>>,
    targets: &[u32],
    vocab: usize,
    (slab, block): (usize, usize),
) -> Result<Vec<RowScore>> {
    let n = targets.len();
    let sides = std::iter::once(&side).chain(reference.as_ref());
    for s in sides {
        let len = match s.weight {
            HeadWeight::F32(w) => Some(w.len()),
            HeadWeight::Half(w) => Some(w.len()),
            HeadWeight::Quant(parts) => {
                Some(parts.iter().map(|q| q.shape().elem_count()).sum::<usize>())
            }
        };
        let h = s.h;
        if h == 0
            || s.xs.len() != n * h
            || len != Some(vocab * h)
            || s.bias.is_some_and(|b| b.len() != vocab)
        {
            return Err(Error::Compute(format!(
                "the LM head's scoring got {} hidden values for {n} rows of {h}, and a head of {len:?} values for {vocab} × {h}",
                s.xs.len()
            )));
        }
    }
    if let Some(&bad) = targets.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::Invalid(format!(
            "token id {bad} is outside the vocabulary of {vocab} entries"
        )));
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let (slab, block) = (slab.max(1), block.max(1));
    let slabs = vocab.div_ceil(slab);
    let threads = rayon::current_num_threads().clamp(1, slabs);
    let per = slabs.div_ceil(threads);
    let shares: Vec<std::ops::Range<usize>> = (0..threads)
        .map(|t| (t * per * slab).min(vocab)..((t + 1) * per * slab).min(vocab))
        .filter(|r| !r.is_empty())
        .collect();
    let run = |share: &std::ops::Range<usize>| -> Result<Vec<Row>> {
        let mut rows = vec![Row::EMPTY; n];
        let mut s = Scratch {
            slab: Vec::new(),
            ref_slab: Vec::new(),
            logits: Vec::new(),
            ref_logits: Vec::new(),
        };
        let mut start = share.start;
        while start < share.end {
            let len = slab.min(share.end - start);
            let w = side.slab(start, len, &mut s.slab)?;
            let rw = match &reference {
                Some(r) => Some(r.slab(start, len, &mut s.ref_slab)?),
                None => None,
            };
            for r0 in (0..n).step_by(block) {
                let span = r0..(r0 + block).min(n);
                side.logits(span.clone(), w, start, &mut s.logits);
                if let (Some(r), Some(rw)) = (&reference, rw) {
                    r.logits(span.clone(), rw, start, &mut s.ref_logits);
                }
                for (k, row) in span.enumerate() {
                    let target = targets[row] as usize;
                    let state = &mut rows[row];
                    let m = &s.logits[(k * len)..(k + 1) * len];
                    if reference.is_none() {
                        fold(&mut state.m, m, start, target);
                        continue;
                    }
                    let rl = &s.ref_logits[(k * len)..(k + 1) * len];
                    let mut part = Row::EMPTY;
                    fold(&mut part.m, m, start, target);
                    fold(&mut part.r, rl, start, target);
                    let lse = part.r.lse;
                    part.cross = rl
                        .iter()
                        .zip(m)
                        .map(|(&a, &b)| (a as f64 - lse).exp() * (a as f64 - b as f64))
                        .sum();
                    state.merge(&part);
                }
            }
            start += len;
        }
        Ok(rows)
    };
    let parts = shares.par_iter().map(run).collect::<Result<Vec<_>>>()?;
    let mut parts = parts.into_iter();
    let mut rows = parts.next().unwrap_or_else(|| vec![Row::EMPTY; n]);
    for part in parts {
        rows.iter_mut().zip(&part).for_each(|(a, b)| a.merge(b));
    }
    Ok(rows
        .iter()
        .map(|row| {
            let nll = row.m.lse - row.m.target.unwrap_or(f32::NAN) as f64;
            match reference {
                None => RowScore {
                    nll,
                    ..RowScore::default()
                },
                Some(_) => RowScore {
                    nll,
                    ref_nll: row.r.lse - row.r.target.unwrap_or(f32::NAN) as f64,
                    kl: row.cross - row.r.lse + row.m.lse,
                    agree: row.m.at == row.r.at,
                },
            }
        })
        .collect())
}

/// Runs `f` on a view of `model`'s head over the normed rows `xs`, holding the weight's storage
/// for the call.
fn with_side<R>(model: &Model, xs: &[f32], f: impl FnOnce(HeadSide<'_>) -> Result<R>) -> Result<R> {
    let f32_of = |t: &Tensor| -> Result<Vec<f32>> {
        Ok(t.to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?)
    };
    let bias = model.lm_head.bias().map(f32_of).transpose()?;
    let fam = &model.cfg.family;
    let side = |weight| HeadSide {
        xs,
        h: model.cfg.arch.hidden_size,
        weight,
        bias: bias.as_deref(),
        divisor: fam.logits_divisor,
        softcap: fam.final_softcap,
    };
    match model.lm_head.weight_ref() {
        WeightRef::Quant(parts) => f(side(HeadWeight::Quant(parts))),
        WeightRef::Dense(w) => {
            let w = w.contiguous()?;
            let (storage, layout) = w.storage_and_layout();
            let Some((a, b)) = layout.contiguous_offsets() else {
                return Err(Error::Compute(
                    "the LM head's weight is not contiguous".into(),
                ));
            };
            let weight = match &*storage {
                Storage::Cpu(CpuStorage::F32(v)) => HeadWeight::F32(&v[a..b]),
                Storage::Cpu(CpuStorage::BF16(v)) => HeadWeight::Half(HalfWeight::Bf16(&v[a..b])),
                Storage::Cpu(CpuStorage::F16(v)) => HeadWeight::Half(HalfWeight::F16(&v[a..b])),
                _ => {
                    return Err(Error::Compute(format!(
                        "the LM head's weight is {:?}, not f32, bf16 or f16 on the CPU",
                        w.dtype()
                    )))
                }
            };
            f(side(weight))
        }
    }
}

impl Model {
    /// Scores hidden rows `xs (rows, hidden)` (before the final norm) predicting `targets`, one
    /// [`RowScore`] per row, without materialising their logit rows. With `reference`, a model
    /// and its hidden rows at the same positions, also the divergence from it; it must share
    /// the vocabulary.
    pub fn score_rows(
        &self,
        xs: &Tensor,
        targets: &[u32],
        reference: Option<(&Model, &Tensor)>,
    ) -> Result<Vec<RowScore>> {
        let normed = |m: &Model, x: &Tensor| -> Result<Vec<f32>> {
            let (rows, h) = x.dims2()?;
            if rows != targets.len() || h != m.cfg.arch.hidden_size {
                return Err(Error::Compute(format!(
                    "scoring got hidden rows of shape ({rows}, {h}) for {} targets and a hidden size of {}",
                    targets.len(),
                    m.cfg.arch.hidden_size
                )));
            }
            Ok(m.norm(x)?
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1()?)
        };
        let vocab = self.vocab_size();
        let xs = normed(self, xs)?;
        let tiles = (SLAB, ROW_BLOCK);
        with_side(self, &xs, |side| match reference {
            None => score_with(side, None, targets, vocab, tiles),
            Some((r, rx)) => {
                if r.vocab_size() != vocab {
                    return Err(Error::Invalid(format!(
                        "the reference `{}` has a vocabulary of {} entries, the model {vocab}; they must share a tokenizer",
                        r.path().display(),
                        r.vocab_size(),
                    )));
                }
                let rxs = normed(r, rx)?;
                with_side(r, &rxs, |rside| {
                    score_with(side, Some(rside), targets, vocab, tiles)
                })
            }
        })
    }
}

#[cfg(test)]
mod tests;
