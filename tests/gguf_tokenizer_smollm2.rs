//! The real check of the GGUF tokenizer conversion: SmolLM2-135M-Instruct's GGUF metadata,
//! converted and loaded into the `tokenizers` library, must give the ids recorded in
//! `tests/fixtures/tokenizer/smollm2_reference.json` (made by
//! `scripts/make_tokenizer_fixture.py` from transformers' own conversion of the same file, which
//! agrees with llama.cpp on this vocabulary), keep every digit on its own, round-trip text, and
//! map the chat tokens to their ids.
//!
//! Set `DEPTHPRUNE_SMOLLM2_GGUF` to the `.gguf` path to run it; without it the test says so and
//! passes. The GGUF is read here by a small metadata-only parser, kept in this file on purpose:
//! the library's reader lives elsewhere and this test must not depend on it.

use depthprune::tokenizer::{to_tokenizer_json, tokenizer_config_json, GgufVocab};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;
use std::str::FromStr;
use tokenizers::Tokenizer;

const ENV: &str = "DEPTHPRUNE_SMOLLM2_GGUF";

/// A GGUF metadata value.
#[derive(Debug, Clone)]
enum Val {
    Int(i128),
    Float(f64),
    Bool(bool),
    Str(String),
    Arr(Vec<Val>),
}

struct Meta<R: Read>(R);

impl<R: Read> Meta<R> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        self.0.read_exact(&mut b).expect("GGUF header is truncated");
        b
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
    fn string(&mut self) -> String {
        let n = self.u64();
        assert!(n < 1 << 24, "implausible string length {n}");
        let mut b = vec![0u8; n as usize];
        self.0.read_exact(&mut b).expect("GGUF string is truncated");
        String::from_utf8(b).expect("GGUF string is not UTF-8")
    }
    fn value(&mut self, ty: u32) -> Val {
        match ty {
            0 => Val::Int(u8::from_le_bytes(self.bytes()) as i128),
            1 => Val::Int(i8::from_le_bytes(self.bytes()) as i128),
            2 => Val::Int(u16::from_le_bytes(self.bytes()) as i128),
            3 => Val::Int(i16::from_le_bytes(self.bytes()) as i128),
            4 => Val::Int(self.u32() as i128),
            5 => Val::Int(i32::from_le_bytes(self.bytes()) as i128),
            6 => Val::Float(f32::from_le_bytes(self.bytes()) as f64),
            7 => Val::Bool(self.bytes::<1>()[0] != 0),
            8 => Val::Str(self.string()),
            9 => {
                let elem = self.u32();
                let n = self.u64();
                assert!(n < 1 << 24, "implausible array length {n}");
                Val::Arr((0..n).map(|_| self.value(elem)).collect())
            }
            10 => Val::Int(self.u64() as i128),
            11 => Val::Int(i64::from_le_bytes(self.bytes()) as i128),
            12 => Val::Float(f64::from_le_bytes(self.bytes())),
            other => panic!("unknown GGUF value type {other}"),
        }
    }
}

/// Every metadata key of a GGUF file (v2 or v3), read from its header only.
fn read_metadata(path: &Path) -> HashMap<String, Val> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut m = Meta(BufReader::new(file));
    assert_eq!(&m.bytes::<4>(), b"GGUF", "not a GGUF file");
    let version = m.u32();
    assert!(version == 2 || version == 3, "GGUF version {version}");
    let _n_tensors = m.u64();
    let n_kv = m.u64();
    (0..n_kv)
        .map(|_| {
            let key = m.string();
            let ty = m.u32();
            (key, m.value(ty))
        })
        .collect()
}

