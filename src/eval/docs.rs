//! Records into prompts, as lm-eval's `fewshot_context` and `construct_requests` build them from
//! a task's row: the description, the few-shot examples (`question + target_delimiter + answer +
//! fewshot_delimiter` each), then the question; the continuations are `target_delimiter +
//! choice`. Under a chat template (lm-eval's `--apply_chat_template`) the description is the
//! system turn, the question the last user turn, and the target
//! delimiter is dropped; few-shot examples are turns of their own (lm-eval's default
//! `fewshot_as_multiturn`).

use super::pyrandom::PyRandom;
use super::registry::{DocTarget, DocText, Output, Record, Sampler, TaskSpec};
use crate::error::{Error, Result};
use crate::tokenizer::{HfTokenizer, Message};
use std::collections::HashMap;

/// One question, as text, ready to tokenize.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Doc {
    /// The record's `id` or `task_id`, else its 0-based position.
    pub id: String,
    /// The record's subtask (MMLU's subject), if the task has subtasks.
    pub subtask: Option<String>,
    /// One context, or one per choice (WinoGrande).
    pub contexts: Vec<String>,
    /// One continuation per choice, or one that every context shares (WinoGrande, LAMBADA).
    /// Empty for generation.
    pub continuations: Vec<String>,
    /// The right choice.
    pub gold: usize,
    /// Each choice's length in characters, the divisor of `acc_norm`.
    pub choice_chars: Vec<usize>,
    /// The reference a generation is scored against (HumanEval's test, GSM8K's answer).
    pub reference: String,
}

impl Doc {
    /// The (context, continuation) pairs to score, one per choice.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        let n = self.contexts.len().max(self.continuations.len());
        (0..n)
            .map(|i| {
                let c = &self.contexts[i.min(self.contexts.len() - 1)];
                let k = &self.continuations[i.min(self.continuations.len() - 1)];
                (c.as_str(), k.as_str())
            })
            .collect()
    }
}

/// How to build the prompts.
pub struct Build<'a> {
    pub spec: &'a TaskSpec,
    /// Few-shot examples per question.
    pub num_fewshot: usize,
    /// The few-shot split's records (empty without few-shot).
    pub fewshot_pool: &'a [Record],
    /// Render through this tokenizer's chat template.
    pub chat: Option<&'a HfTokenizer>,
}

fn bad(spec: &TaskSpec, i: usize, msg: String) -> Error {
    Error::Invalid(format!("`{}` record {}: {msg}", spec.name, i + 1))
}

/// The question text of a record (for WinoGrande, the right choice's context) and the answer text.
fn question_answer(spec: &TaskSpec, r: &Record) -> std::result::Result<(String, String), String> {
    let choices = match spec.doc_to_choice {
        Some(f) => f(r)?,
        None => Vec::new(),
    };
    let pick = |i: usize| {
        choices
            .get(i)
            .cloned()
            .ok_or_else(|| format!("answer {i} is out of range for {} choices", choices.len()))
    };
    let q = match (spec.doc_to_text)(r)? {
        DocText::Text(s) => s,
        DocText::Index(i) => pick(i)?,
    };
    let a = match (spec.doc_to_target)(r)? {
        DocTarget::Index(i) => pick(i)?,
        DocTarget::Text(s) => s,
    };
    Ok((q, a))
}

fn record_id(r: &Record, i: usize) -> String {
    match r.get("id").or_else(|| r.get("task_id")) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => i.to_string(),
    }
}

/// The prompt under the chat template, as lm-eval renders it by default
/// (`fewshot_as_multiturn`): the description as the system turn, each example a user turn and
/// an assistant turn, the question a user turn, and the assistant's turn opened. A template that
/// refuses the system turn gets the turns without it, as lm-eval retries.
fn chat(
    tok: &HfTokenizer,
    description: &str,
    shots: &[&(String, String)],
    q: &str,
) -> Result<String> {
    let turn = |role: &str, content: &str| Message {
        role: role.into(),
        content: content.into(),
    };
    let mut m = Vec::new();
    for (sq, sa) in shots {
        m.push(turn("user", sq));
        m.push(turn("assistant", sa));
    }
    m.push(turn("user", q));
    if description.is_empty() {
        return tok.render_chat(&m);
    }
    let mut with_system = vec![turn("system", description)];
    with_system.extend(m.iter().cloned());
    tok.render_chat(&with_system)
        .or_else(|_| tok.render_chat(&m))
}

