//! Scoring a registry task's questions ([`super::docs::Doc`]) on a model, by the kind of
//! requests its row makes, into lm-eval's metrics:
//! - `multiple_choice`: `acc` (the most likely choice) and `acc_norm` (per character of the
//!   choice), each with lm-eval's standard error `sqrt(p (1 - p) / (n - 1))`;
//! - `loglikelihood` (LAMBADA): `acc` (the target is greedy) and `perplexity`
//!   (`exp(-mean log-likelihood)` over questions);
//! - `generate_until`: `exact_match` under each filter (GSM8K), or `pass@1` and `pass@k` from `n`
//!   samples run through the tests (HumanEval).

use super::choice::{encode_pair_with, score_encoded, EncodedItem, TaskOpts};
use super::docs::Doc;
use super::execute::{pass_at_k, Outcome, Sandbox};
use super::generate_until::{
    generate_batched, generate_until, prompt_tokens, stop_sequences, GenOpts,
};
use super::loglik;
use super::prompts::{extract, normalise};
use super::registry::{GenScore, Metric, Output, TaskSpec};
use crate::error::{Error, Result};
use crate::model::{Model, Sampling};
use crate::progress::Progress;
use crate::tokenizer::HfTokenizer;
use std::collections::BTreeMap;
use std::time::Instant;

/// How one question went.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ItemResult {
    pub id: String,
    /// The headline metric on this question (0 or 1 for accuracies; pass@1 for code).
    pub score: f64,
    /// Each choice's summed log-likelihood (log-likelihood tasks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub loglikelihoods: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pred: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gold: Option<usize>,
    /// The generated texts (generation tasks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
}

/// A task's scores, named as lm-eval names its metrics.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskScore {
    pub task: String,
    /// The lm-eval task file the prompts follow.
    pub follows: String,
    /// Questions scored.
    pub n: usize,
    pub num_fewshot: usize,
    /// `acc`, `acc_stderr`, `acc_norm`, `acc_norm_stderr`, `perplexity`,
    /// `exact_match,strict-match`, `pass@1`, `pass@k` …
    pub metrics: BTreeMap<String, f64>,
    /// The metric the headline ([`ItemResult::score`]) averages.
    pub headline: String,
    /// The headline metric of each subtask (MMLU's subjects), as lm-eval lists them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub subtasks: BTreeMap<String, Subtask>,
    /// Requests (question × choice) whose input was cut from the left.
    pub truncated: usize,
    pub tokens_forwarded: usize,
    pub seconds: f64,
    /// Notes for the user (a sandbox without network isolation, say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemResult>,
}

/// One subtask's share of a task.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Subtask {
    pub n: usize,
    /// The mean of the headline metric over its questions.
    pub score: f64,
}

/// How to run generation tasks.
#[derive(Debug, Clone)]
pub struct GenSettings {
    /// Samples per prompt (pass@k needs k ≤ n).
    pub n: usize,
    /// The k of `pass@k` besides 1.
    pub k: usize,
    pub sampling: Sampling,
    /// Overrides the row's `max_gen_toks`.
    pub max_gen_toks: Option<usize>,
    /// The sandbox for programs; `None` refuses tasks that run code.
    pub sandbox: Option<Sandbox>,
}

/// Scores `docs` of task `spec`.
#[allow(clippy::too_many_arguments)]
pub fn score_task(
    model: &Model,
    skip: &[usize],
    tok: &HfTokenizer,
    spec: &TaskSpec,
    docs: &[Doc],
    num_fewshot: usize,
    opts: TaskOpts,
    gen: &GenSettings,
    progress: &dyn Progress,
) -> Result<TaskScore> {
    let started = Instant::now();
    let mut score = TaskScore {
        task: spec.name.to_string(),
        follows: spec.follows.to_string(),
        n: docs.len(),
        num_fewshot,
        metrics: BTreeMap::new(),
        headline: String::new(),
        subtasks: BTreeMap::new(),
        truncated: 0,
        tokens_forwarded: 0,
        seconds: 0.0,
        notes: Vec::new(),
        items: Vec::new(),
    };
    match spec.output {
        Output::MultipleChoice => {
            multiple_choice(model, skip, tok, spec, docs, opts, &mut score, progress)?
        }
        Output::Loglikelihood => loglikelihood(model, skip, tok, docs, opts, &mut score, progress)?,
        Output::GenerateUntil => generation(
            model, skip, tok, spec, docs, opts, gen, &mut score, progress,
        )?,
    }
    for (d, item) in docs.iter().zip(&score.items) {
        if let Some(sub) = &d.subtask {
            let e = score
                .subtasks
                .entry(sub.clone())
                .or_insert(Subtask { n: 0, score: 0.0 });
            e.n += 1;
            e.score += item.score;
        }
    }
    for e in score.subtasks.values_mut() {
        e.score /= e.n as f64;
    }
    score.seconds = started.elapsed().as_secs_f64();
    Ok(score)
}