fn vocab_from(meta: &HashMap<String, Val>) -> GgufVocab {
    let get = |k: &str| meta.get(&format!("tokenizer.{k}"));
    let string = |k: &str| match get(k) {
        Some(Val::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let id = |k: &str| match get(k) {
        Some(Val::Int(i)) => Some(*i as u32),
        _ => None,
    };
    let flag = |k: &str| match get(k) {
        Some(Val::Bool(b)) => Some(*b),
        _ => None,
    };
    let list = |k: &str| match get(k) {
        Some(Val::Arr(a)) => Some(a.clone()),
        _ => None,
    };
    let strings = |k: &str| -> Vec<String> {
        list(k)
            .unwrap_or_default()
            .into_iter()
            .map(|v| match v {
                Val::Str(s) => s,
                other => panic!("{k}: {other:?}"),
            })
            .collect()
    };
    GgufVocab {
        model: string("ggml.model").expect("tokenizer.ggml.model"),
        pre: string("ggml.pre"),
        tokens: strings("ggml.tokens"),
        scores: list("ggml.scores").map(|a| {
            a.into_iter()
                .map(|v| match v {
                    Val::Float(f) => f as f32,
                    other => panic!("score {other:?}"),
                })
                .collect()
        }),
        token_type: list("ggml.token_type").map(|a| {
            a.into_iter()
                .map(|v| match v {
                    Val::Int(i) => i as i32,
                    other => panic!("token type {other:?}"),
                })
                .collect()
        }),
        merges: strings("ggml.merges"),
        bos_token_id: id("ggml.bos_token_id"),
        eos_token_id: id("ggml.eos_token_id"),
        unk_token_id: id("ggml.unknown_token_id"),
        padding_token_id: id("ggml.padding_token_id"),
        add_bos_token: flag("ggml.add_bos_token"),
        add_eos_token: flag("ggml.add_eos_token"),
        add_space_prefix: flag("ggml.add_space_prefix"),
        chat_template: string("chat_template"),
    }
}

fn reference() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokenizer/smollm2_reference.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
fn smollm2_gguf_tokenizer_matches_reference() {
    let Some(path) = std::env::var_os(ENV) else {
        eprintln!("skipped: set {ENV} to a SmolLM2-135M-Instruct .gguf file to run this test");
        return;
    };
    let reference = reference();
    let v = vocab_from(&read_metadata(Path::new(&path)));
    assert_eq!(v.pre.as_deref(), Some("smollm"));
    assert_eq!(
        v.tokens.len() as u64,
        reference["n_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        v.merges.len() as u64,
        reference["n_merges"].as_u64().unwrap()
    );

    let built = to_tokenizer_json(&v).unwrap();
    assert!(built.warnings.is_empty(), "{:?}", built.warnings);
    let text = serde_json::to_string(&built.json).unwrap();
    let t = Tokenizer::from_str(&text).unwrap();

    // 1. The reference ids, string by string.
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let s = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect();
        let got = t.encode(s, false).unwrap().get_ids().to_vec();
        assert_eq!(got, want, "{s:?}");
        // 2. Lossless round trip.
        assert_eq!(t.decode(&got, false).unwrap(), s);
    }

    // 3. Every digit is a token of its own.
    let digits = "In 2024, 1234567 people paid $3.14.";
    let enc = t.encode(digits, false).unwrap();
    let with_digit: Vec<&String> = enc
        .get_tokens()
        .iter()
        .filter(|p| p.chars().any(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(
        with_digit.len(),
        digits.chars().filter(char::is_ascii_digit).count()
    );
    assert!(
        with_digit.iter().all(|p| p.chars().count() == 1),
        "{with_digit:?}"
    );

    // 4. Chat tokens map to their ids, whole, and the file's BOS setting (off) holds.
    assert_eq!(t.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(t.token_to_id("<|im_end|>"), Some(2));
    let chat = t.encode("<|im_start|>user\nhi<|im_end|>", true).unwrap();
    assert_eq!(chat.get_ids().first(), Some(&1));
    assert_eq!(chat.get_ids().last(), Some(&2));
    assert_eq!(t.decode(chat.get_ids(), true).unwrap(), "user\nhi");

    // 5. The config names the special tokens and carries the chat template.
    let config = tokenizer_config_json(&v).unwrap();
    assert_eq!(config["bos_token"], "<|im_start|>");
    assert_eq!(config["eos_token"], "<|im_end|>");
    assert_eq!(config["add_bos_token"], false);
    assert!(config["chat_template"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>"));
    assert_eq!(
        config["added_tokens_decoder"].as_object().unwrap().len(),
        17
    );
}
