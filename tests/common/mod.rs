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

/// All tensors of a folder, by name, with their raw bytes.
pub fn tensor_bytes(dir: &Path) -> BTreeMap<String, (Dtype, Vec<u64>, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    let mut out = BTreeMap::new();
    for f in files {
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
