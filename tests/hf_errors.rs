//! Bad input to `inspect`, `plan` and `prune` on HF folders: each case gives a one-line error
//! naming the file and the problem, a non-zero exit, no panic, and no output.

mod common;

use common::*;
use depthprune::checkpoint::safetensors::Dtype;
use std::path::Path;

struct Case {
    name: &'static str,
    /// Breaks a freshly written checkpoint.
    mutate: fn(&Path),
    /// Sharded source?
    sharded: bool,
    args: &'static [&'static str],
    want: &'static [&'static str],
}

fn first_shard(dir: &Path) -> std::path::PathBuf {
    safetensors_files(dir).remove(0)
}

fn set_config(dir: &Path, key: &str, value: serde_json::Value) {
    let p = dir.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    c[key] = value;
    std::fs::write(&p, serde_json::to_string(&c).unwrap()).unwrap();
}

const CASES: &[Case] = &[
    Case {
        name: "truncated header",
        mutate: |d| {
            let p = first_shard(d);
            let b = std::fs::read(&p).unwrap();
            std::fs::write(&p, &b[..20]).unwrap();
        },
        sharded: false,
        args: &["--drop", "1"],
        want: &["model.safetensors", "truncated"],
    },
    Case {
        name: "truncated data",
        mutate: |d| {
            let p = first_shard(d);
            let b = std::fs::read(&p).unwrap();
            std::fs::write(&p, &b[..b.len() - 3]).unwrap();
        },
        sharded: false,
        args: &["--drop", "1"],
        want: &["model.safetensors", "truncated"],
    },
    Case {
        name: "corrupt header json",
        mutate: |d| {
            let p = first_shard(d);
            let mut b = std::fs::read(&p).unwrap();
            b[8] = b'[';
            std::fs::write(&p, &b).unwrap();
        },
        sharded: false,
        args: &["--drop", "1"],
        want: &["model.safetensors", "header"],
    },
    Case {
        name: "missing shard",
        mutate: |d| {
            let second = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("model-00002-of-")
                })
                .unwrap();
            std::fs::remove_file(second).unwrap()
        },
        sharded: true,
        args: &["--drop", "1"],
        want: &[
            "model.safetensors.index.json",
            "names shard `model-00002-of-",
            "missing from the folder",
        ],
    },
    Case {
        name: "config layer count contradicts tensors",
        mutate: |d| set_config(d, "num_hidden_layers", serde_json::json!(8)),
        sharded: false,
        args: &["--drop", "1"],
        want: &["config.json", "`num_hidden_layers` is 8", "6 layers"],
    },
    Case {
        name: "config hidden size contradicts tensors",
        mutate: |d| set_config(d, "vocab_size", serde_json::json!(99)),
        sharded: false,
        args: &["--drop", "1"],
        want: &["config.json", "vocab_size 99"],
    },
    Case {
        name: "config missing field",
        mutate: |d| set_config(d, "hidden_size", serde_json::Value::Null),
        sharded: false,
        args: &["--drop", "1"],
        want: &["config.json", "hidden_size"],
    },
    Case {
        name: "layer out of range",
        mutate: |_| {},
        sharded: false,
        args: &["--drop", "6"],
        want: &["layer 6 is out of range", "6 layers"],
    },
    Case {
        name: "removing every layer",
        mutate: |_| {},
        sharded: false,
        args: &["--drop", "0..6"],
        want: &["removes all 6 layers"],
    },
    Case {
        name: "spec naming nothing",
        mutate: |_| {},
        sharded: false,
        args: &["--drop", "3..3"],
        want: &["names no layer"],
    },
    Case {
        name: "unsupported dtype",
        mutate: |d| {
            let p = first_shard(d);
            let b = std::fs::read(&p).unwrap();
            let s = String::from_utf8_lossy(&b[..200]).replacen("\"F32\"", "\"F9X\"", 1);
            let mut out = s.into_bytes();
            out.extend_from_slice(&b[200..]);
            std::fs::write(&p, out).unwrap();
        },
        sharded: false,
        args: &["--drop", "1"],
        want: &["model.safetensors", "unsupported dtype `F9X`"],
    },
];

