//! Helpers shared by the integration tests: tiny random checkpoints and running the binary.
#![allow(dead_code)]

pub mod golden;

use depthprune::checkpoint::safetensors::{read_range, Dtype, SafetensorsFile};
use depthprune::checkpoint::synth::write_synthetic;
use depthprune::progress::Silent;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

/// The WikiText-2 test file for the tests whose references were made on it: `DEPTHPRUNE_WIKITEXT`
/// when set (it must then exist), else `../shared/data/wikitext-2-raw-test.txt` beside the clone.
/// A fresh clone alone in its folder has neither (issue 13): then `test` prints one SKIPPED line
/// naming the missing file and gets `None`; the project does not ship WikiText-2 itself.
pub fn wikitext(test: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DEPTHPRUNE_WIKITEXT") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "DEPTHPRUNE_WIKITEXT names `{}`, which is not a file",
            p.display()
        );
        return Some(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/wikitext-2-raw-test.txt");
    if p.is_file() {
        return Some(p);
    }
    // Written to the stderr handle, not with `eprintln!`, which the test harness captures and
    // shows only for failing tests: a skip must be seen.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs WikiText-2 (`{}` is missing; set DEPTHPRUNE_WIKITEXT)",
        p.display()
    );
    None
}

/// A tiny config of each architecture the tool must handle.
pub fn tiny_config(arch: &str) -> Value {
    let mut c = json!({
        "model_type": arch,
        "num_hidden_layers": 6,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 64,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": false,
        "torch_dtype": "float32"
    });
    let o = c.as_object_mut().unwrap();
    match arch {
        "llama" => {
            o.insert("architectures".into(), json!(["LlamaForCausalLM"]));
            o.insert("tie_word_embeddings".into(), json!(true));
        }
        "mistral" => {
            o.insert("architectures".into(), json!(["MistralForCausalLM"]));
            o.insert("sliding_window".into(), json!(4096));
        }
        "qwen2" => {
            o.insert("architectures".into(), json!(["Qwen2ForCausalLM"]));
            o.insert("use_sliding_window".into(), json!(false));
            o.insert("max_window_layers".into(), json!(4));
        }
        "qwen3" => {
            o.insert("architectures".into(), json!(["Qwen3ForCausalLM"]));
            o.insert("head_dim".into(), json!(16));
            o.insert("tie_word_embeddings".into(), json!(true));
            o.insert(
                "layer_types".into(),
                json!([
                    "full_attention",
                    "full_attention",
                    "full_attention",
                    "full_attention",
                    "sliding_attention",
                    "sliding_attention"
                ]),
            );
            o.insert("max_window_layers".into(), json!(4));
        }
        "qwen3_moe" => {
            o.insert("architectures".into(), json!(["Qwen3MoeForCausalLM"]));
            o.insert("head_dim".into(), json!(8));
            o.insert("num_experts".into(), json!(4));
            o.insert("num_experts_per_tok".into(), json!(2));
            o.insert("moe_intermediate_size".into(), json!(16));
            o.insert("decoder_sparse_step".into(), json!(1));
            o.insert("mlp_only_layers".into(), json!([0, 5]));
        }
        "qwen2_moe" => {
            o.insert("architectures".into(), json!(["Qwen2MoeForCausalLM"]));
            o.insert("num_experts".into(), json!(4));
            o.insert("num_experts_per_tok".into(), json!(2));
            o.insert("moe_intermediate_size".into(), json!(16));
            o.insert("shared_expert_intermediate_size".into(), json!(24));
            o.insert("decoder_sparse_step".into(), json!(2));
            o.insert("mlp_only_layers".into(), json!([]));
        }
        "mixtral" => {
            o.insert("architectures".into(), json!(["MixtralForCausalLM"]));
            o.insert("num_local_experts".into(), json!(3));
            o.insert("num_experts_per_tok".into(), json!(2));
        }
        other => panic!("no tiny config for {other}"),
    }
    c
}

pub const ARCHS: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "qwen3_moe",
    "qwen2_moe",
    "mixtral",
];

/// Writes a tiny random checkpoint; `max_shard` small forces sharding.
pub fn make_checkpoint(dir: &Path, config: &Value, dtype: Dtype, max_shard: u64) {
    write_synthetic(config, dir, dtype, max_shard, 7, &Silent).unwrap();
    std::fs::write(dir.join("tokenizer.json"), b"{\"version\":\"1.0\"}").unwrap();
    std::fs::write(dir.join("generation_config.json"), b"{\"do_sample\":false}").unwrap();
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_depthprune"))
}

