//! Zero-shot multiple-choice scoring by log-likelihood, as lm-evaluation-harness scores
//! `multiple_choice` tasks.
//!
//! Each choice becomes a request: context `item.context`, continuation `" " + choice`. Tokens
//! come as lm-eval's `_encode_pair` makes them: whitespace at the end of the context moves to the
//! front of the continuation, `context + continuation` is encoded whole (no special tokens) and
//! the continuation tokens are those after the context's own token count. An empty context (or
//! one of whitespace alone) is one token, BOS (else EOS). The model sees `(context + continuation)` cut from the left to its
//! last `max_len + 1` tokens, less the last one, in one forward; a choice's score is the sum of
//! the log-probabilities of its continuation tokens. `acc` takes the argmax of the sums, `acc_norm`
//! of the sums divided by the choice's length in characters (lm-eval's `completion_len`: the
//! choice text without the leading space); ties go to the first. Standard errors are the sample
//! standard error of the mean of the 0/1 outcomes, `sqrt(p (1 - p) / (n - 1))`.

use super::perplexity::{log_sum_exp, LOGIT_BLOCK_ELEMS};
use super::tasks::TaskItem;
use crate::error::{Error, Result};
use crate::model::stream::batches_per_pass;
use crate::model::Model;
use crate::progress::{Progress, Silent};
use crate::tokenizer::HfTokenizer;
use candle_core::{Device, Tensor};
use std::time::Instant;

/// The context length lm-eval assumes when a model's config does not give one.
pub const DEFAULT_MAX_LEN: usize = 2048;

/// One choice as token ids.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Request {
    pub context: Vec<u32>,
    pub continuation: Vec<u32>,
}

/// A question as token ids, ready to score.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedItem {
    pub id: String,
    /// One request per choice.
    pub requests: Vec<Request>,
    /// Each choice's length in characters, the divisor of `acc_norm`.
    pub choice_chars: Vec<usize>,
    pub gold: usize,
}

/// How one question was answered.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ItemScore {
    pub id: String,
    pub gold: usize,
    /// Summed log-likelihood of each choice's continuation, in nats.
    pub loglikelihoods: Vec<f64>,
    /// The argmax of `loglikelihoods`.
    pub pred: usize,
    /// The argmax of `loglikelihoods` divided by the choices' character lengths.
    pub pred_norm: usize,
}

/// Accuracy over a task file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskReport {
    /// Questions scored.
    pub n: usize,
    pub acc: f64,
    /// `None` with fewer than two questions.
    pub acc_stderr: Option<f64>,
    pub acc_norm: f64,
    pub acc_norm_stderr: Option<f64>,
    /// The context length inputs were cut to.
    pub max_len: usize,
    /// Requests (question × choice) whose input was cut from the left to `max_len` tokens.
    pub truncated: usize,
    /// Tokens fed through the model.
    pub tokens_forwarded: usize,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemScore>,
}

/// The context length for `model`: its `max_position_embeddings`, else [`DEFAULT_MAX_LEN`].
pub fn max_len(model: &Model) -> usize {
    model
        .config()
        .arch
        .max_position_embeddings
        .unwrap_or(DEFAULT_MAX_LEN)
}

/// Splits a context and a continuation into tokens as lm-eval's `_encode_pair` does.
pub fn encode_pair(tok: &HfTokenizer, context: &str, continuation: &str) -> Result<Request> {
    let trimmed = context.trim_end();
    if trimmed.is_empty() {
        // lm-eval's empty context; a context of whitespace alone moves into the continuation.
        let continuation = format!("{context}{continuation}");
        let prefix = tok
            .bos_id()
            .or_else(|| tok.eos_ids().first().copied())
            .ok_or_else(|| {
                Error::Invalid(
                    "an empty context needs a BOS or EOS token, and the tokenizer has neither"
                        .into(),
                )
            })?;
        return Ok(Request {
            context: vec![prefix],
            continuation: tok.encode(&continuation, false)?,
        });
    }
    let (context, continuation) = if trimmed.len() < context.len() {
        (
            trimmed,
            format!("{}{continuation}", &context[trimmed.len()..]),
        )
    } else {
        (context, continuation.to_string())
    };
    let whole = tok.encode(&format!("{context}{continuation}"), false)?;
    let context = tok.encode(context, false)?;
    let continuation = whole.get(context.len()..).unwrap_or_default().to_vec();
    Ok(Request {
        context,
        continuation,
    })
}

/// Tokenizes a question: one request per choice, continuation `" " + choice`.
pub fn encode_item(tok: &HfTokenizer, item: &TaskItem) -> Result<EncodedItem> {
    let requests = item
        .choices
        .iter()
        .map(|c| encode_pair(tok, &item.context, &format!(" {c}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(EncodedItem {
        id: item.id.clone(),
        requests,
        choice_chars: item.choices.iter().map(|c| c.chars().count()).collect(),
        gold: item.gold,
    })
}

/// How to run the requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskOpts {
    /// Inputs are cut from the left to this many tokens.
    pub max_len: usize,
    /// Requests per forward pass.
    pub batch: usize,
}

