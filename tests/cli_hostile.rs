//! Hostile inputs that are not malformed files (issue 25): a model whose numbers are degenerate
//! (every command that measures must refuse a result that is not finite, write nothing, and say
//! what and where), `heal --from` a model that cannot be the origin, and a bootstrap asked for
//! 2^64 − 1 resamples. Each must exit 1 with one `error:` line, no panic and no output.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// Exit 1, one `error:` line containing every one of `want`, no panic.
fn refused(o: &std::process::Output, want: &[&str]) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    for w in want {
        assert!(lines[0].contains(w), "`{w}` not in {err}");
    }
    err
}

/// The golden llama with its final norm's weights set to NaN: every logit is NaN.
fn nan_model(dir: &Path) -> PathBuf {
    let m = dir.join("nan-llama");
    std::fs::create_dir(&m).unwrap();
    for e in std::fs::read_dir(golden_llama()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), m.join(e.file_name())).unwrap();
    }
    let p = m.join("model.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let off = &header["model.norm.weight"]["data_offsets"];
    let (start, end) = (
        off[0].as_u64().unwrap() as usize,
        off[1].as_u64().unwrap() as usize,
    );
    for c in b[8 + n + start..8 + n + end].chunks_exact_mut(4) {
        c.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(&p, b).unwrap();
    m
}

#[test]
fn a_result_that_is_not_finite_is_an_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m = nan_model(dir.path());
    let (ms, text) = (s(&m), golden_text());
    let t = s(&text);
    let long = dir.path().join("long.txt");
    std::fs::write(&long, std::fs::read_to_string(&text).unwrap().repeat(40)).unwrap();
    let l = s(&long);

    let o = run(&["eval", ms, "--text", t, "--ctx", "16"]);
    refused(
        &o,
        &[
            "the evaluation on",
            "nan-llama",
            "is not finite",
            "`mean_nll` is NaN",
        ],
    );
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    let o = run(&["eval", ms, "--tasks", s(&fixture().join("tasks.jsonl"))]);
    refused(&o, &["multiple-choice evaluation", "is not finite"]);

    let scores = dir.path().join("scores.json");
    let o = run(&[
        "score",
        ms,
        "--metric",
        "ppl",
        "--calib",
        t,
        "--ctx",
        "16",
        "--samples",
        "2",
        "--out",
        s(&scores),
    ]);
    refused(&o, &["the scoring on", "is not finite", "`importance[0]`"]);
    assert_no_output(&scores);

    let out = dir.path().join("sweep");
    let o = run(&[
        "sweep",
        ms,
        "--strategies",
        "last",
        "--remove",
        "0..2",
        "--eval",
        l,
        "--eval-ctx",
        "16",
        "--eval-samples",
        "2",
        "--ci-resamples",
        "10",
        "--out",
        s(&out),
    ]);
    refused(&o, &["the sweep on", "is not finite"]);
    assert_no_output(&out);
}

/// The `mean_nll` a check that reads the first field would name: the message must name the
/// field that is not finite, not merely say something is wrong.
#[test]
fn the_check_names_the_first_field_that_is_not_finite() {
    let dir = tempfile::tempdir().unwrap();
    let m = nan_model(dir.path());
    let o = run(&[
        "eval",
        s(&m),
        "--text",
        s(&golden_text()),
        "--ctx",
        "16",
        "--json",
    ]);
    let err = refused(&o, &["is NaN"]);
    assert!(err.contains('`'), "{err}");
}

#[test]
fn heal_from_a_model_that_cannot_be_the_origin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = golden_llama();
    let pruned = dir.path().join("pruned");
    ok(&run(&[
        "prune",
        s(&model),
        "--drop",
        "1",
        "--out",
        s(&pruned),
    ]));
    let long = dir.path().join("long.txt");
    std::fs::write(
        &long,
        std::fs::read_to_string(golden_text()).unwrap().repeat(40),
    )
    .unwrap();
    let heal = |dense: &Path, out: &Path| {
        run(&[
            "heal",
            s(&pruned),
            "--from",
            s(dense),
            "--calib",
            s(&long),
            "--ctx",
            "16",
            "--heal-samples",
            "64",
            "--holdout",
            "0",
            "--alpha",
            "1e-3",
            "--method",
            "lstsq",
            "--out",
            s(out),
        ])
    };

    // Another architecture, with the same layer count.
    let mut cfg = tiny_config("qwen2");
    cfg["num_hidden_layers"] = 4.into();
    let other = dir.path().join("qwen2");
    make_checkpoint(
        &other,
        &cfg,
        depthprune::checkpoint::safetensors::Dtype::F32,
        1 << 30,
    );
    let out = dir.path().join("healed-qwen2");
    refused(
        &heal(&other, &out),
        &["cannot have been pruned from", "the dense one is `qwen2`"],
    );
    assert_no_output(&out);

    // The same architecture and layer count, another shape.
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    cfg["intermediate_size"] = 48.into();
    let other = dir.path().join("wider");
    make_checkpoint(
        &other,
        &cfg,
        depthprune::checkpoint::safetensors::Dtype::F32,
        1 << 30,
    );
    let out = dir.path().join("healed-wider");
    refused(
        &heal(&other, &out),
        &["cannot have been pruned from", "in the dense model"],
    );
    assert_no_output(&out);

    // The model it came from heals.
    ok(&heal(&model, &dir.path().join("healed")));
}

#[test]
fn a_bootstrap_of_2_to_the_64_resamples_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let t = golden_text();
    let o = run(&[
        "sweep",
        s(&golden_llama()),
        "--strategies",
        "last",
        "--remove",
        "0..2",
        "--eval",
        s(&t),
        "--eval-ctx",
        "16",
        "--eval-samples",
        "2",
        "--ci-resamples",
        "18446744073709551615",
        "--out",
        s(&out),
    ]);
    refused(&o, &["--ci-resamples", "18446744073709551615"]);
    assert_no_output(&out);
}
