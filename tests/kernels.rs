//! The kernels of the 16-bit and quantized products (issue 34), forced one by one: each gives
//! the same perplexity and logits as the others (they differ only in the order of their sums),
//! and the JSON outputs and `pruning.json` record the kernel that ran.

mod common;

use common::golden::flat_logits;
use common::{fixture, read_json, run_in, s, stderr};
use depthprune::api::convert::{convert, ConvertRequest, Format};
use depthprune::api::prune::FloatType;
use depthprune::checkpoint::safetensors::Dtype;
use depthprune::checkpoint::synth::write_synthetic;
use depthprune::convert::quantize::QuantMix;
use depthprune::model::kernel::{products_by, with_kernel, Kernel, KernelChoice};
use depthprune::model::{open_checkpoint, with_compute, ComputeChoice, Model};
use depthprune::progress::Silent;
use serde_json::{json, Value};
use std::path::Path;

/// Whether this CPU has the native kernel (AVX512-BF16).
fn has_native() -> bool {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    has("avx512f") && has("avx512_bf16")
}

/// `eval --json` of the llama fixture with `args`, run in `dir`.
fn eval(dir: &Path, args: &[&str]) -> Value {
    let (m, t) = (fixture().join("llama"), fixture().join("eval.txt"));
    let mut a = vec!["eval", s(&m), "--text", s(&t), "--json"];
    a.extend_from_slice(args);
    let out = run_in(&a, dir);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The record for `weight` and `rows` in a JSON output's `kernels`.
fn record<'a>(v: &'a Value, weight: &str, rows: &str) -> &'a Value {
    let all = v["kernels"].as_array().expect("a `kernels` list");
    (all.iter())
        .find(|r| r["weight"] == weight && r["rows"] == rows)
        .unwrap_or_else(|| panic!("no {weight} {rows} record in {all:?}"))
}

fn ppl(v: &Value) -> f64 {
    v["perplexity"].as_f64().unwrap()
}

#[test]
fn every_kernel_gives_the_bf16_perplexity_and_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    // Windows of 16 tokens in batches of 4 are products of many rows; 8 tokens alone, few.
    for (ctx, batch, rows) in [("16", "4", "many"), ("8", "1", "few")] {
        let shape = ["--ctx", ctx, "--batch", batch];
        let f32 = ppl(&eval(
            tmp.path(),
            &[&shape[..], &["--compute", "f32"]].concat(),
        ));
        let mut got = Vec::new();
        for kernel in ["native", "widen", "tiles"] {
            let args = [&shape[..], &["--compute", "bf16", "--kernel", kernel]].concat();
            let v = eval(tmp.path(), &args);
            let r = record(&v, "bf16", rows);
            if kernel == "native" && !has_native() {
                // Not a candidate here: measured among the others.
                assert_eq!(r["by"], "measured", "{r}");
                continue;
            }
            assert_eq!((&r["kernel"], &r["by"]), (&json!(kernel), &json!("forced")));
            let p = ppl(&v);
            assert!(
                (p - f32).abs() / f32 < 0.01,
                "{kernel} {rows}: {p} vs f32 {f32}"
            );
            got.push((kernel, p));
        }
        // The widened kernels multiply the same bf16 weights by the same f32 activations.
        let widened: Vec<f64> = (got.iter())
            .filter(|(k, _)| *k != "native")
            .map(|g| g.1)
            .collect();
        assert!(
            (widened[0] - widened[1]).abs() / widened[0] < 1e-5,
            "{got:?}"
        );
        // Unforced: measured, every candidate's rate recorded.
        let v = eval(tmp.path(), &[&shape[..], &["--compute", "bf16"]].concat());
        let r = record(&v, "bf16", rows);
        assert_eq!(r["by"], "measured", "{r}");
        let rates = r["gflops"].as_object().unwrap();
        assert_eq!(rates.len(), if has_native() { 3 } else { 2 }, "{r}");
        assert!(rates.values().all(|g| g.as_f64().unwrap() > 0.0), "{r}");
        assert!(rates.contains_key(r["kernel"].as_str().unwrap()), "{r}");
    }
}