pub fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// Runs the binary with `args` in the folder `cwd`.
pub fn run_in(args: &[&str], cwd: &Path) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// `tests/fixtures/golden`, the folder of the golden fixtures.
pub fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

/// A path as the `&str` an argument list takes.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The golden llama fixture (4 layers, with a tokenizer).
pub fn golden_llama() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/llama")
}

/// The golden fixtures' evaluation text.
pub fn golden_text() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/eval.txt")
}

/// The first `n` tokens of [`golden_text`] under the llama fixture's tokenizer, refusing a text
/// that is too short.
pub fn golden_tokens(n: usize) -> Vec<u32> {
    let tok = depthprune::tokenizer::HfTokenizer::open(&golden_llama()).unwrap();
    let text = depthprune::eval::read_text(&golden_text()).unwrap();
    let t = depthprune::eval::tokenize(&tok, &text, Some(n)).unwrap();
    assert_eq!(t.len(), n, "the fixture text is too short");
    t
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that a run succeeded, showing its exit status and stderr otherwise.
pub fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstderr: {}",
        o.status,
        stderr(o)
    );
}

/// Runs `depthprune SUB INPUT ARGS… --out OUT`.
pub fn run_to(sub: &str, input: &Path, args: &[&str], out: &Path) -> Output {
    let mut all = vec![sub, s(input)];
    all.extend_from_slice(args);
    all.extend(["--out", s(out)]);
    run(&all)
}

/// Runs `depthprune prune SRC ARGS… --out OUT`.
pub fn prune(src: &Path, args: &[&str], out: &Path) -> Output {
    run_to("prune", src, args, out)
}

/// A fresh temporary folder holding the tiny random checkpoint of `arch` at `src`, and the path
/// `out` beside it.
pub fn tiny_checkpoint(arch: &str, dtype: Dtype, max_shard: u64) -> (TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("out"));
    make_checkpoint(&src, &tiny_config(arch), dtype, max_shard);
    (tmp, src, out)
}

/// A JSON file, parsed.
pub fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A JSON array of numbers as `f64`s.
pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The one `error:` line of `err`, asserting there is exactly one.
pub fn one_error_line(err: &str) -> &str {
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    lines[0]
}

/// Copies `config.json` and `model.safetensors` of the fixture folder `weights`, and the golden
/// llama fixture's tokenizer files `tokenizer`, into a new folder `to` (the golden fixtures share
/// the llama fixture's 300-token vocabulary).
pub fn with_llama_tokenizer(weights: &Path, tokenizer: &[&str], to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(weights.join(f), to.join(f)).unwrap();
    }
    for f in tokenizer {
        std::fs::copy(golden_llama().join(f), to.join(f)).unwrap();
    }
}

/// `DIR/dense.gguf`: a 4-layer F32 GGUF of the golden qwen2 weights with the golden llama
/// fixture's byte-level BPE tokenizer, so the GGUF carries a tokenizer for calibration text.
pub fn dense_qwen2_gguf(dir: &Path) -> PathBuf {
    use depthprune::checkpoint::atomic::Overwrite;
    use depthprune::checkpoint::gguf::GgmlType;
    use depthprune::convert::to_gguf::hf_to_gguf;
    let hf = dir.join("hf");
    with_llama_tokenizer(
        &fixture().join("qwen2"),
        &["tokenizer.json", "tokenizer_config.json"],
        &hf,
    );
    let gguf = dir.join("dense.gguf");
    hf_to_gguf(&hf, &gguf, GgmlType::F32, Overwrite::Refuse).unwrap();
    gguf
}

/// Prunes the GGUF `src` with layer 0 removed into parts of at most `max_shard` at `out`;
/// returns the parts' paths, first first.
pub fn split_gguf(src: &Path, max_shard: &str, out: &Path) -> Vec<PathBuf> {
    let o = prune(
        src,
        &["--drop", "0", "--max-shard-size", max_shard, "--json"],
        out,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    v["report"]["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect()
}

/// The `.safetensors` files of a folder, sorted.
pub fn safetensors_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    files
}

/// All tensors of a folder, by name, with their raw bytes.
pub fn tensor_bytes(dir: &Path) -> BTreeMap<String, (Dtype, Vec<u64>, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for f in safetensors_files(dir) {
        let st = SafetensorsFile::open(&f).unwrap();
        let mut file = std::fs::File::open(&f).unwrap();
        for t in &st.tensors {
            let mut buf = Vec::new();
            read_range(&mut file, &f, t.file_offset, t.len, &mut buf).unwrap();
            assert!(out
                .insert(t.name.clone(), (t.dtype, t.shape.clone(), buf))
                .is_none());
        }
    }
    out
}

/// Asserts that a failed run left nothing at `out` and no temporary beside it.
pub fn assert_no_output(out: &Path) {
    assert!(!out.exists(), "output `{}` must not exist", out.display());
    if let Some(parent) = out.parent() {
        for e in std::fs::read_dir(parent).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains("depthprune-tmp"),
                "temporary `{name}` left behind"
            );
        }
    }
}

