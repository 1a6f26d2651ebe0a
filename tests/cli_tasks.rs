//! `depthprune eval --tasks` run as a user runs it, on the golden llama fixture and
//! `tests/fixtures/golden/tasks.jsonl`, against transformers' numbers in `tasks_expected.json`
//! (scripts/golden_tasks.py); and bad task files, which must fail with one line naming the file
//! and the line.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

fn depthprune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_depthprune"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn expected(run: &str) -> Value {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(golden().join("tasks_expected.json")).unwrap(),
    )
    .unwrap();
    v["runs"][run]["archs"]["llama"].clone()
}

fn eval_json(extra: &[&str]) -> Value {
    let (model, tasks) = (golden().join("llama"), golden().join("tasks.jsonl"));
    let mut args = vec!["eval", s(&model), "--tasks", s(&tasks), "--json"];
    args.extend(extra);
    let out = depthprune(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check_against(v: &Value, want: &Value) {
    for key in ["acc", "acc_stderr", "acc_norm", "acc_norm_stderr"] {
        let (g, w) = (v[key].as_f64().unwrap(), want[key].as_f64().unwrap());
        assert!((g - w).abs() < 1e-9, "{key}: {g} vs {w}");
    }
    let items = v["items"].as_array().unwrap();
    let lls = want["loglikelihoods"].as_array().unwrap();
    assert_eq!(items.len(), lls.len());
    for (item, w) in items.iter().zip(lls) {
        let g = item["loglikelihoods"].as_array().unwrap();
        let w = w.as_array().unwrap();
        assert_eq!(g.len(), w.len());
        for (g, w) in g.iter().zip(w) {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!((g - w).abs() < 1e-4, "{} vs {w}", g);
        }
    }
}

#[test]
fn json_reports_transformers_accuracy_with_and_without_skipping() {
    let v = eval_json(&["--per-item"]);
    assert_eq!(v["n"], 5);
    assert_eq!(v["skip"], serde_json::json!([]));
    assert_eq!(v["truncated"], 0);
    assert_eq!(v["items"][1]["id"], "baker");
    check_against(&v, &expected("256"));
    let v = eval_json(&["--per-item", "--skip", "1..3"]);
    assert_eq!(v["skip"], serde_json::json!([1, 2]));
    check_against(&v, &expected("256-skip1,2"));
    // Without --per-item, no per-question list; --limit keeps the first questions.
    let v = eval_json(&["--limit", "2"]);
    assert_eq!(v["n"], 2);
    assert!(v.get("items").is_none());
}

#[test]
fn table_shows_acc_and_acc_norm_with_stderr() {
    let (model, tasks) = (golden().join("llama"), golden().join("tasks.jsonl"));
    let out = depthprune(&["eval", s(&model), "--tasks", s(&tasks)]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let want = expected("256");
    let acc = format!(
        "{:.4} ± {:.4}",
        want["acc"].as_f64().unwrap(),
        want["acc_stderr"].as_f64().unwrap()
    );
    assert!(
        text.contains("5 questions") && text.contains(&acc),
        "{text}"
    );
    assert!(text.contains("acc_norm"), "{text}");
}

#[test]
fn bad_task_files_fail_with_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = golden().join("llama");
    let good = r#"{"context": "a", "choices": ["x", "y"], "gold": 0}"#;
    let cases = [
        ("{not json", "not valid JSON"),
        (r#"{"context": "a", "gold": 0}"#, "missing field `choices`"),
        (
            r#"{"context": "a", "choices": ["x", "y"], "gold": 5}"#,
            "gold 5 is out of range",
        ),
        (
            r#"{"context": "a", "choices": ["x"], "gold": 0}"#,
            "needs at least 2 choices, found 1",
        ),
    ];
    for (i, (bad, msg)) in cases.iter().enumerate() {
        let p = tmp.path().join(format!("bad{i}.jsonl"));
        std::fs::write(&p, format!("{good}\n\n{bad}\n{good}\n")).unwrap();
        let out = depthprune(&["eval", s(&model), "--tasks", s(&p)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        let want = format!("error: `{}` line 3: {msg}", p.display());
        assert!(err.starts_with(&want), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    let out = depthprune(&["eval", s(&model), "--tasks", "missing.jsonl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.jsonl"));
}