/// Builds every question's prompt from `records`, in order.
pub fn build(b: &Build<'_>, records: &[Record]) -> Result<Vec<Doc>> {
    let spec = b.spec;
    let subtask = |r: &Record| spec.subtask.map(|f| f(r)).transpose();
    // The few-shot pool of each subtask, in file order.
    let mut pools: HashMap<Option<String>, Vec<(String, String)>> = HashMap::new();
    if b.num_fewshot > 0 {
        for (i, r) in b.fewshot_pool.iter().enumerate() {
            let key = subtask(r).map_err(|m| bad(spec, i, format!("few-shot split: {m}")))?;
            let qa = question_answer(spec, r)
                .map_err(|m| bad(spec, i, format!("few-shot split: {m}")))?;
            pools.entry(key).or_default().push(qa);
        }
    }
    let mut rng = match spec.sampler {
        Sampler::Random { seed } => Some(PyRandom::new(seed)),
        Sampler::FirstN => None,
    };
    let mut docs = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let at = |m: String| bad(spec, i, m);
        let sub = subtask(r).map_err(at)?;
        let mut shots: Vec<&(String, String)> = Vec::new();
        if b.num_fewshot > 0 {
            let pool = pools.get(&sub).map(Vec::as_slice).unwrap_or_default();
            if pool.len() < b.num_fewshot {
                return Err(at(format!(
                    "{}-shot needs {} examples{} in the few-shot split, which has {}",
                    b.num_fewshot,
                    b.num_fewshot,
                    sub.as_deref()
                        .map(|s| format!(" of `{s}`"))
                        .unwrap_or_default(),
                    pool.len()
                )));
            }
            let picks: Vec<usize> = match rng.as_mut() {
                Some(g) => g.sample(pool.len(), b.num_fewshot),
                None => (0..b.num_fewshot).collect(),
            };
            shots = picks.into_iter().map(|p| &pool[p]).collect();
        }
        let description = match (spec.description, &sub) {
            (Some(f), Some(s)) => f(s),
            _ => String::new(),
        };
        let wrap = |q: &str| -> Result<String> {
            match b.chat {
                None => {
                    let mut text = description.clone();
                    for (sq, sa) in &shots {
                        text.push_str(&format!(
                            "{sq}{}{sa}{}",
                            spec.target_delimiter, spec.fewshot_delimiter
                        ));
                    }
                    Ok(text + q)
                }
                Some(tok) => chat(tok, &description, &shots, q),
            }
        };
        let delim = if b.chat.is_some() {
            ""
        } else {
            spec.target_delimiter
        };
        let text = (spec.doc_to_text)(r).map_err(at)?;
        let target = (spec.doc_to_target)(r).map_err(at)?;
        let choices = match spec.doc_to_choice {
            Some(f) => f(r).map_err(at)?,
            None => Vec::new(),
        };
        let id = record_id(r, i);
        let doc = match (spec.output, text, target) {
            (Output::MultipleChoice, DocText::Text(q), DocTarget::Index(gold)) => Doc {
                id,
                subtask: sub,
                contexts: vec![wrap(&q)?],
                continuations: choices.iter().map(|c| format!("{delim}{c}")).collect(),
                gold,
                choice_chars: choices.iter().map(|c| c.chars().count()).collect(),
                reference: String::new(),
            },
            (Output::MultipleChoice, DocText::Index(gold), DocTarget::Text(cont)) => Doc {
                id,
                subtask: sub,
                contexts: choices.iter().map(|c| wrap(c)).collect::<Result<_>>()?,
                continuations: vec![format!("{delim}{cont}")],
                gold,
                choice_chars: choices.iter().map(|c| c.chars().count()).collect(),
                reference: String::new(),
            },
            (Output::Loglikelihood, DocText::Text(q), DocTarget::Text(t)) => Doc {
                id,
                subtask: sub,
                contexts: vec![wrap(&q)?],
                choice_chars: vec![t.chars().count()],
                continuations: vec![t],
                gold: 0,
                reference: String::new(),
            },
            (Output::GenerateUntil, DocText::Text(q), DocTarget::Text(t)) => Doc {
                id,
                subtask: sub,
                contexts: vec![wrap(&q)?],
                continuations: Vec::new(),
                gold: 0,
                choice_chars: Vec::new(),
                reference: t,
            },
            _ => return Err(at("the row's prompt functions do not fit its output".into())),
        };
        if spec.output == Output::MultipleChoice {
            let n = doc.choice_chars.len();
            if n < 2 || doc.gold >= n {
                return Err(at(format!(
                    "needs at least 2 choices and the answer among them; has {n} choices, answer {}",
                    doc.gold
                )));
            }
        }
        docs.push(doc);
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::registry::find;
    use serde_json::json;

    fn recs(v: serde_json::Value) -> Vec<Record> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_object().unwrap().clone())
            .collect()
    }

    #[test]
    fn mmlu_five_shot_uses_the_first_dev_questions_of_the_subject() {
        let spec = find("mmlu").unwrap();
        let dev = recs(json!([
            {"question": "D1", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": 1},
            {"question": "X", "subject": "virology", "choices": ["a", "b", "c", "d"], "answer": 0},
            {"question": "D2", "subject": "anatomy", "choices": ["e", "f", "g", "h"], "answer": 3},
        ]));
        let test = recs(json!([
            {"question": "Q?", "subject": "anatomy", "choices": ["w", "x", "y", "z"], "answer": 2},
        ]));
        let b = Build {
            spec,
            num_fewshot: 2,
            fewshot_pool: &dev,
            chat: None,
        };
        let d = &build(&b, &test).unwrap()[0];
        assert_eq!(
            d.contexts[0],
            "The following are multiple choice questions (with answers) about anatomy.\n\n\
             D1\nA. a\nB. b\nC. c\nD. d\nAnswer: B\n\n\
             D2\nA. e\nB. f\nC. g\nD. h\nAnswer: D\n\n\
             Q?\nA. w\nB. x\nC. y\nD. z\nAnswer:"
        );
        assert_eq!(d.continuations, [" A", " B", " C", " D"]);
        assert_eq!((d.gold, d.subtask.as_deref()), (2, Some("anatomy")));
        let b = Build {
            num_fewshot: 3,
            ..b
        };
        let e = build(&b, &test).unwrap_err().to_string();
        assert!(e.contains("3-shot needs 3 examples of `anatomy`"), "{e}");
        let b = Build {
            num_fewshot: 0,
            ..b
        };
        assert!(build(&b, &test).unwrap()[0].contexts[0].starts_with(
            "The following are multiple choice questions (with answers) about anatomy.\n\nQ?\n"
        ));
    }

    #[test]
    fn winogrande_has_a_context_per_option_and_one_continuation() {
        let spec = find("winogrande").unwrap();
        let test =
            recs(json!([{"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": "2"}]));
        let b = Build {
            spec,
            num_fewshot: 0,
            fewshot_pool: &[],
            chat: None,
        };
        let d = &build(&b, &test).unwrap()[0];
        assert_eq!(d.pairs(), [("A x", " b."), ("A y", " b.")]);
        assert_eq!(d.gold, 1);
    }

    #[test]
    fn gsm8k_draws_shots_with_pythons_generator() {
        let spec = find("gsm8k").unwrap();
        let train: Vec<Record> = recs(json!((0..10)
            .map(|i| json!({"question": format!("q{i}"), "answer": format!("a{i}")}))
            .collect::<Vec<_>>()));
        let test = recs(
            json!([{"question": "Q", "answer": "#### 1"}, {"question": "R", "answer": "#### 2"}]),
        );
        let b = Build {
            spec,
            num_fewshot: 5,
            fewshot_pool: &train,
            chat: None,
        };
        let d = build(&b, &test).unwrap();
        // random.Random(1234).sample(range(10), 5) twice: [7, 1, 0, 9, 4], [0, 1, 8, 6, 2].
        let shots = |ix: [usize; 5]| -> String {
            ix.iter()
                .map(|i| format!("Question: q{i}\nAnswer: a{i}\n\n"))
                .collect()
        };
        assert_eq!(
            d[0].contexts[0],
            format!("{}Question: Q\nAnswer:", shots([7, 1, 0, 9, 4]))
        );
        assert_eq!(
            d[1].contexts[0],
            format!("{}Question: R\nAnswer:", shots([0, 1, 8, 6, 2]))
        );
        assert_eq!(d[1].reference, "#### 2");
    }
}