#[test]
fn every_bad_input_fails_cleanly() {
    for case in CASES {
        let shard = if case.sharded { 30_000 } else { 5_000_000_000 };
        let (_tmp, src, out) = tiny_checkpoint("llama", Dtype::F32, shard);
        assert_eq!(
            src.join("model.safetensors.index.json").exists(),
            case.sharded
        );
        (case.mutate)(&src);
        let o = prune(&src, case.args, &out);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{}: {err}", case.name);
        assert!(!err.contains("panicked"), "{}: {err}", case.name);
        assert_eq!(
            err.trim_end()
                .lines()
                .filter(|l| l.starts_with("error:"))
                .count(),
            1,
            "{}: {err}",
            case.name
        );
        for w in case.want {
            assert!(err.contains(w), "{}: expected `{w}` in `{err}`", case.name);
        }
        assert_no_output(&out);
    }
}

#[test]
fn existing_output_is_refused_without_force() {
    let (_tmp, src, out) = tiny_checkpoint("llama", Dtype::F32, 5_000_000_000);
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("precious"), b"x").unwrap();
    let o = prune(&src, &["--drop", "1"], &out);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--force"));
    assert!(out.join("precious").exists());
    let o = prune(&src, &["--drop", "1", "--force"], &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.join("precious").exists());
}

#[test]
fn usage_errors_exit_2() {
    let o = run(&["prune", "x", "--out", "y"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["plan", "x", "--drop", "1", "--keep", "2"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn missing_model_is_named() {
    let o = run(&["plan", "/nonexistent/model", "--drop", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nonexistent/model"), "{}", stderr(&o));
}

#[test]
fn nonfinite_weights_warn_with_a_count() {
    let (_tmp, src, out) = tiny_checkpoint("llama", Dtype::F32, 5_000_000_000);
    let shard = src.join("model.safetensors");
    let st = depthprune::checkpoint::safetensors::SafetensorsFile::open(&shard).unwrap();
    let t = st.tensor("model.layers.0.mlp.up_proj.weight").unwrap();
    let mut bytes = std::fs::read(&shard).unwrap();
    for (k, v) in [f32::NAN, f32::INFINITY].iter().enumerate() {
        let at = t.file_offset as usize + 4 * k;
        bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&shard, &bytes).unwrap();
    let o = prune(&src, &["--drop", "3"], &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: the source holds 2 NaN/Inf values in 1 tensors"),
        "{}",
        stderr(&o)
    );
}

/// The engine's reader (eval, score, heal, generate) checks the config against the tensors too
/// (issue 13): a config that names fewer layers than the tensors hold once ran silently with
/// the last layer dropped.
#[test]
fn engine_commands_refuse_a_layer_count_that_contradicts_the_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    make_checkpoint(&dir, &tiny_config("llama"), Dtype::F32, 0);
    let text = tmp.path().join("t.txt");
    std::fs::write(&text, "a b c d e f g h i j k l m n o p ".repeat(8)).unwrap();
    for n in [5, 7] {
        set_config(&dir, "num_hidden_layers", n.into());
        for args in [
            vec![
                "eval",
                dir.to_str().unwrap(),
                "--text",
                text.to_str().unwrap(),
                "--ctx",
                "8",
            ],
            vec![
                "generate",
                dir.to_str().unwrap(),
                "--prompt",
                "a",
                "--max-new-tokens",
                "1",
            ],
        ] {
            let o = run(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
            let line = one_error_line(&err);
            assert!(
                line.contains("config.json")
                    && line.contains(&format!(
                        "`num_hidden_layers` is {n} but the tensors hold 6 layers"
                    )),
                "{err}"
            );
        }
    }
}
