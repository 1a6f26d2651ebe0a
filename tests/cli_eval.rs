//! `depthprune eval` and `depthprune generate` run as a user runs them, on the golden llama
//! fixture, each test in a fresh temporary folder.

mod common;

use common::{fixture, run_in as depthprune, s, stderr};
use std::path::Path;
use std::process::Output;

fn expected() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixture().join("llama/eval_expected.json")).unwrap(),
    )
    .unwrap()
}

/// `depthprune eval` of the llama fixture on `text` with `args`, run in `dir`.
fn eval(dir: &Path, text: &Path, args: &[&str]) -> Output {
    let model = fixture().join("llama");
    let mut a = vec!["eval", s(&model), "--text", s(text)];
    a.extend_from_slice(args);
    depthprune(&a, dir)
}

/// [`eval`] on the fixture's text in windows of 16 tokens, which must succeed; its stdout as
/// JSON.
fn eval_json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--ctx", "16"];
    a.extend_from_slice(args);
    a.push("--json");
    let out = eval(dir, &fixture().join("eval.txt"), &a);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn eval_json_reports_the_transformers_perplexity() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture().join("llama");
    let v = eval_json(tmp.path(), &["--skip", "1..3", "--reference", s(&model)]);
    let c = &expected()["chunks"];
    let ppl = v["perplexity"].as_f64().unwrap();
    let want = c["skip_perplexity"].as_f64().unwrap();
    assert!((ppl - want).abs() < 1e-4 * want, "{ppl} vs {want}");
    assert_eq!(v["convention"], "chunks");
    assert_eq!(v["tokens_evaluated"], c["tokens"]);
    assert_eq!(v["skip"], serde_json::json!([1, 2]));
    let kl = v["divergence"]["mean_kl"].as_f64().unwrap();
    assert!((kl - c["mean_kl"].as_f64().unwrap()).abs() < 1e-4);
}

#[test]
fn eval_against_a_separate_reference_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dense = tmp.path().join("dense");
    std::fs::create_dir(&dense).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture().join("llama").join(f), dense.join(f)).unwrap();
    }
    let v = eval_json(
        tmp.path(),
        &["--skip", "1,2", "--reference", s(&dense), "--batch", "7"],
    );
    let c = &expected()["chunks"];
    let d = &v["divergence"];
    assert!((d["mean_kl"].as_f64().unwrap() - c["mean_kl"].as_f64().unwrap()).abs() < 1e-4);
    let ppl = d["reference_perplexity"].as_f64().unwrap();
    assert!(
        (ppl / c["dense_perplexity"].as_f64().unwrap() - 1.0).abs() < 1e-5,
        "{ppl}"
    );
}

