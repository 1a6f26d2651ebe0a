//! Registry tasks against lm-evaluation-harness itself: `tests/fixtures/lmeval/expected.json`
//! holds what lm-eval (with transformers, f32) gave on the tiny llama fixture for small data files
//! in each Hub dataset's schema (`scripts/golden_lmeval.py`, task YAMLs that include lm-eval's own
//! task files). Here the same files go through the registry: the prompts must be lm-eval's to the
//! character, the per-item log-likelihoods equal within 1e-3, the picks, greedy flags, generated
//! texts and metrics the same. `mmlu@chat` is MMLU under the checkpoint's chat template, as
//! lm-eval's `--apply_chat_template` renders it.

use depthprune::api::tasks::{load, DataAt};
use depthprune::eval::docs::{build, Build};
use depthprune::eval::registry::{find, Output};
use depthprune::eval::suite::{score_task, GenSettings, TaskScore};
use depthprune::eval::TaskOpts;
use depthprune::model::{Model, Sampling};
use depthprune::progress::Silent;
use depthprune::tokenizer::open_tokenizer;
use serde_json::Value;
use std::path::PathBuf;

const TOL: f64 = 1e-3;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

fn run(task: &str, want: &Value) -> (Vec<depthprune::eval::docs::Doc>, TaskScore) {
    let dir = fixtures().join("golden/llama");
    let model = Model::open(&dir).unwrap();
    let (tok, _) = open_tokenizer(&dir).unwrap();
    let (name, chat) = match task.split_once('@') {
        Some((n, "chat")) => (n, true),
        _ => (task, false),
    };
    let spec = find(name).unwrap();
    let shots = want["num_fewshot"].as_u64().unwrap() as usize;
    let dir = fixtures().join("lmeval").join(name);
    let data = load(spec, DataAt::Path(&dir), None, Some(shots)).unwrap();
    let docs = build(
        &Build {
            spec,
            num_fewshot: shots,
            fewshot_pool: &data.fewshot,
            chat: chat.then_some(&tok),
        },
        &data.records,
    )
    .unwrap();
    let gen = GenSettings {
        n: 1,
        k: 1,
        sampling: Sampling::greedy(),
        max_gen_toks: want["max_gen_toks"].as_u64().map(|m| m as usize),
        sandbox: None,
    };
    let opts = TaskOpts {
        max_len: 256,
        batch: 3,
    };
    let score = score_task(&model, &[], &tok, spec, &docs, shots, opts, &gen, &Silent).unwrap();
    (docs, score)
}

#[test]
fn every_task_matches_lm_eval() {
    let exp: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("lmeval/expected.json")).unwrap(),
    )
    .unwrap();
    let mut worst = 0f64;
    let tasks = exp["tasks"].as_object().unwrap();
    assert!(tasks.len() >= 10, "{} tasks in the fixture", tasks.len());
    for (task, want) in tasks {
        let (docs, got) = run(task, want);
        let items = want["items"].as_array().unwrap();
        assert_eq!(got.items.len(), items.len(), "{task}");
        for ((w, g), d) in items.iter().zip(&got.items).zip(&docs) {
            let what = format!("{task} item {}", w["doc_id"]);
            // The first request's context and continuation, to the character.
            let args = &w["arguments"][0];
            assert_eq!(d.contexts[0], args[0].as_str().unwrap(), "{what}: context");
            if let Some(cont) = args[1].as_str() {
                assert_eq!(d.pairs()[0].1, cont, "{what}: continuation");
            }
            if let Some(lls) = w["lls"].as_array() {
                let lls: Vec<f64> = lls.iter().map(|v| v.as_f64().unwrap()).collect();
                assert_eq!(g.loglikelihoods.len(), lls.len(), "{what}");
                for (a, b) in g.loglikelihoods.iter().zip(&lls) {
                    worst = worst.max((a - b).abs());
                    assert!((a - b).abs() < TOL, "{what}: {a} vs lm-eval {b}");
                }
                let name = task.split('@').next().unwrap();
                if find(name).unwrap().output == Output::MultipleChoice {
                    let norm = got.headline == "acc_norm";
                    if !norm {
                        assert_eq!(g.pred, Some(argmax(&lls)), "{what}: pick");
                    }
                } else {
                    let greedy = w["greedy"][0].as_bool().unwrap();
                    assert_eq!(g.score == 1.0, greedy, "{what}: greedy");
                }
            }
            if let Some(outs) = w["outputs"].as_array() {
                let outs: Vec<&str> = outs.iter().map(|v| v.as_str().unwrap()).collect();
                assert_eq!(g.outputs, outs, "{what}: generated text");
            }
        }
        for (metric, v) in want["metrics"].as_object().unwrap() {
            let Some(v) = v.as_f64() else { continue };
            let mine = got.metrics.get(metric).copied();
            let mine = mine.unwrap_or_else(|| panic!("{task}: no `{metric}` in {:?}", got.metrics));
            let tol = if metric == "perplexity" {
                v * 1e-3
            } else {
                1e-9
            };
            assert!(
                (mine - v).abs() <= tol,
                "{task} {metric}: {mine} vs lm-eval {v}"
            );
        }
    }
    eprintln!("max abs log-likelihood difference from lm-eval: {worst:.2e}");
    // MMLU's questions are all of one subject in the fixture: its subtask is the whole task.
    let (_, mmlu) = run("mmlu", &tasks["mmlu"]);
    let anatomy = &mmlu.subtasks["anatomy"];
    assert_eq!((anatomy.n, anatomy.score), (3, mmlu.metrics["acc"]));
}
