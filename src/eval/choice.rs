//! Zero-shot multiple-choice scoring by log-likelihood, as lm-evaluation-harness scores
//! `multiple_choice` tasks.
//!
//! Each choice becomes a request: context `item.context`, continuation `" " + choice`. Tokens
//! come as lm-eval's `_encode_pair` makes them: whitespace at the end of the context moves to the
//! front of the continuation, `context + continuation` is encoded whole (no special tokens for
//! our JSONL files; the tokenizer's defaults for registry tasks, as lm-eval 0.4.9+) and the
//! continuation tokens are those after the context's own token count. An empty context (or one
//! of whitespace alone) is one token, BOS (else EOS). A choice's score is the sum of the
//! log-probabilities of its continuation tokens given `(context + continuation)` cut from the
//! left to its last `max_len + 1` tokens, less the last one ([`super::loglik`] computes them,
//! running a context the choices share once). `acc` takes the argmax of the sums, `acc_norm`
//! of the sums divided by the choice's length in characters (lm-eval's `completion_len`: the
//! choice text without the leading space); ties go to the first. Standard errors are the sample
//! standard error of the mean of the 0/1 outcomes, `sqrt(p (1 - p) / (n - 1))`.

use super::loglik;
pub use super::loglik::Request;
use super::tasks::TaskItem;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::progress::Progress;
use crate::tokenizer::HfTokenizer;
use std::time::Instant;

/// The context length lm-eval assumes when a model's config does not give one.
pub const DEFAULT_MAX_LEN: usize = 2048;

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

/// Splits a context and a continuation into tokens as lm-eval's `_encode_pair` does, without
/// special tokens (as lm-eval before 0.4.9 encoded them, and our JSONL task files are scored).
pub fn encode_pair(tok: &HfTokenizer, context: &str, continuation: &str) -> Result<Request> {
    encode_pair_with(tok, context, continuation, false)
}

/// [`encode_pair`]; with `special`, the tokenizer adds its special tokens as `tokenizer.encode`
/// does by default (lm-eval 0.4.9 and later), unless the text already starts with the BOS token
/// (a rendered chat template).
pub fn encode_pair_with(
    tok: &HfTokenizer,
    context: &str,
    continuation: &str,
    special: bool,
) -> Result<Request> {
    let special = special
        && !tok
            .bos_token()
            .is_some_and(|b| !b.is_empty() && context.starts_with(b));
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
            continuation: tok.encode(&continuation, special)?,
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
    let whole = tok.encode(&format!("{context}{continuation}"), special)?;
    let context = tok.encode(context, special)?;
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

/// Scores questions given as tokens ([`super::loglik`]: a question's choices that share their
/// context run it once).
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
    let requests: Vec<Request> = items.iter().flat_map(|i| i.requests.clone()).collect();
    let (answers, stats) =
        loglik::loglikelihoods(model, skip, &requests, opts.max_len, opts.batch, progress)?;
    let mut at = 0;
    let scores: Vec<ItemScore> = items
        .iter()
        .map(|i| {
            let lls = answers[at..at + i.requests.len()]
                .iter()
                .map(|a| a.ll)
                .collect();
            at += i.requests.len();
            judge(i, lls)
        })
        .collect();
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
        truncated: stats.truncated,
        tokens_forwarded: stats.tokens_forwarded,
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
}