/// lm-eval's `mean_stderr` of 0/1 outcomes with mean `p`.
fn stderr(p: f64, n: usize) -> f64 {
    if n < 2 {
        f64::NAN
    } else {
        (p * (1.0 - p) / (n - 1) as f64).sqrt()
    }
}

fn put_mean(score: &mut TaskScore, name: &str, hits: &[f64]) {
    let n = hits.len();
    let p = hits.iter().sum::<f64>() / n.max(1) as f64;
    score.metrics.insert(name.to_string(), p);
    score.metrics.insert(format!("{name}_stderr"), stderr(p, n));
}

#[allow(clippy::too_many_arguments)]
fn multiple_choice(
    model: &Model,
    skip: &[usize],
    tok: &HfTokenizer,
    spec: &TaskSpec,
    docs: &[Doc],
    opts: TaskOpts,
    score: &mut TaskScore,
    progress: &dyn Progress,
) -> Result<()> {
    let items = docs
        .iter()
        .map(|d| {
            let requests = d
                .pairs()
                .into_iter()
                .map(|(c, k)| encode_pair_with(tok, c, k, true))
                .collect::<Result<Vec<_>>>()?;
            Ok(EncodedItem {
                id: d.id.clone(),
                requests,
                choice_chars: d.choice_chars.clone(),
                gold: d.gold,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let report = score_encoded(model, skip, &items, opts, progress)?;
    let norm = spec.metrics.contains(&Metric::AccNorm);
    let hits: Vec<f64> = hit(report.items.iter().map(|i| i.pred == i.gold));
    put_mean(score, "acc", &hits);
    let headline = if norm {
        let hits_norm = hit(report.items.iter().map(|i| i.pred_norm == i.gold));
        put_mean(score, "acc_norm", &hits_norm);
        hits_norm
    } else {
        hits
    };
    score.headline = if norm { "acc_norm" } else { "acc" }.into();
    score.truncated = report.truncated;
    score.tokens_forwarded = report.tokens_forwarded;
    score.items = report
        .items
        .into_iter()
        .zip(headline)
        .map(|(i, s)| ItemResult {
            id: i.id,
            score: s,
            pred: Some(if norm { i.pred_norm } else { i.pred }),
            gold: Some(i.gold),
            loglikelihoods: i.loglikelihoods,
            outputs: Vec::new(),
        })
        .collect();
    Ok(())
}

fn hit(it: impl Iterator<Item = bool>) -> Vec<f64> {
    it.map(|b| f64::from(u8::from(b))).collect()
}

fn loglikelihood(
    model: &Model,
    skip: &[usize],
    tok: &HfTokenizer,
    docs: &[Doc],
    opts: TaskOpts,
    score: &mut TaskScore,
    progress: &dyn Progress,
) -> Result<()> {
    let requests = docs
        .iter()
        .map(|d| encode_pair_with(tok, &d.contexts[0], &d.continuations[0], true))
        .collect::<Result<Vec<_>>>()?;
    let (answers, stats) =
        loglik::loglikelihoods(model, skip, &requests, opts.max_len, opts.batch, progress)?;
    let hits = hit(answers.iter().map(|a| a.greedy));
    put_mean(score, "acc", &hits);
    let mean_ll = answers.iter().map(|a| a.ll).sum::<f64>() / answers.len().max(1) as f64;
    score.metrics.insert("perplexity".into(), (-mean_ll).exp());
    score.headline = "acc".into();
    score.truncated = stats.truncated;
    score.tokens_forwarded = stats.tokens_forwarded;
    score.items = docs
        .iter()
        .zip(answers)
        .zip(hits)
        .map(|((d, a), s)| ItemResult {
            id: d.id.clone(),
            score: s,
            loglikelihoods: vec![a.ll],
            pred: None,
            gold: None,
            outputs: Vec::new(),
        })
        .collect();
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn generation(
    model: &Model,
    skip: &[usize],
    tok: &HfTokenizer,
    spec: &TaskSpec,
    docs: &[Doc],
    opts: TaskOpts,
    gen: &GenSettings,
    score: &mut TaskScore,
    progress: &dyn Progress,
) -> Result<()> {
    let Some(g) = spec.generation else {
        return Err(Error::Invalid(format!(
            "`{}` has no generation settings",
            spec.name
        )));
    };
    let max_gen_toks = gen.max_gen_toks.unwrap_or(g.max_gen_toks);
    let until = stop_sequences(g.until, tok)?;
    let gopts = GenOpts {
        until: &until,
        max_gen_toks,
        max_len: opts.max_len,
        n: gen.n,
        sampling: gen.sampling.clone(),
        skip,
    };
    let sandbox = match (g.score, &gen.sandbox) {
        (GenScore::Execute, None) => {
            return Err(Error::Invalid(format!(
                "`{}` runs the code the model writes; pass `--confirm-run-unsafe-code` to allow it",
                spec.name
            )))
        }
        (_, sb) => sb.as_ref(),
    };
    if let Some(note) = sandbox.and_then(Sandbox::network_note) {
        score.notes.push(note);
    }
    let prompts = (docs.iter())
        .map(|d| prompt_tokens(tok, &d.contexts[0], opts.max_len, max_gen_toks))
        .collect::<Result<Vec<_>>>()?;
    score.tokens_forwarded += prompts.iter().map(Vec::len).sum::<usize>();
    progress.start("generate", docs.len() as u64);
    // One sample a prompt: prompts batched together; several (pass@k): each prompt's samples
    // are the batch.
    let all: Vec<Vec<String>> = if gen.n <= 1 {
        let done = &mut |_| progress.advance(1);
        generate_batched(model, tok, &prompts, &gopts, opts.batch, done)?
            .into_iter()
            .map(|o| vec![o])
            .collect()
    } else {
        (prompts.iter())
            .map(|p| {
                let o = generate_until(model, tok, p, &gopts);
                progress.advance(1);
                o
            })
            .collect::<Result<_>>()?
    };
    progress.finish();
    progress.start("score", docs.len() as u64);
    let mut per_filter: Vec<Vec<f64>> = Vec::new();
    let mut passes = Vec::new();
    for (d, outputs) in docs.iter().zip(all) {
        let item_score = match g.score {
            GenScore::Execute => {
                let sb = sandbox.ok_or_else(|| Error::Invalid("no sandbox".into()))?;
                let mut c = 0;
                for out in &outputs {
                    // lm-eval's build_predictions and code_eval: prompt + completion, a newline,
                    // then the test and `check(entry_point)`.
                    let program = format!("{}{}\n{}", d.contexts[0], out, d.reference);
                    c += usize::from(sb.run(&program)? == Outcome::Passed);
                }
                passes.push(c);
                pass_at_k(outputs.len(), c, 1)
            }
            GenScore::ExactMatch(rule) => {
                let gold = normalise(rule, &d.reference);
                // lm-eval scores the first of the samples (`take_first`).
                let first = outputs.first().map(String::as_str).unwrap_or_default();
                per_filter.resize(rule.filters.len(), Vec::new());
                for (f, hits) in rule.filters.iter().zip(per_filter.iter_mut()) {
                    let got = normalise(rule, &extract(f, first));
                    hits.push(f64::from(u8::from(got == gold)));
                }
                per_filter
                    .first()
                    .and_then(|h| h.last())
                    .copied()
                    .unwrap_or(0.0)
            }
        };
        score.items.push(ItemResult {
            id: d.id.clone(),
            score: item_score,
            loglikelihoods: Vec::new(),
            pred: None,
            gold: None,
            outputs,
        });
        progress.advance(1);
    }
    progress.finish();
    match g.score {
        GenScore::Execute => {
            let n = gen.n.max(1);
            let mean = |k: usize| {
                passes.iter().map(|&c| pass_at_k(n, c, k)).sum::<f64>() / passes.len().max(1) as f64
            };
            score.metrics.insert("pass@1".into(), mean(1));
            if gen.k > 1 && gen.k <= n {
                score.metrics.insert(format!("pass@{}", gen.k), mean(gen.k));
            }
            let p1 = mean(1);
            score
                .metrics
                .insert("pass@1_stderr".into(), stderr(p1, passes.len()));
            score.headline = "pass@1".into();
        }
        GenScore::ExactMatch(rule) => {
            for (f, hits) in rule.filters.iter().zip(&per_filter) {
                put_mean(score, &format!("exact_match,{}", f.name), hits);
            }
            if let Some(first) = per_filter.first() {
                put_mean(score, "exact_match", first);
            }
            score.headline = "exact_match".into();
        }
    }
    Ok(())
}
