//! SmolLM2-135M-Instruct (Q4_1 GGUF) on `tests/fixtures/smollm2/tasks.jsonl` (our format and
//! hand-written HellaSwag, PIQA, ARC and BoolQ records) against transformers' numbers in
//! `tests/fixtures/smollm2/tasks_expected.json` (`scripts/golden_tasks.py --smollm2`): the
//! prompts each format maps to, lm-eval's token split with the GGUF tokenizer, and the summed
//! log-likelihoods and accuracies of `depthprune eval --tasks`.
//!
//! Set `DEPTHPRUNE_SMOLLM2_GGUF` to the `.gguf` path to run it; without it the test says SKIPPED
//! and passes.

use depthprune::eval::{self, Request};
use depthprune::tokenizer::open_tokenizer;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const VAR: &str = "DEPTHPRUNE_SMOLLM2_GGUF";
/// Summed log-likelihoods over a few tokens of dequantized weights; transformers and depthprune
/// add in different orders.
const TOL: f64 = 5e-4;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2")
}

#[test]
fn tasks_match_transformers_on_smollm2() {
    let Some(gguf) = std::env::var_os(VAR) else {
        eprintln!("SKIPPED: set {VAR} to the SmolLM2-135M-Instruct Q4_1 GGUF to run this test");
        return;
    };
    let gguf = PathBuf::from(gguf);
    let file = dir().join("tasks.jsonl");
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("tasks_expected.json")).unwrap())
            .unwrap();

    // Prompts and tokens.
    let items = eval::read_tasks(&file, None).unwrap();
    let (tok, _) = open_tokenizer(&gguf).unwrap();
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item.context, want["contexts"][i], "question `{}`", item.id);
        let got = eval::choice::encode_item(&tok, item).unwrap();
        let reqs: Vec<Request> = serde_json::from_value(want["requests"][i].clone()).unwrap();
        assert_eq!(got.requests, reqs, "question `{}`", item.id);
        assert_eq!(item.gold as u64, want["gold"][i].as_u64().unwrap());
    }

    // Scores, through the CLI.
    let out = Command::new(env!("CARGO_BIN_EXE_depthprune"))
        .args([
            "eval",
            s(&gguf),
            "--tasks",
            s(&file),
            "--json",
            "--per-item",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = want["runs"].as_object().unwrap().values().next().unwrap();
    assert_eq!(v["max_len"], run["max_len"]);
    let r = &run["archs"]["smollm2"];
    let mut worst = 0f64;
    for (item, lls) in v["items"]
        .as_array()
        .unwrap()
        .iter()
        .zip(r["loglikelihoods"].as_array().unwrap())
    {
        for (g, w) in item["loglikelihoods"]
            .as_array()
            .unwrap()
            .iter()
            .zip(lls.as_array().unwrap())
        {
            worst = worst.max((g.as_f64().unwrap() - w.as_f64().unwrap()).abs());
        }
    }
    eprintln!("smollm2 tasks: max abs log-likelihood difference vs transformers {worst:.2e}");
    assert!(worst < TOL, "log-likelihoods differ by {worst}");
    for key in ["acc", "acc_stderr", "acc_norm", "acc_norm_stderr"] {
        let (g, w) = (v[key].as_f64().unwrap(), r[key].as_f64().unwrap());
        assert!((g - w).abs() < 1e-9, "{key}: {g} vs {w}");
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
