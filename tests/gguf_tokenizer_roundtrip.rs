//! `convert DIR --to gguf` writes the tokenizer as llama.cpp's `tokenizer.*` metadata (issue 3):
//! on a small byte-level BPE fixture the GGUF's tokenizer gives the folder's ids and survives
//! HF → GGUF → HF → GGUF unchanged; on SmolLM2 (when `DEPTHPRUNE_SMOLLM2_GGUF` is set) the
//! metadata rebuilt from the converted folder equals the original file's, key for key, and
//! tokenizes the same.

use depthprune::checkpoint::atomic::Overwrite;
use depthprune::checkpoint::gguf::{GgmlType, GgufModel, Metadata, Value};
use depthprune::checkpoint::safetensors::Dtype;
use depthprune::convert::to_gguf::hf_to_gguf;
use depthprune::convert::to_hf::gguf_to_hf;
use depthprune::tokenizer::to_gguf::{gguf_tokenizer_metadata, TokenizerMetadata};
use depthprune::tokenizer::{
    gguf_tokenizer, to_tokenizer_json, tokenizer_config_json, vocab_from_metadata, HfTokenizer,
};
use std::path::{Path, PathBuf};

const TEXTS: &[&str] = &[
    "Hello world",
    "The year 2024 had 366 days; 3.14159 ≈ π.",
    "  leading spaces\nand\ttabs\r\n",
    "<s>special</s> tokens in text",
    "naïve café – “quotes” 日本語 🙂",
    "1234567890 12 345 6789",
];

fn golden(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/".to_owned() + arch)
}

/// The golden qwen2 weights (vocabulary 300) with the golden llama fixture's byte-level BPE
/// tokenizer (GPT-2 pre-tokenizer, BOS added by the post-processor, a chat template file).
fn fixture(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(golden("qwen2").join(f), dir.join(f)).unwrap();
    }
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        std::fs::copy(golden("llama").join(f), dir.join(f)).unwrap();
    }
}

fn tokenizer_entries(md: &Metadata) -> Vec<(String, Value)> {
    md.iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn same_ids(a: &HfTokenizer, b: &HfTokenizer) {
    for t in TEXTS {
        for special in [false, true] {
            assert_eq!(
                a.encode(t, special).unwrap(),
                b.encode(t, special).unwrap(),
                "{t:?} (special {special})"
            );
        }
    }
}

#[test]
fn hf_to_gguf_writes_the_tokenizer_and_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    fixture(&hf);
    let gguf = tmp.path().join("a.gguf");
    let report = hf_to_gguf(&hf, &gguf, GgmlType::F32, Overwrite::Refuse).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let model = GgufModel::open(&gguf).unwrap();
    let md = model.metadata();
    assert_eq!(md.get_str("tokenizer.ggml.model"), Some("gpt2"));
    assert_eq!(md.get_str("tokenizer.ggml.pre"), Some("gpt-2"));
    assert_eq!(
        md.get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .map(|a| a.len()),
        Some(300)
    );
    assert_eq!(
        md.get("tokenizer.ggml.merges")
            .and_then(Value::as_array)
            .map(|a| a.len()),
        Some(42)
    );
    assert_eq!(
        md.get("tokenizer.ggml.bos_token_id")
            .and_then(Value::as_u64),
        Some(0)
    );
    assert_eq!(
        md.get("tokenizer.ggml.eos_token_id")
            .and_then(Value::as_u64),
        Some(1)
    );
    assert_eq!(
        md.get("tokenizer.ggml.add_bos_token"),
        Some(&Value::Bool(true))
    );
    let template = std::fs::read_to_string(hf.join("chat_template.jinja")).unwrap();
    assert_eq!(
        md.get_str("tokenizer.chat_template"),
        Some(template.as_str())
    );

    let (from_gguf, warnings) = gguf_tokenizer(&model).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    same_ids(&HfTokenizer::open(&hf).unwrap(), &from_gguf);

    // GGUF → HF → GGUF keeps every tokenizer entry.
    let back = tmp.path().join("back");
    gguf_to_hf(&gguf, &back, Dtype::F32, Overwrite::Refuse).unwrap();
    let again = tmp.path().join("b.gguf");
    hf_to_gguf(&back, &again, GgmlType::F32, Overwrite::Refuse).unwrap();
    let again = GgufModel::open(&again).unwrap();
    assert_eq!(
        tokenizer_entries(again.metadata()),
        tokenizer_entries(model.metadata())
    );
    same_ids(&from_gguf, &gguf_tokenizer(&again).unwrap().0);
}

