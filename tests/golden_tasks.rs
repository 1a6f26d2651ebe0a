//! Multiple-choice scoring against transformers (`scripts/golden_tasks.py`): the llama fixture's
//! tokenizer must split `tasks.jsonl` into the same context/continuation tokens as lm-eval's
//! `_encode_pair`, and every tiny model must give transformers' summed log-likelihoods (within
//! 1e-4), accuracies and standard errors, at full length, with left truncation, and with layers
//! skipped, whatever the batch size.

use depthprune::eval::{self, EncodedItem, Request, TaskOpts, TaskReport};
use depthprune::model::Model;
use depthprune::progress::Silent;
use depthprune::tokenizer::HfTokenizer;
use serde_json::Value;
use std::path::PathBuf;

const TOL: f64 = 1e-4;

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(golden().join("tasks_expected.json")).unwrap())
        .unwrap()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// The questions as transformers tokenized them.
fn encoded(exp: &Value) -> Vec<EncodedItem> {
    let items = exp["requests"].as_array().unwrap();
    items
        .iter()
        .enumerate()
        .map(|(i, reqs)| EncodedItem {
            id: i.to_string(),
            requests: serde_json::from_value::<Vec<Request>>(reqs.clone()).unwrap(),
            choice_chars: usizes(&exp["choice_chars"][i]),
            gold: exp["gold"][i].as_u64().unwrap() as usize,
        })
        .collect()
}

/// Compares a report with transformers' run; returns the largest log-likelihood difference.
fn compare(what: &str, got: &TaskReport, want: &Value) -> f64 {
    let mut worst = 0f64;
    let lls = want["loglikelihoods"].as_array().unwrap();
    assert_eq!(got.n, lls.len(), "{what}");
    for (item, w) in got.items.iter().zip(lls) {
        let w: Vec<f64> = w
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(item.loglikelihoods.len(), w.len(), "{what}");
        for (g, w) in item.loglikelihoods.iter().zip(&w) {
            worst = worst.max((g - w).abs());
        }
    }
    assert!(worst <= TOL, "{what}: log-likelihoods differ by {worst}");
    for key in ["acc", "acc_stderr", "acc_norm", "acc_norm_stderr"] {
        let g = serde_json::to_value(got).unwrap()[key].as_f64().unwrap();
        let w = want[key].as_f64().unwrap();
        assert!((g - w).abs() < 1e-9, "{what}: {key} {g} vs {w}");
    }
    worst
}

#[test]
fn text_splits_into_lm_eval_tokens() {
    let exp = expected();
    let tok = HfTokenizer::open(&golden().join("llama")).unwrap();
    let items = eval::read_tasks(&golden().join("tasks.jsonl"), None).unwrap();
    let want = encoded(&exp);
    assert_eq!(items.len(), want.len());
    for (item, w) in items.iter().zip(&want) {
        let got = eval::choice::encode_item(&tok, item).unwrap();
        assert_eq!(got.requests, w.requests, "question `{}`", item.id);
        assert_eq!(got.choice_chars, w.choice_chars, "question `{}`", item.id);
        assert_eq!(got.gold, w.gold);
    }
}

#[test]
fn loglikelihoods_match_transformers_in_every_run() {
    let exp = expected();
    let items = encoded(&exp);
    let mut worst = 0f64;
    for (name, run) in exp["runs"].as_object().unwrap() {
        let max_len = run["max_len"].as_u64().unwrap() as usize;
        let skip = usizes(&run["skip"]);
        for (arch, want) in run["archs"].as_object().unwrap() {
            let model = Model::open(&golden().join(arch)).unwrap();
            // One request per forward, and batches of unequal lengths padded on the right.
            for batch in [1, 4, 64] {
                let opts = TaskOpts { max_len, batch };
                let got = eval::score_encoded(&model, &skip, &items, opts, &Silent).unwrap();
                let what = format!("{arch} run {name} batch {batch}");
                worst = worst.max(compare(&what, &got, want));
                if max_len == 12 {
                    assert!(got.truncated > 0, "{what}: nothing was truncated");
                } else {
                    assert_eq!(got.truncated, 0, "{what}");
                }
            }
        }
    }
    eprintln!("max abs difference from transformers: {worst:.2e}");
}

#[test]
fn score_tasks_from_text_matches_transformers() {
    let exp = expected();
    let dir = golden().join("llama");
    let model = Model::open(&dir).unwrap();
    let tok = HfTokenizer::open(&dir).unwrap();
    let items = eval::read_tasks(&golden().join("tasks.jsonl"), None).unwrap();
    let got = eval::score_tasks(&model, &[], &tok, &items, &Silent).unwrap();
    assert_eq!(got.max_len, 256);
    compare(
        "llama from text",
        &got,
        &exp["runs"]["256"]["archs"]["llama"],
    );
    assert_eq!(got.items[0].id, "lamp");
}

#[test]
fn empty_and_whitespace_contexts_start_from_bos() {
    use depthprune::eval::choice::encode_pair;
    let tok = HfTokenizer::open(&golden().join("llama")).unwrap();
    let bos = tok.bos_id().unwrap();
    let r = encode_pair(&tok, "", " the bell").unwrap();
    assert_eq!(r.context, vec![bos]);
    assert_eq!(r.continuation, tok.encode(" the bell", false).unwrap());
    let r = encode_pair(&tok, " \n", " the bell").unwrap();
    assert_eq!(r.context, vec![bos]);
    assert_eq!(r.continuation, tok.encode(" \n the bell", false).unwrap());
}
