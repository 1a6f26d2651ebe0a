//! `--strategy` on GGUF files (issue 13): `plan` and `prune` choose the layers of a `.gguf` the
//! way they do for an HF folder, with and without `--heal lstsq`, and the layers removed are the
//! ones `score --json` on the same file ranks least important.

mod common;

use common::{run_in as depthprune, s};
use depthprune::checkpoint::gguf::GgufModel;
use serde_json::Value;
use std::path::Path;

/// A fresh temporary folder holding `dense.gguf` ([`common::dense_qwen2_gguf`]).
fn with_dense_gguf() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    common::dense_qwen2_gguf(tmp.path());
    tmp
}

fn ok(args: &[&str], cwd: &Path) -> String {
    let o = depthprune(args, cwd);
    assert!(
        o.status.success(),
        "{args:?}: exit {:?}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `args` in `dir` with the calibration flags every run here shares; returns stdout.
fn calibrated(args: &[&str], dir: &Path) -> String {
    let c = common::golden_text();
    let mut all = args.to_vec();
    all.extend(["--calib", s(&c), "--ctx", "32", "--samples", "4"]);
    ok(&all, dir)
}

/// `score dense.gguf --metric METRIC --json`, parsed.
fn score(metric: &str, dir: &Path) -> Value {
    let args = ["score", "dense.gguf", "--metric", metric, "--json"];
    serde_json::from_str(&calibrated(&args, dir)).unwrap()
}

/// `COMMAND dense.gguf --strategy STRATEGY --remove N` and `more`, calibrated; returns stdout.
fn by_strategy(command: &str, strategy: &str, n: &str, more: &[&str], dir: &Path) -> String {
    let mut all = vec![command, "dense.gguf", "--strategy", strategy, "--remove", n];
    all.extend_from_slice(more);
    calibrated(&all, dir)
}

/// `depthprune.removed_layers` of a pruned GGUF.
fn removed_layers(path: &Path) -> Vec<u64> {
    let m = GgufModel::open(path).unwrap();
    let a = m
        .metadata()
        .get("depthprune.removed_layers")
        .and_then(|v| v.as_array())
        .expect("depthprune.removed_layers")
        .clone();
    (0..a.len())
        .map(|i| a.get(i).unwrap().as_u64().unwrap())
        .collect()
}

/// The `k` layers `score --json` ranks least important (rank 1 is removed first), sorted.
fn least_important(score: &Value, k: u64) -> Vec<u64> {
    let mut v: Vec<u64> = score["rank"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, r)| r.as_u64().unwrap() <= k)
        .map(|(l, _)| l as u64)
        .collect();
    v.sort();
    v
}

#[test]
fn strategy_on_gguf_removes_what_score_ranks_lowest() {
    let tmp = with_dense_gguf();
    let dir = tmp.path();
    let want = least_important(&score("bi", dir), 2);

    let plan: Value =
        serde_json::from_str(&by_strategy("plan", "bi", "2", &["--json"], dir)).unwrap();
    assert_eq!(plan["removal"]["removed"], serde_json::json!(want));
    assert_eq!(plan["method"]["kind"], "strategy");

    let text = by_strategy("prune", "bi", "2", &["--out", "bi.gguf"], dir);
    assert!(text.contains("wrote"), "{text}");
    assert_eq!(removed_layers(&dir.join("bi.gguf")), want);
    let m = GgufModel::open(&dir.join("bi.gguf")).unwrap();
    let how = m.metadata().get_str("depthprune.how_chosen").unwrap();
    assert!(how.contains("--strategy bi"), "{how}");
    assert_eq!(m.block_count().unwrap(), 2);
}

#[test]
fn contiguous_strategy_on_gguf_removes_the_block_score_finds() {
    let tmp = with_dense_gguf();
    let dir = tmp.path();
    let score = score("angular", dir);
    // `angular[n-1][l]`: the distance across the block of n layers starting at l.
    let d = common::floats(&score["angular"][1]);
    let start = (0..=2).min_by(|&a, &b| d[a].total_cmp(&d[b])).unwrap() as u64;

    let more = ["--contiguous", "--out", "block.gguf"];
    by_strategy("prune", "angular", "2", &more, dir);
    assert_eq!(
        removed_layers(&dir.join("block.gguf")),
        vec![start, start + 1]
    );
}

#[test]
fn strategy_with_heal_on_gguf_heals_the_chosen_layers() {
    let tmp = with_dense_gguf();
    let dir = tmp.path();
    let want = least_important(&score("bi", dir), 1);
    let more = [
        "--heal",
        "lstsq",
        "--heal-samples",
        "256",
        "--out",
        "healed.gguf",
    ];
    by_strategy("prune", "bi", "1", &more, dir);
    let out = dir.join("healed.gguf");
    assert_eq!(removed_layers(&out), want);
    let m = GgufModel::open(&out).unwrap();
    assert!(m.metadata().get("depthprune.healing.calib").is_some());
    assert!(m.metadata().get_str("depthprune.how_chosen").is_some());
}

#[test]
fn strategy_on_gguf_without_calibration_is_one_error_and_no_output() {
    let tmp = with_dense_gguf();
    let dir = tmp.path();
    for strategy in [
        &["--strategy", "bi", "--remove", "1"][..],
        &["--strategy", "nonsense", "--remove", "1"][..],
        &["--strategy", "bi"][..],
    ] {
        let mut args = vec!["prune", "dense.gguf"];
        args.extend_from_slice(strategy);
        args.extend(["--out", "out.gguf"]);
        let o = depthprune(&args, dir);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!dir.join("out.gguf").exists());
    }
}
