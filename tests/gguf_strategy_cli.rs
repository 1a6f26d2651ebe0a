//! `--strategy` on GGUF files (issue 13): `plan` and `prune` choose the layers of a `.gguf` the
//! way they do for an HF folder, with and without `--heal lstsq`, and the layers removed are the
//! ones `score --json` on the same file ranks least important.

use depthprune::checkpoint::atomic::Overwrite;
use depthprune::checkpoint::convert_gguf::hf_to_gguf;
use depthprune::checkpoint::gguf::{GgmlType, GgufModel};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/".to_owned() + name)
}

fn depthprune(args: &[&str], cwd: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_depthprune"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
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

/// A 4-layer F32 GGUF of the golden qwen2 weights with the golden llama fixture's byte-level
/// BPE tokenizer, so the GGUF carries a tokenizer for the calibration text.
fn dense_gguf(dir: &Path) {
    let hf = dir.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(golden("qwen2").join(f), hf.join(f)).unwrap();
    }
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(golden("llama").join(f), hf.join(f)).unwrap();
    }
    hf_to_gguf(
        &hf,
        &dir.join("dense.gguf"),
        GgmlType::F32,
        Overwrite::Refuse,
    )
    .unwrap();
}

/// The calibration flags every run here shares.
fn calib() -> Vec<String> {
    let c = golden("eval.txt");
    [
        "--calib",
        c.to_str().unwrap(),
        "--ctx",
        "32",
        "--samples",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn with_calib<'a>(args: &[&'a str], c: &'a [String]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(c.iter().map(String::as_str));
    all
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
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    dense_gguf(dir);
    let c = calib();
    let score: Value = serde_json::from_str(&ok(
        &with_calib(&["score", "dense.gguf", "--metric", "bi", "--json"], &c),
        dir,
    ))
    .unwrap();
    let want = least_important(&score, 2);

    let plan: Value = serde_json::from_str(&ok(
        &with_calib(
            &[
                "plan",
                "dense.gguf",
                "--strategy",
                "bi",
                "--remove",
                "2",
                "--json",
            ],
            &c,
        ),
        dir,
    ))
    .unwrap();
    assert_eq!(plan["removal"]["removed"], serde_json::json!(want));
    assert_eq!(plan["method"]["kind"], "strategy");

    let text = ok(
        &with_calib(
            &[
                "prune",
                "dense.gguf",
                "--strategy",
                "bi",
                "--remove",
                "2",
                "--out",
                "bi.gguf",
            ],
            &c,
        ),
        dir,
    );
    assert!(text.contains("wrote"), "{text}");
    assert_eq!(removed_layers(&dir.join("bi.gguf")), want);
    let m = GgufModel::open(&dir.join("bi.gguf")).unwrap();
    let how = m.metadata().get_str("depthprune.how_chosen").unwrap();
    assert!(how.contains("--strategy bi"), "{how}");
    assert_eq!(m.block_count().unwrap(), 2);
}

#[test]
fn contiguous_strategy_on_gguf_removes_the_block_score_finds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    dense_gguf(dir);
    let c = calib();
    let score: Value = serde_json::from_str(&ok(
        &with_calib(
            &["score", "dense.gguf", "--metric", "angular", "--json"],
            &c,
        ),
        dir,
    ))
    .unwrap();
    // `angular[n-1][l]`: the distance across the block of n layers starting at l.
    let d: Vec<f64> = score["angular"][1]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let start = (0..=2).min_by(|&a, &b| d[a].total_cmp(&d[b])).unwrap() as u64;

    ok(
        &with_calib(
            &[
                "prune",
                "dense.gguf",
                "--strategy",
                "angular",
                "--contiguous",
                "--remove",
                "2",
                "--out",
                "block.gguf",
            ],
            &c,
        ),
        dir,
    );
    assert_eq!(
        removed_layers(&dir.join("block.gguf")),
        vec![start, start + 1]
    );
}

#[test]
fn strategy_with_heal_on_gguf_heals_the_chosen_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    dense_gguf(dir);
    let c = calib();
    let score: Value = serde_json::from_str(&ok(
        &with_calib(&["score", "dense.gguf", "--metric", "bi", "--json"], &c),
        dir,
    ))
    .unwrap();
    let want = least_important(&score, 1);
    ok(
        &with_calib(
            &[
                "prune",
                "dense.gguf",
                "--strategy",
                "bi",
                "--remove",
                "1",
                "--heal",
                "lstsq",
                "--heal-samples",
                "256",
                "--out",
                "healed.gguf",
            ],
            &c,
        ),
        dir,
    );
    let out = dir.join("healed.gguf");
    assert_eq!(removed_layers(&out), want);
    let m = GgufModel::open(&out).unwrap();
    assert!(m.metadata().get("depthprune.healing.calib").is_some());
    assert!(m.metadata().get_str("depthprune.how_chosen").is_some());
}

#[test]
fn strategy_on_gguf_without_calibration_is_one_error_and_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    dense_gguf(dir);
    for args in [
        &[
            "prune",
            "dense.gguf",
            "--strategy",
            "bi",
            "--remove",
            "1",
            "--out",
            "out.gguf",
        ][..],
        &[
            "prune",
            "dense.gguf",
            "--strategy",
            "nonsense",
            "--remove",
            "1",
            "--out",
            "out.gguf",
        ][..],
        &[
            "prune",
            "dense.gguf",
            "--strategy",
            "bi",
            "--out",
            "out.gguf",
        ][..],
    ] {
        let o = depthprune(args, dir);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!dir.join("out.gguf").exists());
    }
}