impl TaskOpts {
    /// The model's own context length ([`max_len`]) and [`DEFAULT_BATCH`] requests per forward.
    pub fn for_model(model: &Model) -> Self {
        TaskOpts {
            max_len: max_len(model),
            batch: DEFAULT_BATCH,
        }
    }
}

/// Requests per forward pass unless told otherwise.
pub const DEFAULT_BATCH: usize = 8;

/// Scores text questions on `model` with the layers in `skip` left out, at the model's own
/// context length.
pub fn score_tasks(
    model: &Model,
    skip: &[usize],
    tok: &HfTokenizer,
    items: &[TaskItem],
    progress: &dyn Progress,
) -> Result<TaskReport> {
    let encoded = items
        .iter()
        .map(|i| encode_item(tok, i))
        .collect::<Result<Vec<_>>>()?;
    score_encoded(model, skip, &encoded, TaskOpts::for_model(model), progress)
}

/// The model's input for a request: `(context + continuation)` cut to its last `max_len + 1`
/// tokens, less the last; the continuation's log-probabilities come from its last
/// `continuation.len()` positions.
fn input(r: &Request, max_len: usize) -> (Vec<u32>, bool) {
    let all: Vec<u32> = r.context.iter().chain(&r.continuation).copied().collect();
    let start = all.len().saturating_sub(max_len + 1);
    (all[start..all.len() - 1].to_vec(), start > 0)
}

/// One request to run: where its score goes, its input and how many of its last positions
/// predict the continuation.
struct Job<'a> {
    item: usize,
    choice: usize,
    input: Vec<u32>,
    continuation: &'a [u32],
}

/// Scores questions given as tokens. Requests run longest first, `opts.batch` at a time, each
/// batch padded on the right to its longest input: under the causal mask the padding cannot
/// change the positions before it.
pub fn score_encoded(
    model: &Model,
    skip: &[usize],
    items: &[EncodedItem],
    opts: TaskOpts,
    progress: &dyn Progress,
) -> Result<TaskReport> {
    model.check_skip(skip)?;
    if opts.max_len == 0 || opts.batch == 0 {
        return Err(Error::Invalid(
            "the context length and the batch must be at least 1".into(),
        ));
    }
    for item in items {
        check_item(item, opts.max_len)?;
    }
    let started = Instant::now();
    let mut truncated = 0;
    let mut jobs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        for (c, r) in item.requests.iter().enumerate() {
            let (input, cut) = input(r, opts.max_len);
            truncated += usize::from(cut);
            jobs.push(Job {
                item: i,
                choice: c,
                input,
                continuation: &r.continuation,
            });
        }
    }
    jobs.sort_by_key(|j| std::cmp::Reverse(j.input.len()));
    let forwarded = jobs.iter().map(|j| j.input.len()).sum();
    let mut lls: Vec<Vec<f64>> = items.iter().map(|i| vec![0.0; i.requests.len()]).collect();
    progress.start("tasks", jobs.len() as u64);
    let batches: Vec<&[Job<'_>]> = jobs.chunks(opts.batch).collect();
    // Offloaded (layers loaded on demand): layer-major passes over many batches, each layer
    // read once per pass; else batch after batch.
    let offloaded = !model.resident_except(skip);
    let hidden_size = model.config().arch.hidden_size;
    let mut at = 0;
    while at < batches.len() {
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
        for (batch, h) in pass.iter().zip(&hidden) {
            for (job, ll) in batch.iter().zip(score_batch(model, batch, h)?) {
                lls[job.item][job.choice] = ll;
            }
            progress.advance(batch.len() as u64);
        }
        at += n;
    }
    progress.finish();
    let scores: Vec<ItemScore> = items.iter().zip(lls).map(|(i, l)| judge(i, l)).collect();
    let n = scores.len();
    let acc = mean(scores.iter().map(|s| s.pred == s.gold));
    let acc_norm = mean(scores.iter().map(|s| s.pred_norm == s.gold));
    Ok(TaskReport {
        n,
        acc,
        acc_stderr: stderr(acc, n),
        acc_norm,
        acc_norm_stderr: stderr(acc_norm, n),
        max_len: opts.max_len,
        truncated,
        tokens_forwarded: forwarded,
        seconds: started.elapsed().as_secs_f64(),
        items: scores,
    })
}

fn check_item(item: &EncodedItem, max_len: usize) -> Result<()> {
    let bad = |msg: String| Err(Error::Invalid(format!("question `{}`: {msg}", item.id)));
    if item.requests.len() < 2 || item.choice_chars.len() != item.requests.len() {
        return bad(format!(
            "needs at least 2 choices and one length per choice, has {} and {}",
            item.requests.len(),
            item.choice_chars.len()
        ));
    }
    if item.gold >= item.requests.len() {
        return bad(format!("gold {} is out of range", item.gold));
    }
    for (c, r) in item.requests.iter().enumerate() {
        if r.context.is_empty() || r.continuation.is_empty() {
            return bad(format!("choice {c} has an empty context or continuation"));
        }
        if r.continuation.len() > max_len {
            return bad(format!(
                "choice {c} is {} tokens, longer than the context length {max_len}",
                r.continuation.len()
            ));
        }
    }
    Ok(())
}

