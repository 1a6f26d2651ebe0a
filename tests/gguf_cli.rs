//! The binary on GGUF files: `inspect`, `plan` and `prune` in a fresh temporary folder each, text
//! and JSON, and one-line errors that leave no output.

mod common;
mod gguf_support;

use depthprune::checkpoint::gguf::GgufModel;
use gguf_support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_depthprune"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "{args:?} failed: {}", text(&o.stderr));
    text(&o.stdout)
}

/// Runs a command that must fail with exit code 1 and a single `error:` line; returns it.
fn fails(args: &[&str]) -> String {
    let o = run(args);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o.stderr));
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("warning:")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_string()
}

/// `prune SRC --drop DROP --out OUT`.
fn prune<'a>(src: &'a Path, drop: &'a str, out: &'a Path) -> Vec<&'a str> {
    let (src, out) = (src.to_str().unwrap(), out.to_str().unwrap());
    vec!["prune", src, "--drop", drop, "--out", out]
}

fn toy(dir: &Path) -> PathBuf {
    let p = dir.join("toy.gguf");
    toy_model(4).write(&p);
    p
}

#[test]
fn inspect_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let src = toy(dir.path());
    let out = ok(&["inspect", src.to_str().unwrap()]);
    for needle in [
        "GGUF v3, alignment 32",
        "architecture  llama (Toy)",
        "layers        4",
        "IQ2_XXS",
        "Q4_K",
        "tokenizer.ggml.tokens",
        "per-layer arrays (sliced by prune): `llama.attention.head_count_kv`",
    ] {
        assert!(out.contains(needle), "`{needle}` missing from:\n{out}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", src.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(v["block_count"], 4);
    assert_eq!(v["n_tensors"], 3 + 4 * 4);
    assert!(v["tensor_types"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["ggml_type"] == "IQ2_XXS"));
    assert_eq!(v["per_layer_keys"][0], "llama.attention.head_count_kv");
}

#[test]
fn plan_shows_lists_ranges_mapping_and_reductions() {
    let dir = tempfile::tempdir().unwrap();
    let src = toy(dir.path());
    let out = ok(&["plan", src.to_str().unwrap(), "--drop", "1..3"]);
    for needle in [
        "remove        2 layers: 1..3",
        "[1, 2]",
        "keep          2 layers: 0..1, 3..4",
        "renumber      0..1 → 0..1, 3..4 → 1..2",
        "layers        4 → 2 (−50.00 %)",
        "parameters    ",
        "`llama.block_count` = 2",
    ] {
        assert!(out.contains(needle), "`{needle}` missing from:\n{out}");
    }
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "plan",
        src.to_str().unwrap(),
        "--keep",
        "0,3",
        "--json",
    ]))
    .unwrap();
    assert_eq!(v["removal"]["removed"], serde_json::json!([1, 2]));
    assert_eq!(v["tensors_after"], 3 + 2 * 4);
    assert!(v["param_reduction_pct"].as_f64().unwrap() > 0.0);
    assert_eq!(
        dir_names(dir.path()),
        vec!["toy.gguf"],
        "plan writes nothing"
    );
}

#[test]
fn prune_writes_a_model_and_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let src = toy(dir.path());
    let out = dir.path().join("out.gguf");
    let args = prune(&src, "last:1", &out);
    let text = ok(&args);
    assert!(
        text.contains("wrote") && text.contains("out.gguf"),
        "{text}"
    );
    assert_eq!(GgufModel::open(&out).unwrap().block_count().unwrap(), 3);
    let e = fails(&args);
    assert!(e.contains("--force"), "{e}");
    let mut forced = args.clone();
    forced.push("--force");
    ok(&forced);

    let outputs = common::split_gguf(&src, "2KB", &dir.path().join("split.gguf"));
    assert!(outputs.len() > 1);
    let first = &outputs[0];
    assert!(first.ends_with(format!("split-00001-of-{:05}.gguf", outputs.len())));
    assert_eq!(GgufModel::open(first).unwrap().block_count().unwrap(), 3);
}

#[test]
fn bad_files_give_one_line_errors_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, layout) = toy_model(2).build();
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, &bytes[..layout.infos_end as usize - 3]).unwrap();
    let out = dir.path().join("out.gguf");
    let e = fails(&prune(&bad, "0", &out));
    assert!(e.contains("bad.gguf") && e.contains("truncated"), "{e}");
    let e = fails(&["inspect", bad.to_str().unwrap()]);
    assert!(e.contains("truncated"), "{e}");

    let mut b = toy_model(2);
    b.kvs.retain(|(k, _, _)| k != "llama.block_count");
    let nobc = dir.path().join("nobc.gguf");
    b.write(&nobc);
    let e = fails(&prune(&nobc, "0", &out));
    assert!(e.contains("`llama.block_count` is missing"), "{e}");
    let e = fails(&["plan", nobc.to_str().unwrap(), "--drop", "5"]);
    assert!(e.contains("`llama.block_count` is missing"), "{e}");

    let good = toy(dir.path());
    let e = fails(&prune(&good, "0..4", &out));
    assert!(e.contains("removes all 4 layers"), "{e}");
    assert_eq!(
        dir_names(dir.path()),
        vec!["bad.gguf", "nobc.gguf", "toy.gguf"]
    );
}