#[test]
fn eval_table_names_the_convention() {
    let tmp = tempfile::tempdir().unwrap();
    let text = fixture().join("eval.txt");
    let out = eval(tmp.path(), &text, &["--ctx", "16", "--stride", "6"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("sliding") && table.contains("perplexity"),
        "{table}"
    );
    let want = expected()["sliding"]["perplexity"].as_f64().unwrap();
    assert!(table.contains(&format!("{want:.2}")[..5]), "{table}");
}

#[test]
fn eval_refuses_text_shorter_than_a_window() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("short.txt");
    std::fs::write(&text, "a few words").unwrap();
    let out = eval(tmp.path(), &text, &["--ctx", "64"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: ") && err.contains("short.txt") && err.contains("needs 64"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn eval_refuses_non_utf8_text_with_the_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("bad.txt");
    std::fs::write(&text, b"hello \xc3\x28 world").unwrap();
    let out = eval(tmp.path(), &text, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("offset 6"), "{}", stderr(&out));
}

#[test]
fn eval_refuses_skipping_every_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let out = eval(tmp.path(), &fixture().join("eval.txt"), &["--skip", "0..4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("0..4"), "{}", stderr(&out));
}

#[test]
fn eval_lists_supported_architectures() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    std::fs::create_dir(&model).unwrap();
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(fixture().join("llama").join(f), model.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(fixture().join("llama/config.json")).unwrap();
    std::fs::write(
        model.join("config.json"),
        cfg.replace("\"llama\"", "\"gpt_neox\""),
    )
    .unwrap();
    let out = depthprune(
        &["eval", s(&model), "--text", s(&fixture().join("eval.txt"))],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("`gpt_neox`")
            && err.contains("llama, mistral, qwen2, qwen3")
            && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn generate_streams_the_greedy_continuation() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture().join("llama");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            s(&model),
            "--prompt",
            "The old lighthouse",
            "--max-new-tokens",
            "6",
        ];
        args.extend_from_slice(extra);
        let out = depthprune(&args, tmp.path());
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("tokens/s"), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let greedy = run(&[]);
    assert!(!greedy.trim().is_empty());
    assert_eq!(greedy, run(&[]), "greedy is deterministic");
    assert_eq!(
        run(&["--temperature", "0.9", "--seed", "5"]),
        run(&["--temperature", "0.9", "--seed", "5"])
    );
    assert!(!run(&["--chat", "--skip", "3"]).is_empty());
}

#[test]
fn eval_intervals_are_seeded_and_hold_the_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture().join("llama");
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut a = vec!["--skip", "1", "--reference", s(&model)];
        a.extend_from_slice(extra);
        eval_json(tmp.path(), &a)
    };
    let v = run(&[]);
    let ci = |v: &serde_json::Value, f: &str| -> [f64; 2] {
        let a = v.pointer(f).unwrap().as_array().unwrap();
        [a[0].as_f64().unwrap(), a[1].as_f64().unwrap()]
    };
    for (fig, int) in [
        ("/perplexity", "/perplexity_ci"),
        ("/divergence/mean_kl", "/divergence/mean_kl_ci"),
        (
            "/divergence/top1_agreement",
            "/divergence/top1_agreement_ci",
        ),
    ] {
        let x = v.pointer(fig).unwrap().as_f64().unwrap();
        let c = ci(&v, int);
        assert!(c[0] <= x && x <= c[1] && c[0] < c[1], "{fig} {x} {c:?}");
    }
    assert_eq!(v["bootstrap"]["resamples"], 1000);
    // Seeded: the same run gives the same intervals; batching does not change the windows.
    let again = run(&["--batch", "3"]);
    let (a, b) = (ci(&v, "/perplexity_ci"), ci(&again, "/perplexity_ci"));
    assert!((a[0] - b[0]).abs() < 1e-9 * a[0] && (a[1] - b[1]).abs() < 1e-9 * a[1]);
    // One window: every resample is that window, so the interval is the point.
    let one = run(&["--max-tokens", "16"]);
    let p = one["perplexity"].as_f64().unwrap();
    let c = ci(&one, "/perplexity_ci");
    assert!(
        (c[0] - p).abs() < 1e-9 * p && (c[1] - p).abs() < 1e-9 * p,
        "{c:?} {p}"
    );
}

#[test]
fn threads_beyond_the_cores_are_capped_and_far_beyond_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let text = fixture().join("eval.txt");
    // More than the cores: one warning line, and the call runs on the cores.
    let many = (cores + 1).to_string();
    let out = eval(
        tmp.path(),
        &text,
        &["--ctx", "16", "--json", "--threads", &many],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let warnings: Vec<_> = (stderr(&out).lines())
        .filter(|l| l.starts_with("warning:") && l.contains("--threads"))
        .map(String::from)
        .collect();
    assert_eq!(warnings.len(), 1, "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["threads"], cores);
    // A count no one means: refused at once with one error line naming the option.
    let out = eval(tmp.path(), &text, &["--ctx", "16", "--threads", "100000"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error:") && err.contains("--threads"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    // The same rule for RAYON_NUM_THREADS.
    let model = fixture().join("llama");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_depthprune"))
        .args(["eval", s(&model), "--text", s(&text), "--ctx", "16"])
        .env("RAYON_NUM_THREADS", "100000")
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("RAYON_NUM_THREADS"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn compute_auto_runs_the_f32_fixture_in_f32_and_bf16_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let auto = eval_json(tmp.path(), &[]);
    let f32 = eval_json(tmp.path(), &["--compute", "f32"]);
    let bf16 = eval_json(tmp.path(), &["--compute", "bf16"]);
    assert_eq!(
        (auto["compute"].as_str(), f32["compute"].as_str()),
        (Some("f32"), Some("f32"))
    );
    assert_eq!(auto["perplexity"], f32["perplexity"]);
    assert_eq!(bf16["compute"], "bf16");
    let (a, b) = (
        f32["perplexity"].as_f64().unwrap(),
        bf16["perplexity"].as_f64().unwrap(),
    );
    assert!(a != b && (a - b).abs() / a < 0.01, "{a} vs {b}");
}