#[test]
fn other_tokenizers_are_left_out_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    fixture(&hf);
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("tokenizer.json")).unwrap()).unwrap();
    tok["pre_tokenizer"] = serde_json::json!({"type": "Metaspace", "replacement": "▁"});
    tok["decoder"] = serde_json::json!({"type": "Metaspace", "replacement": "▁"});
    std::fs::write(hf.join("tokenizer.json"), tok.to_string()).unwrap();
    let gguf = tmp.path().join("a.gguf");
    let report = hf_to_gguf(&hf, &gguf, GgmlType::F32, Overwrite::Refuse).unwrap();
    assert!(
        report.warnings.iter().any(|w| w.contains("byte-level")),
        "{:?}",
        report.warnings
    );
    let model = GgufModel::open(&gguf).unwrap();
    assert!(model.metadata().get("tokenizer.ggml.model").is_none());
    assert_eq!(
        model
            .metadata()
            .get("tokenizer.ggml.bos_token_id")
            .and_then(Value::as_u64),
        Some(0)
    );

    std::fs::write(hf.join("tokenizer.json"), "{ not json").unwrap();
    let err = hf_to_gguf(
        &hf,
        &tmp.path().join("b.gguf"),
        GgmlType::F32,
        Overwrite::Refuse,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    assert!(!tmp.path().join("b.gguf").exists());
}

#[test]
fn smollm2_tokenizer_metadata_survives_gguf_hf_gguf() {
    let Ok(path) = std::env::var("DEPTHPRUNE_SMOLLM2_GGUF") else {
        eprintln!("SKIPPED: set DEPTHPRUNE_SMOLLM2_GGUF to the SmolLM2-135M-Instruct .gguf");
        return;
    };
    let model = GgufModel::open(Path::new(&path)).unwrap();
    let vocab = vocab_from_metadata(model.metadata(), model.path()).unwrap();
    // The tokenizer files `convert --to hf` writes, without the weights.
    let tmp = tempfile::tempdir().unwrap();
    let built = to_tokenizer_json(&vocab).unwrap();
    let config = tokenizer_config_json(&vocab).unwrap();
    std::fs::write(tmp.path().join("tokenizer.json"), built.json.to_string()).unwrap();
    std::fs::write(tmp.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    let TokenizerMetadata::Written { entries, warnings } =
        gguf_tokenizer_metadata(tmp.path(), vocab.tokens.len()).unwrap()
    else {
        panic!("the SmolLM2 tokenizer was not written");
    };
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut md = Metadata::default();
    for (k, v) in &entries {
        md.set(k, v.clone());
        match model.metadata().get(k) {
            Some(orig) => assert_eq!(orig, v, "{k}"),
            // The original leaves add_eos_token out; false is llama.cpp's default.
            None => assert_eq!(
                (k.as_str(), v),
                ("tokenizer.ggml.add_eos_token", &Value::Bool(false))
            ),
        }
    }
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.chat_template",
    ] {
        assert!(md.get(key).is_some(), "{key} was not written");
    }
    let again = vocab_from_metadata(&md, model.path()).unwrap();
    assert_eq!(again.tokens, vocab.tokens);
    let (orig, _) = gguf_tokenizer(&model).unwrap();
    let json = to_tokenizer_json(&again).unwrap().json;
    let rebuilt =
        HfTokenizer::from_json(model.path(), &json, &tokenizer_config_json(&again).unwrap())
            .unwrap();
    same_ids(&orig, &rebuilt);
}
