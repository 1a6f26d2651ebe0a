//! HumanEval end to end on the tiny llama: generation, the program lm-eval builds (prompt +
//! completion + newline + test + `check(entry_point)`), contained execution and pass@k. The
//! prompts end inside a raw string, so whatever the random model writes stays text and each
//! problem passes or fails by its test alone; and the CLI refuses without consent.

use depthprune::eval::docs::{build, Build};
use depthprune::eval::execute::{Limits, Sandbox};
use depthprune::eval::registry::{find, Record};
use depthprune::eval::suite::{score_task, GenSettings};
use depthprune::eval::TaskOpts;
use depthprune::model::{Model, Sampling};
use depthprune::progress::Silent;
use depthprune::tokenizer::open_tokenizer;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;

fn llama() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/llama")
}

fn problems() -> Vec<Record> {
    let p = |id: &str, want: i32| {
        json!({"task_id": id, "entry_point": "f",
               "prompt": "def f():\n    return 1\n\nNOTE = r\"\"\"",
               "test": format!("\"\"\"\n\ndef check(candidate):\n    assert candidate() == {want}\n")})
        .as_object()
        .unwrap()
        .clone()
    };
    vec![p("HumanEval/0", 1), p("HumanEval/1", 2)]
}

#[test]
fn programs_pass_by_their_tests_and_pass_at_k_counts_them() {
    let model = Model::open(&llama()).unwrap();
    let (tok, _) = open_tokenizer(&llama()).unwrap();
    let spec = find("humaneval").unwrap();
    let docs = build(
        &Build {
            spec,
            num_fewshot: 0,
            fewshot_pool: &[],
            chat: None,
        },
        &problems(),
    )
    .unwrap();
    let opts = TaskOpts {
        max_len: 256,
        batch: 1,
    };
    let mut gen = GenSettings {
        n: 1,
        k: 1,
        sampling: Sampling::greedy(),
        max_gen_toks: Some(12),
        sandbox: None,
    };
    let e = score_task(&model, &[], &tok, spec, &docs, 0, opts, &gen, &Silent).unwrap_err();
    assert!(e.to_string().contains("--confirm-run-unsafe-code"), "{e}");
    gen.sandbox = Some(Sandbox::new(Limits::default()).unwrap());
    let got = score_task(&model, &[], &tok, spec, &docs, 0, opts, &gen, &Silent).unwrap();
    assert_eq!(got.metrics["pass@1"], 0.5, "{:?}", got.items);
    assert_eq!(got.items[0].score, 1.0);
    assert_eq!(got.items[1].score, 0.0);
    assert!(!got.items[0].outputs[0].is_empty());
    // Three samples each at temperature 1: every sample of the first passes, none of the second.
    gen.n = 3;
    gen.k = 2;
    gen.sampling = Sampling {
        temperature: 1.0,
        top_p: 1.0,
        top_k: 0,
        seed: 5,
    };
    let got = score_task(&model, &[], &tok, spec, &docs, 0, opts, &gen, &Silent).unwrap();
    assert_eq!(got.items[0].outputs.len(), 3);
    assert_ne!(got.items[0].outputs[0], got.items[0].outputs[1]);
    assert_eq!((got.metrics["pass@1"], got.metrics["pass@2"]), (0.5, 0.5));
}

#[test]
fn the_cli_refuses_code_tasks_without_consent_before_loading_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("HumanEval.jsonl");
    let lines: Vec<String> = problems()
        .into_iter()
        .map(|r| serde_json::Value::Object(r).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let bin = env!("CARGO_BIN_EXE_depthprune");
    let task = format!("humaneval={}", data.display());
    let out = Command::new(bin)
        .current_dir(dir.path())
        .args(["eval", "no-such-model", "--tasks", &task])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--confirm-run-unsafe-code") && err.lines().count() == 1,
        "{err}"
    );
    let out = Command::new(bin)
        .current_dir(dir.path())
        .args(["eval"])
        .arg(llama())
        .args([
            "--tasks",
            &task,
            "--confirm-run-unsafe-code",
            "--max-gen-toks",
            "8",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tasks"][0]["task"], "humaneval");
    assert_eq!(v["tasks"][0]["metrics"]["pass@1"], 0.5);
    // Nothing was left in the working folder.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
