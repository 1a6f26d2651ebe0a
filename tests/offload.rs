//! `--offload` on every command that runs the model (issue 24): with one layer resident, read
//! from the checkpoint when a forward needs it and the batches passing layer by layer, each
//! command gives what it gives with every layer resident. One test per path, on the golden llama
//! fixture, each in a fresh temporary folder.

mod common;

use common::{fixture, golden_llama, ok, run_healing, run_in as depthprune, s, stdout};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `args` run in `dir` with and without `--offload`, each of which must succeed: both stdouts.
fn both_text(dir: &Path, args: &[&str]) -> (String, String) {
    let run = |extra: &[&str]| -> String {
        let mut a = args.to_vec();
        a.extend_from_slice(extra);
        let out = depthprune(&a, dir);
        ok(&out);
        stdout(&out)
    };
    (run(&[]), run(&["--offload"]))
}

/// [`both_text`], the stdouts read as JSON.
fn both(dir: &Path, args: &[&str]) -> (Value, Value) {
    let (a, b) = both_text(dir, args);
    (
        serde_json::from_str(&a).unwrap(),
        serde_json::from_str(&b).unwrap(),
    )
}

fn close(a: &Value, b: &Value, what: &str) {
    let (x, y) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    assert!(
        (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
        "{what}: resident {x}, offloaded {y}"
    );
}

/// The fixture's evaluation text, repeated: long enough for several windows.
fn text(dir: &Path) -> PathBuf {
    let base = std::fs::read_to_string(fixture().join("eval.txt")).unwrap();
    let p = dir.join("text.txt");
    std::fs::write(&p, base.repeat(8)).unwrap();
    p
}

#[test]
fn eval_perplexity_and_divergence_match_when_offloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, text) = (golden_llama(), text(tmp.path()));
    // Batches of one window, so the offloaded pass runs every layer over several batches;
    // with a reference (itself, two layers skipped) and without.
    for extra in [&[][..], &["--skip", "1..3", "--reference", s(&model)][..]] {
        let mut args = vec![
            "eval",
            s(&model),
            "--text",
            s(&text),
            "--ctx",
            "16",
            "--batch",
            "1",
            "--json",
        ];
        args.extend_from_slice(extra);
        let (a, b) = both(tmp.path(), &args);
        assert!(a["windows"].as_u64().unwrap() >= 3);
        assert_eq!(a["tokens_evaluated"], b["tokens_evaluated"]);
        close(&a["perplexity"], &b["perplexity"], "perplexity");
        if !extra.is_empty() {
            close(
                &a["divergence"]["mean_kl"],
                &b["divergence"]["mean_kl"],
                "kl",
            );
            close(
                &a["divergence"]["top1_agreement"],
                &b["divergence"]["top1_agreement"],
                "top-1",
            );
        }
    }
}

#[test]
fn eval_tasks_match_when_offloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, tasks) = (golden_llama(), fixture().join("tasks.jsonl"));
    let args = [
        "eval",
        s(&model),
        "--tasks",
        s(&tasks),
        "--batch",
        "2",
        "--per-item",
        "--json",
    ];
    let (a, b) = both(tmp.path(), &args);
    close(&a["acc"], &b["acc"], "acc");
    close(&a["acc_norm"], &b["acc_norm"], "acc_norm");
    let items = |v: &Value| v["items"].as_array().unwrap().clone();
    assert!(items(&a).len() >= 2);
    for (x, y) in items(&a).iter().zip(items(&b)) {
        for (p, q) in x["loglikelihoods"]
            .as_array()
            .unwrap()
            .iter()
            .zip(y["loglikelihoods"].as_array().unwrap())
        {
            close(p, q, "log-likelihood");
        }
    }
}

#[test]
fn generate_matches_when_offloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let model = golden_llama();
    let args = [
        "generate",
        s(&model),
        "--prompt",
        "The cat",
        "--max-new-tokens",
        "6",
        "--ignore-eos",
    ];
    let (a, b) = both_text(tmp.path(), &args);
    assert!(!a.trim().is_empty());
    assert_eq!(a, b);
}

#[test]
fn prune_heal_and_heal_write_the_same_weights_when_offloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let dense = golden_llama();
    let kd = common::guarded_flags(&["--heal", "kd", "--steps", "2", "--rank", "0"]);
    for (method, args) in [("lstsq", None), ("kd", Some(kd))] {
        let mut outs = Vec::new();
        for offload in [false, true] {
            let out = format!("{method}-{offload}");
            let o = match &args {
                None => {
                    let mut a = vec!["prune", s(&dense), "--drop", "2..3", "--heal", method];
                    a.extend(["--out", &out]);
                    if offload {
                        a.push("--offload");
                    }
                    run_healing(&a, tmp.path())
                }
                Some(flags) => {
                    let mut a = flags.clone();
                    if offload {
                        a.push("--offload");
                    }
                    common::prune_golden(tmp.path(), &[&a[..], &["--out", &out]].concat())
                }
            };
            ok(&o);
            outs.push(std::fs::read(tmp.path().join(out).join("model.safetensors")).unwrap());
        }
        assert!(
            outs[0] == outs[1],
            "{method}: offloaded healing wrote other weights"
        );
    }
    // `heal` itself, on a plain prune.
    ok(&depthprune(
        &["prune", s(&dense), "--drop", "2..3", "--out", "plain"],
        tmp.path(),
    ));
    let mut outs = Vec::new();
    for (out, offload) in [("h0", false), ("h1", true)] {
        let mut args = vec![
            "heal",
            "plain",
            "--from",
            s(&dense),
            "--method",
            "lstsq",
            "--out",
            out,
        ];
        if offload {
            args.push("--offload");
        }
        ok(&run_healing(&args, tmp.path()));
        outs.push(std::fs::read(tmp.path().join(out).join("model.safetensors")).unwrap());
    }
    assert!(
        outs[0] == outs[1],
        "heal: offloaded healing wrote other weights"
    );
}

#[test]
fn sweep_matches_when_offloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, text) = (golden_llama(), text(tmp.path()));
    let args = [
        "sweep",
        s(&model),
        "--calib",
        s(&text),
        "--ctx",
        "16",
        "--calib-offset",
        "64",
        "--eval",
        s(&text),
        "--eval-samples",
        "2",
        "--strategies",
        "bi,ppl",
        "--remove",
        "1,2",
        "--protect",
        "first:1",
        "--samples",
        "2",
        "--heal",
        "lstsq",
        "--heal-samples",
        "512",
        "--json",
    ];
    let run = |out: &str, extra: &[&str]| -> Value {
        let a = [&args[..], &["--out", out], extra].concat();
        let o = depthprune(&a, tmp.path());
        ok(&o);
        serde_json::from_str(&stdout(&o)).unwrap()
    };
    let (a, b) = (run("resident", &[]), run("offloaded", &["--offload"]));
    let rows = |v: &Value| v["rows"].as_array().cloned().unwrap_or_default();
    assert!(!rows(&a).is_empty(), "{a}");
    assert_eq!(rows(&a).len(), rows(&b).len());
    for (x, y) in rows(&a).iter().zip(rows(&b)) {
        for (k, v) in x.as_object().unwrap() {
            if v.is_f64() && k != "seconds" {
                close(v, &y[k], k);
            } else if !v.is_f64() {
                assert_eq!(v, &y[k], "{k}");
            }
        }
    }
}