/// The length a batch of requests is right-padded to: its longest input.
fn padded_len(batch: &[Job<'_>]) -> usize {
    batch.iter().map(|j| j.input.len()).max().unwrap_or(0)
}

/// Token ids `(requests, padded_len)` of one batch, right-padded with token 0.
fn batch_ids(model: &Model, batch: &[Job<'_>]) -> Result<Tensor> {
    let len = padded_len(batch);
    let padded: Vec<Vec<u32>> = batch
        .iter()
        .map(|j| {
            let mut row = j.input.clone();
            row.resize(len, 0);
            row
        })
        .collect();
    let rows: Vec<&[u32]> = padded.iter().map(Vec::as_slice).collect();
    model.tokens(&rows)
}

/// Each request's summed continuation log-likelihood, from the final hidden states `(requests,
/// padded_len, hidden)` of its batch.
fn score_batch(model: &Model, batch: &[Job<'_>], hidden: &Tensor) -> Result<Vec<f64>> {
    let len = padded_len(batch);
    let flat = hidden.reshape((batch.len() * len, hidden.dim(2)?))?;
    let mut picks = Vec::new();
    let mut targets = Vec::new();
    for (b, job) in batch.iter().enumerate() {
        let (n, c) = (job.input.len(), job.continuation.len());
        for (k, &t) in job.continuation.iter().enumerate() {
            picks.push((b * len + n - c + k) as u32);
            targets.push(t as usize);
        }
    }
    let vocab = model.vocab_size();
    let block = (LOGIT_BLOCK_ELEMS / vocab).max(1);
    let mut logprobs = Vec::with_capacity(picks.len());
    for (rows, tgts) in picks.chunks(block).zip(targets.chunks(block)) {
        let index = Tensor::from_vec(rows.to_vec(), rows.len(), &Device::Cpu)?;
        let logits: Vec<f32> = model
            .logits(&flat.index_select(&index, 0)?)?
            .flatten_all()?
            .to_vec1()?;
        for (r, &t) in logits.chunks(vocab).zip(tgts) {
            logprobs.push(r[t] as f64 - log_sum_exp(r).0);
        }
    }
    let mut out = Vec::with_capacity(batch.len());
    let mut at = 0;
    for job in batch {
        let c = job.continuation.len();
        out.push(logprobs[at..at + c].iter().sum());
        at += c;
    }
    Ok(out)
}

/// The first index of the largest value.
fn argmax(xs: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, x) in xs.enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best.0
}

fn judge(item: &EncodedItem, lls: Vec<f64>) -> ItemScore {
    let pred = argmax(lls.iter().copied());
    let pred_norm = argmax(
        lls.iter()
            .zip(&item.choice_chars)
            .map(|(ll, &c)| ll / c as f64),
    );
    ItemScore {
        id: item.id.clone(),
        gold: item.gold,
        loglikelihoods: lls,
        pred,
        pred_norm,
    }
}

fn mean(hits: impl Iterator<Item = bool>) -> f64 {
    let (mut k, mut n) = (0usize, 0usize);
    for h in hits {
        k += usize::from(h);
        n += 1;
    }
    if n == 0 {
        0.0
    } else {
        k as f64 / n as f64
    }
}

/// lm-eval's `mean_stderr` of 0/1 outcomes with mean `p`: `sqrt(p (1 - p) / (n - 1))`.
fn stderr(p: f64, n: usize) -> Option<f64> {
    (n >= 2).then(|| (p * (1.0 - p) / (n - 1) as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_is_the_sample_standard_error_of_the_mean() {
        // Outcomes 1, 1, 0, 0, 0: sample variance 0.3, standard error sqrt(0.3 / 5).
        let p = mean([true, true, false, false, false].into_iter());
        assert!((p - 0.4).abs() < 1e-12);
        assert!((stderr(p, 5).unwrap() - (0.3f64 / 5.0).sqrt()).abs() < 1e-12);
        assert_eq!(stderr(1.0, 1), None);
    }

    #[test]
    fn acc_norm_divides_by_character_length_and_ties_go_first() {
        let item = EncodedItem {
            id: "x".into(),
            requests: Vec::new(),
            choice_chars: vec![2, 10, 10],
            gold: 1,
        };
        let s = judge(&item, vec![-3.0, -4.0, -4.0]);
        assert_eq!((s.pred, s.pred_norm), (0, 1));
    }

    #[test]
    fn inputs_are_cut_from_the_left_and_lose_the_last_token() {
        let r = Request {
            context: vec![1, 2, 3, 4],
            continuation: vec![5, 6],
        };
        assert_eq!(input(&r, 16), (vec![1, 2, 3, 4, 5], false));
        assert_eq!(input(&r, 3), (vec![3, 4, 5], true));
    }
}
