//! lm-eval's `loglikelihood` requests, answered fast: for each (context, continuation) pair, the
//! summed log-probability of the continuation's tokens and whether greedy decoding would have
//! produced them (`is_greedy`).
//!
//! Consecutive requests that share their context tokens (a question's choices) form a group, and
//! a group is answered in the cheapest way that gives the same numbers as one forward per
//! request:
//! - every continuation one token (MMLU's letters): the context alone is one row, and its last
//!   position scores them all;
//! - longer continuations: the context runs once with the KV cache, the cache is repeated for
//!   each continuation, and the continuations (less their last token) run as one batch on top;
//! - a request longer than the context length, or an offloaded model: one row per request,
//!   `(context + continuation)` cut from the left to its last `max_len + 1` tokens, less the last
//!   (lm-eval's input).
//!
//! Rows run longest first, `batch` at a time, right-padded to the longest in the batch (as lm-eval
//! sorts and batches its requests); under the causal mask the padding changes nothing before it.

use super::perplexity::{log_sum_exp, LOGIT_BLOCK_ELEMS};
use crate::error::{Error, Result};
use crate::model::stream::batches_per_pass;
use crate::model::{KvCache, Model};
use crate::progress::{Progress, Silent};
use candle_core::{Device, Tensor};

/// One request as token ids.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Request {
    pub context: Vec<u32>,
    pub continuation: Vec<u32>,
}

/// The answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Answer {
    /// Summed log-probability of the continuation, in nats.
    pub ll: f64,
    /// Whether every continuation token was the most likely one.
    pub greedy: bool,
}

/// What answering cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Requests whose input was cut from the left to the context length.
    pub truncated: usize,
    /// Tokens fed through the model.
    pub tokens_forwarded: usize,
}

/// One row of token ids to run, and the predictions to read from it.
struct Row {
    input: Vec<u32>,
    /// `(request, position in the row, target token)`.
    targets: Vec<(usize, usize, u32)>,
}

/// The model's input for a request cut to `max_len`: `(context + continuation)`'s last
/// `max_len + 1` tokens less the last one, and whether it was cut.
pub fn input(r: &Request, max_len: usize) -> (Vec<u32>, bool) {
    let all: Vec<u32> = r.context.iter().chain(&r.continuation).copied().collect();
    let start = all.len().saturating_sub(max_len + 1);
    (all[start..all.len() - 1].to_vec(), start > 0)
}

/// A row that scores request `i` whole: its continuation from the row's last positions.
fn full_row(i: usize, r: &Request, max_len: usize) -> (Row, bool) {
    let (input, cut) = input(r, max_len);
    let (n, c) = (input.len(), r.continuation.len());
    let targets = (r.continuation.iter().enumerate())
        .map(|(k, &t)| (i, n - c + k, t))
        .collect();
    (Row { input, targets }, cut)
}

/// Answers `requests`, `batch` rows per forward, inputs cut to `max_len` tokens.
pub fn loglikelihoods(
    model: &Model,
    skip: &[usize],
    requests: &[Request],
    max_len: usize,
    batch: usize,
    progress: &dyn Progress,
) -> Result<(Vec<Answer>, Stats)> {
    model.check_skip(skip)?;
    if max_len == 0 || batch == 0 {
        return Err(Error::Invalid(
            "the context length and the batch must be at least 1".into(),
        ));
    }
    for (i, r) in requests.iter().enumerate() {
        if r.context.is_empty() || r.continuation.is_empty() {
            return Err(Error::Invalid(format!(
                "request {i} has an empty context or continuation"
            )));
        }
        if r.continuation.len() > max_len {
            return Err(Error::Invalid(format!(
                "request {i}: the continuation is {} tokens, longer than the context length {max_len}",
                r.continuation.len()
            )));
        }
    }
    let offloaded = !model.resident_except(skip);
    let mut stats = Stats::default();
    let mut rows = Vec::new();
    let mut cached = Vec::new();
    let mut at = 0;
    while at < requests.len() {
        let ctx = &requests[at].context;
        let end = at
            + requests[at..]
                .iter()
                .take_while(|r| r.context == *ctx)
                .count();
        let group = &requests[at..end];
        let fits = group
            .iter()
            .all(|r| r.context.len() + r.continuation.len() - 1 <= max_len);
        if fits && group.iter().all(|r| r.continuation.len() == 1) {
            let n = ctx.len();
            let targets = (group.iter().enumerate())
                .map(|(k, r)| (at + k, n - 1, r.continuation[0]))
                .collect();
            rows.push(Row {
                input: ctx.clone(),
                targets,
            });
        } else if fits && !offloaded && group.len() > 1 {
            cached.push(at..end);
        } else {
            for (k, r) in group.iter().enumerate() {
                let (row, cut) = full_row(at + k, r, max_len);
                stats.truncated += usize::from(cut);
                rows.push(row);
            }
        }
        at = end;
    }
    let mut answers = vec![
        Answer {
            ll: 0.0,
            greedy: true
        };
        requests.len()
    ];
    progress.start("requests", requests.len() as u64);
    stats.tokens_forwarded +=
        run_rows(model, skip, rows, batch, offloaded, &mut answers, progress)?;
    for range in cached {
        stats.tokens_forwarded += run_cached(model, skip, requests, range.clone(), &mut answers)?;
        progress.advance(range.len() as u64);
    }
    progress.finish();
    Ok((answers, stats))
}

