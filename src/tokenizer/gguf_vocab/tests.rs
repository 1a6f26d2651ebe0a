//! Unit tests: one per error variant, and the shape of what is built for each kind of input.
//! Loading the result into the `tokenizers` library is tested in `tests/gguf_tokenizer.rs`.

use super::*;
use crate::Error;

/// A byte-level vocabulary small enough to read: one control token, one user-defined token.
fn tiny() -> GgufVocab {
    let tokens = [
        "<|endoftext|>",
        "<think>",
        "a",
        "b",
        "ab",
        "Ġ",
        "Ġa",
        "1",
        "2",
        "12",
    ];
    GgufVocab {
        model: "gpt2".into(),
        pre: Some("gpt-2".into()),
        tokens: tokens.iter().map(|t| t.to_string()).collect(),
        token_type: Some(vec![3, 4, 1, 1, 1, 1, 1, 1, 1, 1]),
        merges: vec!["a b".into(), "Ġ a".into(), "1 2".into()],
        bos_token_id: Some(0),
        eos_token_id: Some(0),
        ..Default::default()
    }
}

/// [`tiny`] under another `tokenizer.ggml.model`.
fn with_model(model: &str) -> GgufVocab {
    GgufVocab {
        model: model.into(),
        ..tiny()
    }
}

fn vocab_err<T: std::fmt::Debug>(r: crate::Result<T>) -> VocabError {
    match r {
        Err(Error::Vocab(e)) => e,
        other => panic!("expected a vocab error, got {other:?}"),
    }
}

#[test]
fn unknown_model_is_refused() {
    let v = with_model("bert");
    let e = vocab_err(to_tokenizer_json(&v));
    assert_eq!(e, VocabError::UnknownModel("bert".into()));
    assert!(e.to_string().contains("`gpt2`"));
}

#[test]
fn unknown_pre_is_refused_and_known_ones_are_listed() {
    let v = GgufVocab {
        pre: Some("my-own".into()),
        ..tiny()
    };
    let e = vocab_err(to_tokenizer_json(&v));
    assert_eq!(
        e,
        VocabError::UnknownPre {
            name: "my-own".into()
        }
    );
    let msg = e.to_string();
    assert!(msg.contains("`smollm`") && msg.contains("`llama-bpe`") && msg.contains("`qwen2`"));
}

#[test]
fn missing_pre_falls_back_to_llama_cpp_default_with_a_warning() {
    let v = GgufVocab {
        pre: None,
        ..tiny()
    };
    let t = to_tokenizer_json(&v).unwrap();
    assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    assert!(t.warnings[0].contains("`default`"));
    let steps = t.json["pre_tokenizer"]["pretokenizers"].as_array().unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Split", "Split", "Split", "Split", "ByteLevel"]);
    assert_eq!(steps[4]["use_regex"], false);
}

#[test]
fn empty_vocab_is_refused() {
    let v = GgufVocab {
        tokens: vec![],
        token_type: None,
        merges: vec![],
        bos_token_id: None,
        eos_token_id: None,
        ..tiny()
    };
    assert_eq!(vocab_err(to_tokenizer_json(&v)), VocabError::EmptyVocab);
}

#[test]
fn per_token_arrays_must_match_the_vocab() {
    let v = GgufVocab {
        token_type: Some(vec![1; 3]),
        ..tiny()
    };
    assert_eq!(
        vocab_err(to_tokenizer_json(&v)),
        VocabError::LengthMismatch {
            key: "tokenizer.ggml.token_type",
            expected: 10,
            actual: 3
        }
    );
    let v = GgufVocab {
        scores: Some(vec![0.0; 11]),
        ..tiny()
    };
    assert!(matches!(
        vocab_err(to_tokenizer_json(&v)),
        VocabError::LengthMismatch {
            key: "tokenizer.ggml.scores",
            ..
        }
    ));
}

#[test]
fn special_ids_must_be_in_range() {
    let v = GgufVocab {
        padding_token_id: Some(10),
        ..tiny()
    };
    let e = vocab_err(tokenizer_config_json(&v));
    assert_eq!(
        e,
        VocabError::IdOutOfRange {
            key: "tokenizer.ggml.padding_token_id",
            id: 10,
            n_tokens: 10
        }
    );
}

#[test]
fn duplicate_tokens_are_refused() {
    let mut v = tiny();
    v.tokens[3] = "a".into();
    assert_eq!(
        vocab_err(to_tokenizer_json(&v)),
        VocabError::DuplicateToken {
            token: "a".into(),
            first: 2,
            second: 3
        }
    );
}

