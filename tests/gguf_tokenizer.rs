//! Loads the `tokenizer.json` built from GGUF-style metadata into the `tokenizers` library and
//! checks it tokenizes as llama.cpp would: the digit rules of each pre-tokenizer, special and
//! user-defined tokens, BOS, SentencePiece byte fallback, and lossless round trips.

use depthprune::tokenizer::{to_tokenizer_json, GgufVocab};
use std::str::FromStr;
use tokenizers::Tokenizer;

/// GPT-2's byte-to-character table (`bytes_to_unicode`): printable Latin-1 bytes stand for
/// themselves, the other bytes for U+0100 onwards in order.
fn byte_chars() -> Vec<char> {
    let mut next = 256u32;
    (0u32..256)
        .map(|b| {
            let printable =
                (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
            let c = if printable {
                b
            } else {
                next += 1;
                next - 1
            };
            char::from_u32(c).unwrap()
        })
        .collect()
}

const BOS: u32 = 0;
const IM_START: u32 = 1;
const IM_END: u32 = 2;
const THINK: u32 = 3;

/// A byte-level vocabulary: three control tokens, one user-defined token, all 256 byte
/// characters, and tokens built by a few merges (including digit merges, so pre-tokenizers that
/// isolate digits are visible).
fn byte_level(pre: &str) -> GgufVocab {
    let merges = [
        "h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "Ġwo r", "Ġwor l", "Ġworl d", "1 2",
        "12 3", "4 5", "Ġ Ġ", "Ċ Ċ",
    ];
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>"]
        .iter()
        .map(|t| t.to_string())
        .collect();
    let mut token_type = vec![3, 3, 3, 4];
    for c in byte_chars() {
        tokens.push(c.to_string());
        token_type.push(1);
    }
    for m in merges {
        tokens.push(m.replace(' ', ""));
        token_type.push(1);
    }
    GgufVocab {
        model: "gpt2".into(),
        pre: Some(pre.into()),
        tokens,
        token_type: Some(token_type),
        merges: merges.iter().map(|m| m.to_string()).collect(),
        bos_token_id: Some(BOS),
        eos_token_id: Some(IM_END),
        add_bos_token: Some(false),
        ..Default::default()
    }
}

fn load(v: &GgufVocab) -> Tokenizer {
    let built = to_tokenizer_json(v).unwrap();
    let text = serde_json::to_string(&built.json).unwrap();
    Tokenizer::from_str(&text).unwrap_or_else(|e| panic!("tokenizers refused the file: {e}"))
}

fn pieces(t: &Tokenizer, text: &str) -> Vec<String> {
    t.encode(text, false).unwrap().get_tokens().to_vec()
}

const PRES: [&str; 12] = [
    "default",
    "gpt-2",
    "smollm",
    "starcoder",
    "command-r",
    "llama-bpe",
    "llama3",
    "dbrx",
    "qwen2",
    "stablelm2",
    "falcon",
    "olmo",
];

const SAMPLES: [&str; 20] = [
    "hello world",
    "In 2024, 1234567 people paid $3.14.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\nand\n\n\nruns",
    "Ünïcödé façade — naïve café",
    "日本語のテキストと中文",
    "emoji 🙂👍🏽 and ZWJ 👨‍👩‍👧",
    "fn main() { println!(\"{}\", 1 + 2); }",
    "x<=y && y>=z || a!=b",
    "I'm, you're, they've, we'll, she'd",
    "DON'T SHOUT",
    "",
    " ",
    "\n",
    "0.000001 1e-9 -42 +7",
    "https://example.com/a?b=c&d=e#f",
    "Ελληνικά и русский",
    "a  b   c    d",
    "\u{0}\u{1}\u{7f} control bytes",
    "<|im_start|>user\nhi<|im_end|>",
];

#[test]
fn every_pre_loads_and_round_trips() {
    for pre in PRES {
        let t = load(&byte_level(pre));
        for s in SAMPLES {
            let ids = t.encode(s, false).unwrap().get_ids().to_vec();
            let back = t.decode(&ids, false).unwrap();
            assert_eq!(back, s, "pre `{pre}`");
        }
    }
}

#[test]
fn digit_rules_follow_llama_cpp() {
    // GPT-2 keeps a run of digits together, so the digit merges apply.
    assert_eq!(pieces(&load(&byte_level("gpt-2")), "45123"), ["45", "123"]);
    // SmolLM / StarCoder isolate every digit first.
    for pre in ["smollm", "starcoder"] {
        assert_eq!(
            pieces(&load(&byte_level(pre)), "45123"),
            ["4", "5", "1", "2", "3"]
        );
    }
    // Llama 3 cuts runs into threes: "451" | "23".
    assert_eq!(
        pieces(&load(&byte_level("llama-bpe")), "45123"),
        ["45", "1", "2", "3"]
    );
    // Qwen2 isolates every digit.
    assert_eq!(
        pieces(&load(&byte_level("qwen2")), "45123"),
        ["4", "5", "1", "2", "3"]
    );
    // llama.cpp's default splits digit runs into threes after GPT-2: "451" | "23".
    assert_eq!(
        pieces(&load(&byte_level("default")), "45123"),
        ["45", "1", "2", "3"]
    );
}

#[test]
fn merges_apply_in_file_order() {
    let t = load(&byte_level("gpt-2"));
    assert_eq!(pieces(&t, "hello world"), ["hello", "Ġworld"]);
    assert_eq!(pieces(&t, "hellohell"), ["hello", "hell"]);
}

#[test]
fn control_tokens_are_matched_whole_and_skippable() {
    let t = load(&byte_level("smollm"));
    let enc = t.encode("<|im_start|>user\nhi<|im_end|>", false).unwrap();
    let ids = enc.get_ids();
    assert_eq!(ids.first(), Some(&IM_START));
    assert_eq!(ids.last(), Some(&IM_END));
    assert_eq!(t.decode(ids, true).unwrap(), "user\nhi");
    assert_eq!(t.token_to_id("<|im_end|>"), Some(IM_END));
}

#[test]
fn user_defined_tokens_are_whole_but_not_special() {
    let t = load(&byte_level("qwen2"));
    let ids = t.encode("a<think>b", false).unwrap().get_ids().to_vec();
    assert!(ids.contains(&THINK), "{ids:?}");
    // Not special: skipping special tokens keeps it.
    assert_eq!(t.decode(&ids, true).unwrap(), "a<think>b");
}

#[test]
fn bos_is_added_only_when_asked() {
    let mut v = byte_level("smollm");
    let t = load(&v);
    assert_eq!(
        t.encode("hi", true).unwrap().get_ids(),
        &[104u32 + 4, 105 + 4]
    );
    v.add_bos_token = Some(true);
    let t = load(&v);
    let ids = t.encode("hi", true).unwrap().get_ids().to_vec();
    assert_eq!(ids, [BOS, 104 + 4, 105 + 4]);
    // llama-bpe adds BOS by default when the file does not say.
    v.pre = Some("llama-bpe".into());
    v.add_bos_token = None;
    assert_eq!(load(&v).encode("hi", true).unwrap().get_ids()[0], BOS);
}

/// A SentencePiece vocabulary: `<unk>`, `<s>`, `</s>`, the 256 byte tokens, and words built
/// left to right so each prefix outscores the next.
fn sentencepiece() -> GgufVocab {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0f32; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    let mut add = |t: &str, score: f32| {
        if !tokens.iter().any(|x| x == t) {
            tokens.push(t.to_string());
            types.push(1);
            scores.push(score);
        }
    };
    for c in ["▁", "h", "e", "l", "o", "w", "r", "d", "a"] {
        add(c, -1.0);
    }
    for word in ["▁hello", "▁world"] {
        let chars: Vec<char> = word.chars().collect();
        for n in 2..=chars.len() {
            add(&chars[..n].iter().collect::<String>(), -(n as f32));
        }
    }
    GgufVocab {
        model: "llama".into(),
        tokens,
        scores: Some(scores),
        token_type: Some(types),
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        unk_token_id: Some(0),
        ..Default::default()
    }
}

#[test]
fn sentencepiece_merges_by_score_and_falls_back_to_bytes() {
    let t = load(&sentencepiece());
    assert_eq!(pieces(&t, "hello world"), ["▁hello", "▁world"]);
    // "é" is not a token: its two UTF-8 bytes are used instead.
    assert_eq!(pieces(&t, "hé"), ["▁h", "<0xC3>", "<0xA9>"]);
    let enc = t.encode("hello world", true).unwrap();
    assert_eq!(enc.get_ids()[0], 1, "BOS first by default");
    for s in [
        "hello world",
        "hé wörld",
        "  two  spaces",
        "tab\tnew\nline",
        "🙂",
        "a",
    ] {
        let ids = t.encode(s, true).unwrap().get_ids().to_vec();
        assert_eq!(t.decode(&ids, true).unwrap(), s);
    }
}

#[test]
fn sentencepiece_without_space_prefix_keeps_text_as_is() {
    let mut v = sentencepiece();
    v.add_space_prefix = Some(false);
    v.add_bos_token = Some(false);
    let t = load(&v);
    assert_eq!(pieces(&t, "hello"), ["h", "e", "l", "l", "o"]);
    let ids = t.encode(" world", true).unwrap().get_ids().to_vec();
    assert_eq!(t.decode(&ids, false).unwrap(), " world");
}