/// Adds each scored position's log-probability and greediness to its request's answer.
fn record(answers: &mut [Answer], scored: &[(usize, f64, bool)]) {
    for &(i, lp, greedy) in scored {
        answers[i].ll += lp;
        answers[i].greedy &= greedy;
    }
}

/// Runs the rows longest first, `batch` at a time; returns the tokens forwarded.
fn run_rows(
    model: &Model,
    skip: &[usize],
    mut rows: Vec<Row>,
    batch: usize,
    offloaded: bool,
    answers: &mut [Answer],
    progress: &dyn Progress,
) -> Result<usize> {
    rows.sort_by_key(|r| std::cmp::Reverse(r.input.len()));
    let forwarded = rows.iter().map(|r| r.input.len()).sum();
    let batches: Vec<&[Row]> = rows.chunks(batch).collect();
    let hidden_size = model.config().arch.hidden_size;
    let mut at = 0;
    while at < batches.len() {
        // Offloaded (layers loaded on demand): layer-major passes over many batches, each layer
        // read once per pass; else batch after batch.
        let n = if offloaded {
            let sizes: Vec<(usize, usize)> = (batches[at..].iter())
                .map(|b| (b.len(), padded_len(b)))
                .collect();
            batches_per_pass(&sizes, hidden_size)
        } else {
            1
        };
        let pass = &batches[at..at + n];
        let ids = pass
            .iter()
            .map(|b| batch_ids(model, b))
            .collect::<Result<Vec<_>>>()?;
        let hidden = model.forward_batches(&ids, skip, &Silent, &mut |_, _| Ok(()))?;
        for (b, h) in pass.iter().zip(&hidden) {
            let len = padded_len(b);
            let picks: Vec<(usize, u32, usize)> = (b.iter().enumerate())
                .flat_map(|(k, row)| {
                    row.targets
                        .iter()
                        .map(move |&(i, pos, t)| (k * len + pos, t, i))
                })
                .collect();
            let flat = h.reshape((b.len() * len, h.dim(2)?))?;
            record(answers, &score_positions(model, &flat, &picks)?);
            progress.advance(b.iter().map(|r| r.targets.len() as u64).sum());
        }
        at += n;
    }
    Ok(forwarded)
}