/// The windows of the heals [`run_healing`] fits, in tokens.
pub const HEAL_CTX: usize = 32;
/// The calibration tokens of the heals [`run_healing`] fits.
pub const HEAL_SAMPLES: usize = 256;

/// Runs `args` in `cwd` with the flags of a heal on the golden text in windows of [`HEAL_CTX`]
/// tokens, [`HEAL_SAMPLES`] in all, without validation (`--holdout 0`, one ridge weight, 1e-3):
/// for the tests of the fold and the writing; the guard has its own (tests/heal_guard.rs).
pub fn run_healing(args: &[&str], cwd: &Path) -> Output {
    let (calib, ctx, samples) = (
        golden_text(),
        HEAL_CTX.to_string(),
        HEAL_SAMPLES.to_string(),
    );
    let mut all = args.to_vec();
    all.extend([
        "--calib",
        s(&calib),
        "--ctx",
        &ctx,
        "--heal-samples",
        &samples,
        "--holdout",
        "0",
        "--alpha",
        "1e-3",
    ]);
    run_in(&all, cwd)
}

/// `depthprune prune` of the golden llama with layer 2 removed and the golden text as
/// calibration, run in `cwd` with the `extra` flags of the test.
pub fn prune_golden(cwd: &Path, extra: &[&str]) -> Output {
    let (model, text) = (golden_llama(), golden_text());
    let mut args = vec![
        "prune",
        model.to_str().unwrap(),
        "--drop",
        "2..3",
        "--calib",
        text.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_in(&args, cwd)
}

/// [`prune_golden`] with `extra` into the folder `out` of `cwd`, which must succeed; returns its
/// stdout and the `pruning.json` it wrote.
pub fn prune_golden_ok(cwd: &Path, extra: &[&str], out: &str) -> (String, Value) {
    let o = prune_golden(cwd, &[extra, &["--out", out]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    (stdout(&o), read_json(&cwd.join(out).join("pruning.json")))
}

/// Asserts that [`prune_golden`] with `extra` into `x` fails with exit 1, saying `want`, and
/// writes nothing.
pub fn prune_golden_refused(cwd: &Path, extra: &[&str], want: &str) {
    let o = prune_golden(cwd, &[extra, &["--out", "x"]].concat());
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains(want), "{e}");
    assert!(!cwd.join("x").exists());
}

/// A heal of the golden llama with layer 2 removed, fitted on `tokens` with `opts`.
pub fn heal_golden(
    tokens: &[u32],
    opts: &depthprune::heal::HealOptions,
) -> depthprune::Result<depthprune::heal::Healing> {
    depthprune::heal::heal(&golden_llama(), &[2], tokens, opts, &Silent)
}

/// The windows of the validated heals of the golden llama (tests/heal_guard.rs, heal_kd.rs).
pub const GUARD_CTX: usize = 16;
/// Their calibration tokens, validation included.
pub const GUARD_SAMPLES: usize = 256;
/// Every how-many-th window they hold out for validation.
pub const GUARD_HOLDOUT: usize = 4;

/// The options of those heals.
pub fn guarded() -> depthprune::heal::HealOptions {
    depthprune::heal::HealOptions {
        holdout: GUARD_HOLDOUT,
        ..depthprune::heal::HealOptions::validated(GUARD_CTX)
    }
}

/// `heal`, the `--heal` flags of a `prune`, followed by the `--ctx`, `--heal-samples` and
/// `--holdout` of [`guarded`] (16, 256 and 4).
pub fn guarded_flags<'a>(heal: &[&'a str]) -> Vec<&'a str> {
    let mut all = heal.to_vec();
    all.extend(["--ctx", "16", "--heal-samples", "256", "--holdout", "4"]);
    all
}

/// Deterministic pseudo-random token ids below `vocab` (an LCG), for models whose text does not
/// matter.
#[allow(dead_code)]
pub fn pseudo_tokens(n: usize, vocab: u32) -> Vec<u32> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % u64::from(vocab)) as u32
        })
        .collect()
}