#[test]
fn bad_merges_are_refused_by_index() {
    for (merge, why) in [
        ("ab", "no space"),
        ("a c", "`c`, which is not a token"),
        ("b a", "makes `ba`"),
    ] {
        let mut v = tiny();
        v.merges.push(merge.into());
        match vocab_err(to_tokenizer_json(&v)) {
            VocabError::BadMerge {
                index,
                merge: m,
                why: w,
            } => {
                assert_eq!((index, m.as_str()), (3, merge));
                assert!(w.contains(why), "{w}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn sentencepiece_needs_scores() {
    let v = with_model("llama");
    assert_eq!(
        vocab_err(to_tokenizer_json(&v)),
        VocabError::Missing {
            key: "tokenizer.ggml.scores",
            model: "llama"
        }
    );
}

#[test]
fn control_tokens_are_special_and_user_defined_are_not() {
    let t = to_tokenizer_json(&tiny()).unwrap().json;
    let added = t["added_tokens"].as_array().unwrap();
    assert_eq!(added.len(), 2);
    assert_eq!(
        (&added[0]["content"], &added[0]["special"], &added[0]["id"]),
        (&json!("<|endoftext|>"), &json!(true), &json!(0))
    );
    assert_eq!(
        (&added[1]["content"], &added[1]["special"]),
        (&json!("<think>"), &json!(false))
    );
    assert_eq!(t["model"]["vocab"]["ab"], 4);
    assert_eq!(t["model"]["merges"][1], json!(["Ġ", "a"]));
}

#[test]
fn pre_names_pick_llama_cpp_splits() {
    let kinds = |pre: &str| {
        let v = GgufVocab {
            pre: Some(pre.into()),
            ..tiny()
        };
        let j = to_tokenizer_json(&v).unwrap().json;
        let p = &j["pre_tokenizer"];
        match p["type"].as_str().unwrap() {
            "Sequence" => p["pretokenizers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| match &s["pattern"]["Regex"] {
                    Value::String(r) => r.clone(),
                    _ => s["type"].as_str().unwrap().to_string(),
                })
                .collect::<Vec<_>>(),
            other => vec![other.to_string()],
        }
    };
    assert_eq!(kinds("smollm"), ["Digits", "ByteLevel"]);
    assert_eq!(kinds("gpt-2"), ["ByteLevel"]);
    assert_eq!(kinds("llama-bpe"), [LLAMA3_SPLIT, "ByteLevel"]);
    assert_eq!(kinds("qwen2"), [QWEN2_SPLIT, "ByteLevel"]);
    assert!(LLAMA3_SPLIT.contains(r"\p{N}{1,3}") && QWEN2_SPLIT.contains(r"|\p{N}|"));
}

#[test]
fn bos_follows_the_file_then_llama_cpp_defaults() {
    let post = |pre: &str, add_bos: Option<bool>| {
        let v = GgufVocab {
            pre: Some(pre.into()),
            add_bos_token: add_bos,
            ..tiny()
        };
        to_tokenizer_json(&v).unwrap().json["post_processor"].clone()
    };
    // llama3 adds BOS unless the file says not to; gpt-2 does not unless the file says so.
    let p = post("llama-bpe", None);
    assert_eq!(p["processors"][1]["type"], "TemplateProcessing");
    assert_eq!(
        p["processors"][1]["single"][0]["SpecialToken"]["id"],
        "<|endoftext|>"
    );
    assert_eq!(post("llama-bpe", Some(false))["type"], "ByteLevel");
    assert_eq!(post("gpt-2", None)["type"], "ByteLevel");
    let p = post("gpt-2", Some(true));
    assert_eq!(
        p["processors"][1]["special_tokens"]["<|endoftext|>"]["ids"],
        json!([0])
    );
    assert_eq!(p["processors"][1]["pair"].as_array().unwrap().len(), 4);
}

#[test]
fn missing_bos_id_drops_bos_with_a_warning() {
    let v = GgufVocab {
        add_bos_token: Some(true),
        bos_token_id: None,
        ..tiny()
    };
    let t = to_tokenizer_json(&v).unwrap();
    assert_eq!(t.json["post_processor"]["type"], "ByteLevel");
    assert!(t.warnings.iter().any(|w| w.contains("no BOS token")));
}

#[test]
fn config_names_special_tokens_and_keeps_the_template() {
    let v = GgufVocab {
        pre: Some("smollm".into()),
        padding_token_id: Some(1),
        chat_template: Some("{{ messages }}".into()),
        ..tiny()
    };
    let c = tokenizer_config_json(&v).unwrap();
    assert_eq!(c["bos_token"], "<|endoftext|>");
    assert_eq!(c["pad_token"], "<think>");
    assert_eq!(c["unk_token"], Value::Null);
    assert_eq!(c["chat_template"], "{{ messages }}");
    assert_eq!(c["add_bos_token"], false);
    // smollm turns llama.cpp's space clean-up off.
    assert_eq!(c["clean_up_tokenization_spaces"], false);
    assert_eq!(c["added_tokens_decoder"]["1"]["special"], false);
    assert!(c["added_tokens_decoder"]["1"].get("id").is_none());
}

#[test]
fn sentencepiece_merges_come_from_scores_best_first() {
    let tokens = ["<unk>", "<s>", "</s>", "▁", "h", "i", "hi", "▁h", "▁hi"];
    let v = GgufVocab {
        model: "llama".into(),
        pre: None,
        tokens: tokens.iter().map(|t| t.to_string()).collect(),
        scores: Some(vec![0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -5.0, -4.0, -6.0]),
        token_type: Some(vec![2, 3, 3, 1, 1, 1, 1, 1, 1]),
        ..Default::default()
    };
    let t = to_tokenizer_json(&v).unwrap();
    let merges = &t.json["model"]["merges"];
    // "▁h" (-4) before "hi" (-5) before "▁hi" (-6, two ways, by the left half's id).
    assert_eq!(
        merges,
        &json!([["▁", "h"], ["h", "i"], ["▁", "hi"], ["▁h", "i"]])
    );
    assert_eq!(t.json["model"]["unk_token"], "<unk>");
    // No byte tokens: byte fallback is off, and the user is told.
    assert_eq!(t.json["model"]["byte_fallback"], false);
    assert!(t.warnings.iter().any(|w| w.contains("byte tokens")));
    // llama.cpp's SentencePiece defaults: BOS id 1, added.
    assert_eq!(
        t.json["post_processor"]["single"][0]["SpecialToken"]["id"],
        "<s>"
    );
}