/// A group of requests sharing one context: the context once with the KV cache, then every
/// continuation but its last token as one batch on the repeated cache.
fn run_cached(
    model: &Model,
    skip: &[usize],
    requests: &[Request],
    range: std::ops::Range<usize>,
    answers: &mut [Answer],
) -> Result<usize> {
    let group = &requests[range.clone()];
    let ctx = &group[0].context;
    let mut cache = KvCache::new(model.n_layers());
    let h = model.forward_hidden(&model.tokens(&[ctx])?, skip, Some(&mut cache), &mut |_| {
        Ok(())
    })?;
    let last = h.narrow(1, ctx.len() - 1, 1)?.squeeze(1)?;
    let firsts: Vec<(usize, u32, usize)> = (group.iter().enumerate())
        .map(|(k, r)| (0, r.continuation[0], range.start + k))
        .collect();
    record(answers, &score_positions(model, &last, &firsts)?);
    let longer: Vec<(usize, &Request)> = (group.iter().enumerate())
        .filter(|(_, r)| r.continuation.len() > 1)
        .map(|(k, r)| (range.start + k, r))
        .collect();
    if longer.is_empty() {
        return Ok(ctx.len());
    }
    let len = longer
        .iter()
        .map(|(_, r)| r.continuation.len() - 1)
        .max()
        .unwrap_or(1);
    let padded: Vec<Vec<u32>> = longer
        .iter()
        .map(|(_, r)| {
            let mut row = r.continuation[..r.continuation.len() - 1].to_vec();
            row.resize(len, 0);
            row
        })
        .collect();
    let ids: Vec<&[u32]> = padded.iter().map(Vec::as_slice).collect();
    let mut cache = cache.repeat(longer.len())?;
    let h = model.forward_hidden(
        &model.tokens(&ids)?,
        skip,
        Some(&mut cache),
        &mut |_| Ok(()),
    )?;
    let flat = h.reshape((longer.len() * len, h.dim(2)?))?;
    let picks: Vec<(usize, u32, usize)> = (longer.iter().enumerate())
        .flat_map(|(b, &(i, r))| {
            (r.continuation[1..].iter().enumerate()).map(move |(k, &t)| (b * len + k, t, i))
        })
        .collect();
    record(answers, &score_positions(model, &flat, &picks)?);
    Ok(ctx.len() + longer.len() * len)
}

/// The longest input of a batch, the length it is padded to.
fn padded_len(batch: &[Row]) -> usize {
    batch.iter().map(|r| r.input.len()).max().unwrap_or(0)
}

/// Token ids `(rows, padded_len)` of one batch, right-padded with token 0.
fn batch_ids(model: &Model, batch: &[Row]) -> Result<Tensor> {
    let len = padded_len(batch);
    let padded: Vec<Vec<u32>> = batch
        .iter()
        .map(|r| {
            let mut row = r.input.clone();
            row.resize(len, 0);
            row
        })
        .collect();
    let rows: Vec<&[u32]> = padded.iter().map(Vec::as_slice).collect();
    model.tokens(&rows)
}

/// For each `(row of flat, target, request)`: the request, the target's log-probability at that
/// row of the final hidden states `flat (rows, hidden)`, and whether it is the argmax.
fn score_positions(
    model: &Model,
    flat: &Tensor,
    picks: &[(usize, u32, usize)],
) -> Result<Vec<(usize, f64, bool)>> {
    let vocab = model.vocab_size();
    let block = (LOGIT_BLOCK_ELEMS / vocab).max(1);
    let mut out = Vec::with_capacity(picks.len());
    for chunk in picks.chunks(block) {
        let rows: Vec<u32> = chunk.iter().map(|p| p.0 as u32).collect();
        let index = Tensor::from_vec(rows, chunk.len(), &Device::Cpu)?;
        let logits: Vec<f32> = model
            .logits(&flat.index_select(&index, 0)?)?
            .flatten_all()?
            .to_vec1()?;
        for (r, &(_, t, i)) in logits.chunks(vocab).zip(chunk) {
            let (lse, best) = log_sum_exp(r);
            let lp = r
                .get(t as usize)
                .ok_or_else(|| Error::Invalid(format!("token {t} is outside the vocabulary")))?;
            out.push((i, *lp as f64 - lse, best == t as usize));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_cut_from_the_left_and_lose_the_last_token() {
        let r = Request {
            context: vec![1, 2, 3, 4],
            continuation: vec![5, 6],
        };
        assert_eq!(input(&r, 16), (vec![1, 2, 3, 4, 5], false));
        assert_eq!(input(&r, 3), (vec![3, 4, 5], true));
        let (row, cut) = full_row(7, &r, 3);
        assert!(cut);
        assert_eq!(row.targets, [(7, 1, 5), (7, 2, 6)]);
    }
}