#[test]
fn a_kernel_named_by_the_environment_is_forced_and_a_bad_one_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, t) = (fixture().join("llama"), fixture().join("eval.txt"));
    let args = ["eval", s(&m), "--text", s(&t), "--ctx", "16"];
    let run = |value: &str| {
        let mut a = args.to_vec();
        a.extend(["--compute", "bf16", "--json"]);
        std::process::Command::new(env!("CARGO_BIN_EXE_depthprune"))
            .args(&a)
            .current_dir(tmp.path())
            .env("DEPTHPRUNE_KERNEL", value)
            .output()
            .unwrap()
    };
    let out = run("tiles");
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record(&v, "bf16", "many")["kernel"], "tiles");
    let out = run("fastest");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: ") && err.contains("`fastest`"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn pruning_json_and_score_json_record_the_kernels() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, t) = (fixture().join("llama"), fixture().join("eval.txt"));
    let calib = ["--calib", s(&t), "--ctx", "16", "--samples", "2"];
    // A bf16 checkpoint, which the strategy's scoring runs in bf16.
    let a = [
        "prune",
        s(&m),
        "--drop",
        "3",
        "--dtype",
        "bf16",
        "--out",
        "bf16",
    ];
    let o = run_in(&a, tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let mut a = vec!["prune", "bf16", "--strategy", "bi", "--remove", "1"];
    a.extend(calib);
    a.extend(["--out", "out"]);
    let o = run_in(&a, tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let p = read_json(&tmp.path().join("out/pruning.json"));
    let r = record(&p["method"], "bf16", "many");
    assert!(
        r["kernel"].is_string() && r["shape"][2].as_u64().unwrap() > 0,
        "{r}"
    );

    let mut a = vec!["score", s(&m), "--metric", "bi", "--json"];
    a.extend(calib);
    a.extend(["--compute", "bf16", "--kernel", "widen"]);
    let o = run_in(&a, tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(record(&v, "bf16", "many")["kernel"], "widen");
}

/// `prune --strategy` scores under the command's own `--compute` and `--kernel`: an f32
/// checkpoint under `--compute bf16` is scored through the 16-bit products.
#[test]
fn prune_strategy_scores_under_the_commands_compute() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, t) = (fixture().join("llama"), fixture().join("eval.txt"));
    let a = [
        "--compute",
        "bf16",
        "--kernel",
        "tiles",
        "prune",
        s(&m),
        "--strategy",
        "bi",
        "--remove",
        "1",
        "--calib",
        s(&t),
        "--ctx",
        "16",
        "--samples",
        "2",
        "--out",
        "out",
    ];
    let o = run_in(&a, tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let p = read_json(&tmp.path().join("out/pruning.json"));
    assert_eq!(record(&p["method"], "bf16", "many")["kernel"], "tiles");
}

/// A qwen3 whose rows k-quant blocks of 256 divide, written as an f32 folder and converted to
/// a Q4_K_M GGUF under `dir`.
fn q4_k_m(dir: &Path) -> std::path::PathBuf {
    let cfg = json!({
        "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"],
        "num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 512,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
        "vocab_size": 300, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "max_position_embeddings": 128, "tie_word_embeddings": true,
        "bos_token_id": 1, "eos_token_id": 2
    });
    let hf = dir.join("hf");
    write_synthetic(&cfg, &hf, Dtype::F32, u64::MAX, 5, &Silent).unwrap();
    let gguf = dir.join("m.Q4_K_M.gguf");
    let req = ConvertRequest {
        to: Format::Gguf,
        out: gguf.clone(),
        dtype: FloatType::F32,
        quant: Some(QuantMix::Q4KM),
        force: false,
    };
    convert(&hf, &req, &Silent).unwrap();
    gguf
}

#[test]
fn every_quantized_kernel_gives_the_dequantized_models_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = q4_k_m(tmp.path());
    let open = |compute| {
        with_compute(compute, || {
            let (cfg, src) = open_checkpoint(&gguf).unwrap();
            Model::from_source(cfg, src, &|_| true).unwrap()
        })
    };
    // The f32 model holds the dequantized weights: the exact products of the blocks.
    let (dense, quant) = (open(ComputeChoice::F32), open(ComputeChoice::Auto));
    let ids: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % 300).collect();
    let want = flat_logits(&dense, &[], &ids);
    // (This is the only test here that forces kernels in this process.)
    for (choice, kernel) in [
        (KernelChoice::Widen, Kernel::Widen),
        (KernelChoice::Tiles, Kernel::Tiles),
    ] {
        let before = products_by(kernel);
        let got = with_kernel(choice, || flat_logits(&quant, &[], &ids));
        assert!(products_by(kernel) > before, "{kernel:?} did not run");
        let diff = (got.iter().zip(&want))
            .map(|(g, w)| (g - w).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-3, "{kernel:?}: logits differ by {diff}");
    }
}

#[test]
fn doctor_prints_the_machine_as_json_and_as_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run_in(&["doctor", "--json", "--peak-ms", "2"], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "version", "cpu", "peak", "threads", "memory", "kernels", "line",
    ] {
        assert!(v.get(key).is_some(), "no `{key}` in {v}");
    }
    for key in ["model", "family", "model_number", "cores", "features"] {
        assert!(v["cpu"].get(key).is_some(), "no `cpu.{key}` in {v}");
    }
    assert!(
        record(&v, "q4_k", "many")["gflops"]
            .as_object()
            .unwrap()
            .len()
            == 2
    );
    let o = run_in(
        &[
            "doctor",
            "--line",
            "--peak-ms",
            "2",
            "--no-kernels",
            "--threads",
            "1",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let line = String::from_utf8(o.stdout).unwrap();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.starts_with("machine: ") && line.contains("threads 1/"),
        "{line}"
    );
}

#[test]
fn every_kernel_gives_the_f16_perplexity() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fixture().join("llama");
    // An f16 checkpoint, which `auto` runs with its weights in f16.
    let o = run_in(
        &[
            "prune",
            s(&m),
            "--drop",
            "3",
            "--dtype",
            "f16",
            "--out",
            "f16",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let t = fixture().join("eval.txt");
    let eval = |args: &[&str]| {
        let mut a = vec!["eval", "f16", "--text", s(&t), "--ctx", "16", "--json"];
        a.extend_from_slice(args);
        let o = run_in(&a, tmp.path());
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    let f32 = ppl(&eval(&["--compute", "f32"]));
    for kernel in ["native", "widen", "tiles"] {
        let v = eval(&["--kernel", kernel]);
        assert_eq!(v["compute"], "bf16", "16-bit weights kept as stored");
        let r = record(&v, "f16", "many");
        if kernel == "native" && !has_native() {
            continue;
        }
        assert_eq!(r["kernel"], kernel);
        let p = ppl(&v);
        // Widened, f16 weights are exact: the f32 run's perplexity to rounding.
        let tol = if kernel == "native" { 0.01 } else { 1e-5 };
        assert!((p - f32).abs() / f32 < tol, "{kernel}: {p} vs f32 {f32}");
    }
}
