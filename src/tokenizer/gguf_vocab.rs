//! Rebuilds a Hugging Face `tokenizer.json` and `tokenizer_config.json` from the tokenizer
//! metadata of a GGUF file.
//!
//! The input is a plain [`GgufVocab`] filled by whoever reads the GGUF, so this module does not
//! depend on the reader. Two tokenizer models are handled, as llama.cpp names them in
//! `tokenizer.ggml.model`:
//!
//! - `gpt2`: byte-level BPE. The file's merges are used as they are, and the text is split before
//!   BPE by the regexes llama.cpp picks from `tokenizer.ggml.pre` (`src/llama-vocab.cpp`), written
//!   as the pre-tokenizers HF uses for the same models (`Digits` + `ByteLevel` for SmolLM, a
//!   `Split` regex for Llama 3 and Qwen2). A missing `pre` falls back to llama.cpp's `default`
//!   with a warning, as llama.cpp does; an unknown one is an error.
//! - `llama`: SentencePiece BPE (Llama 2, Mistral). GGUF stores scores, not merges, so merges are
//!   derived from the scores (a pair merges if both halves and their concatenation are tokens,
//!   best score first), with byte fallback and the `▁` space marker. This matches llama.cpp on
//!   ordinary text; where two different merges score the same, the two may still differ.
//!
//! Token types (`tokenizer.ggml.token_type`, llama.cpp's `llama_token_type`) decide the added
//! tokens: control (3) and unknown (2) tokens become special added tokens, user-defined (4) ones
//! plain added tokens, matched whole in text as llama.cpp does.

use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// llama.cpp's token types (`LLAMA_TOKEN_TYPE_*`).
pub(super) const TOKEN_UNKNOWN: i32 = 2;
pub(super) const TOKEN_CONTROL: i32 = 3;
pub(super) const TOKEN_USER_DEFINED: i32 = 4;
pub(super) const TOKEN_UNUSED: i32 = 5;
const TOKEN_BYTE: i32 = 6;

/// SentencePiece's word-boundary marker, which stands for a space.
const SPIECE_SPACE: &str = "\u{2581}";

/// GPT-2's split regex, which `ByteLevel` applies when `use_regex` is set.
pub(super) const GPT2_SPLIT: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's split: numbers in runs of up to three digits.
pub(super) const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split: Llama 3's with every digit on its own.
pub(super) const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer metadata of a GGUF file. Each field names the key it comes from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE) or `llama` (SentencePiece BPE).
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer name (`smollm`, `llama-bpe`, `qwen2`, …).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, indexed by token id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores`, one per token (needed for `llama`).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type`, one per token (1 normal, 2 unknown, 3 control,
    /// 4 user-defined, 5 unused, 6 byte).
    pub token_type: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`, each `"left right"` (empty for `llama`).
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`
    pub bos_token_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`
    pub eos_token_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`
    pub unk_token_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`
    pub padding_token_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`
    pub add_bos_token: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`
    pub add_eos_token: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` (`llama` only; llama.cpp's default is true)
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`
    pub chat_template: Option<String>,
}

/// A built `tokenizer.json`, with what the caller should tell the user about it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerJson {
    /// The `tokenizer.json` document.
    pub json: Value,
    /// Choices made for the user (a missing pre-tokenizer, a dropped BOS); empty when none.
    pub warnings: Vec<String>,
}

/// A rule of the GGUF tokenizer metadata that the input breaks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VocabError {
    /// `tokenizer.ggml.model` names a tokenizer this module does not convert.
    #[error("tokenizer model `{0}` cannot be converted; depthprune converts `gpt2` (byte-level BPE) and `llama` (SentencePiece BPE)")]
    UnknownModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer this module does not know.
    #[error(
        "pre-tokenizer `{name}` is not known; depthprune knows {}",
        known_pre_names()
    )]
    UnknownPre { name: String },
    /// `tokenizer.ggml.tokens` is empty.
    #[error("`tokenizer.ggml.tokens` is empty")]
    EmptyVocab,
    /// More tokens or merges than any real vocabulary has (see [`crate::base::limits`]).
    #[error("`{key}` has {count} entries, over the limit of {cap}")]
    TooMany {
        key: &'static str,
        count: usize,
        cap: usize,
    },
    /// A per-token array whose length differs from the number of tokens.
    #[error("`{key}` has {actual} entries, but there are {expected} tokens")]
    LengthMismatch {
        key: &'static str,
        expected: usize,
        actual: usize,
    },
    /// A special-token id past the end of the vocabulary.
    #[error("`{key}` is {id}, but the vocabulary has only {n_tokens} tokens")]
    IdOutOfRange {
        key: &'static str,
        id: u32,
        n_tokens: usize,
    },
    /// Two ids spell the same token, so text could not map back to one id.
    #[error(
        "token `{token}` appears twice in `tokenizer.ggml.tokens`, as ids {first} and {second}"
    )]
    DuplicateToken {
        token: String,
        first: usize,
        second: usize,
    },
    /// A merge that is not two vocabulary tokens joined by a space, or whose result is no token.
    #[error("merge {index} (`{merge}`) {why}")]
    BadMerge {
        index: usize,
        merge: String,
        why: String,
    },
    /// A key the chosen tokenizer model cannot do without.
    #[error("`{key}` is missing; the `{model}` tokenizer needs it")]
    Missing {
        key: &'static str,
        model: &'static str,
    },
}

type Result<T> = std::result::Result<T, VocabError>;

/// How llama.cpp splits text before BPE, by family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// llama.cpp's fallback: punctuation runs, GPT-2, digit runs, then digit triples.
    Default,
    /// GPT-2's regex alone.
    Gpt2,
    /// Each digit alone, then GPT-2 (StarCoder, SmolLM).
    DigitsGpt2,
    Llama3,
    Qwen2,
    /// Punctuation runs, GPT-2, digit triples.
    Falcon,
}

/// What llama.cpp sets for a `tokenizer.ggml.pre` value.
#[derive(Debug, Clone, Copy)]
struct PreInfo {
    split: Split,
    /// llama.cpp's `clean_spaces` (tidying " ." on decode), HF's `clean_up_tokenization_spaces`.
    clean_spaces: bool,
    /// llama.cpp's `add_bos` default for this pre (the file's `add_bos_token` overrides it).
    add_bos: bool,
    /// llama.cpp's `ignore_merges`: a word that is already a token is not split further.
    ignore_merges: bool,
}

/// `tokenizer.ggml.pre` values and their settings, from `llama_vocab::impl::load` in
/// llama.cpp's `src/llama-vocab.cpp`.
const PRE_TABLE: &[(&[&str], PreInfo)] = &[
    (&["default"], pre(Split::Default, true)),
    (
        &["llama3", "llama-v3", "llama-bpe", "falcon3"],
        PreInfo {
            split: Split::Llama3,
            clean_spaces: true,
            add_bos: true,
            ignore_merges: true,
        },
    ),
    (&["dbrx", "smaug-bpe"], pre(Split::Llama3, true)),
    (&["falcon"], pre(Split::Falcon, true)),
    (
        &[
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v1-en",
            "jina-v2-es",
            "jina-v2-de",
            "jina-v2-code",
            "roberta-bpe",
            "mpt",
            "olmo",
            "jais",
        ],
        pre(Split::Gpt2, true),
    ),
    (
        &["starcoder", "refact", "codeshell", "exaone", "minerva-7b"],
        pre(Split::DigitsGpt2, true),
    ),
    (&["command-r", "smollm"], pre(Split::DigitsGpt2, false)),
    (&["qwen2"], pre(Split::Qwen2, false)),
    (&["stablelm2", "megrez"], pre(Split::Qwen2, true)),
];

const fn pre(split: Split, clean_spaces: bool) -> PreInfo {
    PreInfo {
        split,
        clean_spaces,
        add_bos: false,
        ignore_merges: false,
    }
}

fn known_pre_names() -> String {
    let names: Vec<String> = PRE_TABLE
        .iter()
        .flat_map(|(names, _)| names.iter().map(|n| format!("`{n}`")))
        .collect();
    names.join(", ")
}

fn lookup_pre(name: &str) -> Option<PreInfo> {
    PRE_TABLE
        .iter()
        .find(|(names, _)| names.contains(&name))
        .map(|(_, info)| *info)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ByteLevel,
    SentencePiece,
}

/// Settings resolved from the metadata and llama.cpp's defaults.
struct Plan {
    kind: Kind,
    pre: PreInfo,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
}

impl GgufVocab {
    fn token_type_of(&self, id: usize) -> i32 {
        self.token_type
            .as_ref()
            .and_then(|t| t.get(id).copied())
            .unwrap_or(1)
    }

    /// Checks the arrays agree and the ids are in range, then settles every default.
    fn plan(&self, warnings: &mut Vec<String>) -> Result<Plan> {
        let kind = match self.model.as_str() {
            "gpt2" => Kind::ByteLevel,
            "llama" => Kind::SentencePiece,
            other => return Err(VocabError::UnknownModel(other.to_string())),
        };
        let n = self.tokens.len();
        if n == 0 {
            return Err(VocabError::EmptyVocab);
        }
        use crate::base::limits::{MAX_MERGES, MAX_VOCAB_TOKENS};
        for (key, count, cap) in [
            ("tokenizer.ggml.tokens", n, MAX_VOCAB_TOKENS),
            ("tokenizer.ggml.merges", self.merges.len(), MAX_MERGES),
        ] {
            if count > cap {
                return Err(VocabError::TooMany { key, count, cap });
            }
        }
        if let Some(s) = &self.scores {
            check_len("tokenizer.ggml.scores", n, s.len())?;
        }
        if let Some(t) = &self.token_type {
            check_len("tokenizer.ggml.token_type", n, t.len())?;
        } else {
            warnings.push(
                "`tokenizer.ggml.token_type` is missing, so no token is marked special".into(),
            );
        }
        let ids = [
            ("tokenizer.ggml.bos_token_id", self.bos_token_id),
            ("tokenizer.ggml.eos_token_id", self.eos_token_id),
            ("tokenizer.ggml.unknown_token_id", self.unk_token_id),
            ("tokenizer.ggml.padding_token_id", self.padding_token_id),
        ];
        for (key, id) in ids {
            if let Some(id) = id {
                if id as usize >= n {
                    return Err(VocabError::IdOutOfRange {
                        key,
                        id,
                        n_tokens: n,
                    });
                }
            }
        }
        let plan = match kind {
            Kind::ByteLevel => {
                let pre = match self.pre.as_deref() {
                    Some(name) => lookup_pre(name).ok_or_else(|| VocabError::UnknownPre {
                        name: name.to_string(),
                    })?,
                    None => {
                        warnings.push(
                            "`tokenizer.ggml.pre` is missing; splitting text with llama.cpp's \
                             `default` pre-tokenizer, which may not match how the model was trained"
                                .into(),
                        );
                        pre(Split::Default, true)
                    }
                };
                if self.merges.is_empty() {
                    warnings.push(
                        "`tokenizer.ggml.merges` is empty, so text is tokenized byte by byte"
                            .into(),
                    );
                }
                Plan {
                    kind,
                    pre,
                    add_bos: self.add_bos_token.unwrap_or(pre.add_bos),
                    add_eos: self.add_eos_token.unwrap_or(false),
                    add_space_prefix: false,
                    bos: self.bos_token_id,
                    eos: self.eos_token_id,
                    unk: self.unk_token_id,
                    pad: self.padding_token_id,
                }
            }
            Kind::SentencePiece => {
                if self.scores.is_none() {
                    return Err(VocabError::Missing {
                        key: "tokenizer.ggml.scores",
                        model: "llama",
                    });
                }
                // llama.cpp's defaults for SentencePiece vocabularies.
                let pick = |id: Option<u32>, default: u32| {
                    id.or(((default as usize) < n).then_some(default))
                };
                Plan {
                    kind,
                    pre: pre(Split::Default, false),
                    add_bos: self.add_bos_token.unwrap_or(true),
                    add_eos: self.add_eos_token.unwrap_or(false),
                    add_space_prefix: self.add_space_prefix.unwrap_or(true),
                    bos: pick(self.bos_token_id, 1),
                    eos: pick(self.eos_token_id, 2),
                    unk: pick(self.unk_token_id, 0),
                    pad: self.padding_token_id,
                }
            }
        };
        Ok(plan)
    }
}

fn check_len(key: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected != actual {
        return Err(VocabError::LengthMismatch {
            key,
            expected,
            actual,
        });
    }
    Ok(())
}

/// A `tokenizer.json` without its bulk: the document with an empty BPE vocabulary, no merges
/// and no added tokens, and those three beside it (merges as token ids). Building a tokenizer
/// from these parts directly ([`super::gguf_tokenizer`]) skips serialising and re-parsing a
/// document that holds a 262k-token vocabulary and half a million merges (Gemma 3), which took
/// about 600 MB of transient memory, more than the model's weights.
pub(super) struct TokenizerParts {
    /// The document, `model.vocab` empty and `model.merges` and `added_tokens` empty lists.
    pub json: Value,
    /// `(left, right)` token ids of each merge, in rank order.
    pub merges: Vec<(usize, usize)>,
    /// The added tokens, as `tokenizer.json` lists them.
    pub added: Vec<Value>,
    pub warnings: Vec<String>,
}

/// Builds the `tokenizer.json` for `v`.
pub fn to_tokenizer_json(v: &GgufVocab) -> crate::Result<TokenizerJson> {
    let TokenizerParts {
        mut json,
        merges,
        added,
        warnings,
    } = tokenizer_parts(v)?;
    let mut vocab = Map::with_capacity(v.tokens.len());
    for (id, token) in v.tokens.iter().enumerate() {
        vocab.insert(token.clone(), json!(id));
    }
    let merges: Vec<Value> = merges
        .into_iter()
        .map(|(l, r)| json!([v.tokens[l], v.tokens[r]]))
        .collect();
    json["model"]["vocab"] = Value::Object(vocab);
    json["model"]["merges"] = Value::Array(merges);
    json["added_tokens"] = Value::Array(added);
    Ok(TokenizerJson { json, warnings })
}

/// The parts of the `tokenizer.json` for `v` (see [`TokenizerParts`]).
pub(super) fn tokenizer_parts(v: &GgufVocab) -> crate::Result<TokenizerParts> {
    let mut warnings = Vec::new();
    let plan = v.plan(&mut warnings)?;
    let index = token_index(&v.tokens)?;

    let merges = match plan.kind {
        Kind::ByteLevel => file_merges(&v.merges, &index)?,
        Kind::SentencePiece => score_merges(v, &index),
    };
    let model = match plan.kind {
        Kind::ByteLevel => json!({
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": plan.pre.ignore_merges,
            "vocab": {},
            "merges": [],
        }),
        Kind::SentencePiece => {
            let byte_fallback = (0..=255u8).all(|b| index.contains_key(byte_token(b).as_str()));
            if !byte_fallback {
                warnings.push(
                    "the vocabulary lacks the byte tokens `<0x00>`…`<0xFF>`, so characters \
                     outside it become the unknown token"
                        .into(),
                );
            }
            json!({
                "type": "BPE",
                "dropout": null,
                "unk_token": plan.unk.map(|id| v.tokens[id as usize].clone()),
                "continuing_subword_prefix": null,
                "end_of_word_suffix": null,
                "fuse_unk": true,
                "byte_fallback": byte_fallback,
                "ignore_merges": false,
                "vocab": {},
                "merges": [],
            })
        }
    };

    let (normalizer, pre_tokenizer, decoder) = match plan.kind {
        Kind::ByteLevel => (
            Value::Null,
            byte_level_pre_tokenizer(plan.pre.split),
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
        ),
        Kind::SentencePiece => sentencepiece_parts(plan.add_space_prefix),
    };

    let json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor(v, &plan, &mut warnings),
        "decoder": decoder,
        "model": model,
    });
    Ok(TokenizerParts {
        json,
        merges,
        added: added_tokens(v),
        warnings,
    })
}

/// Builds the `tokenizer_config.json` for `v`: special tokens, BOS/EOS flags, chat template.
pub fn tokenizer_config_json(v: &GgufVocab) -> crate::Result<Value> {
    let plan = v.plan(&mut Vec::new())?;
    let name = |id: Option<u32>| match id {
        Some(id) => json!(v.tokens[id as usize]),
        None => Value::Null,
    };
    let mut decoder = Map::new();
    for t in added_tokens(v) {
        let id = t["id"].to_string();
        let mut entry = t;
        if let Some(obj) = entry.as_object_mut() {
            obj.remove("id");
        }
        decoder.insert(id, entry);
    }
    let mut config = json!({
        "add_bos_token": plan.add_bos,
        "add_eos_token": plan.add_eos,
        "added_tokens_decoder": decoder,
        "bos_token": name(plan.bos),
        "eos_token": name(plan.eos),
        "unk_token": name(plan.unk),
        "pad_token": name(plan.pad),
        "clean_up_tokenization_spaces": plan.pre.clean_spaces,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    if let Some(template) = &v.chat_template {
        config["chat_template"] = json!(template);
    }
    Ok(config)
}

/// Token text → id, refusing duplicates.
fn token_index(tokens: &[String]) -> Result<HashMap<&str, usize>> {
    let mut index = HashMap::with_capacity(tokens.len());
    for (id, token) in tokens.iter().enumerate() {
        if let Some(first) = index.insert(token.as_str(), id) {
            return Err(VocabError::DuplicateToken {
                token: token.clone(),
                first,
                second: id,
            });
        }
    }
    Ok(index)
}

/// The file's merges as `(left, right)` token ids, checked against the vocabulary the way the
/// `tokenizers` library will check them, so a bad file fails here with the merge's index.
fn file_merges(merges: &[String], index: &HashMap<&str, usize>) -> Result<Vec<(usize, usize)>> {
    let bad = |i: usize, merge: &str, why: String| VocabError::BadMerge {
        index: i,
        merge: merge.to_string(),
        why,
    };
    let mut out = Vec::with_capacity(merges.len());
    for (i, merge) in merges.iter().enumerate() {
        // llama.cpp splits at the first space after the first byte (`find(' ', 1)`), so a left
        // half may itself start with a space.
        let at = merge
            .as_bytes()
            .iter()
            .skip(1)
            .position(|&b| b == b' ')
            .map(|p| p + 1)
            .ok_or_else(|| bad(i, merge, "has no space between two tokens".into()))?;
        let (left, right) = (&merge[..at], &merge[at + 1..]);
        let id = |part: &str| {
            index
                .get(part)
                .copied()
                .ok_or_else(|| bad(i, merge, format!("uses `{part}`, which is not a token")))
        };
        let pair = (id(left)?, id(right)?);
        if !index.contains_key(format!("{left}{right}").as_str()) {
            return Err(bad(
                i,
                merge,
                format!("makes `{left}{right}`, which is not a token"),
            ));
        }
        out.push(pair);
    }
    Ok(out)
}

/// Whether a SentencePiece token can take part in a merge: not a control, unknown, unused or
/// byte token, which text never reaches by merging.
fn mergeable(v: &GgufVocab, id: usize) -> bool {
    !matches!(
        v.token_type_of(id),
        TOKEN_UNKNOWN | TOKEN_CONTROL | TOKEN_UNUSED | TOKEN_BYTE
    )
}

/// Merges implied by SentencePiece scores: every split of a token into two tokens, ordered by
/// the whole token's score (best first), then by id, so the output is deterministic.
fn score_merges(v: &GgufVocab, index: &HashMap<&str, usize>) -> Vec<(usize, usize)> {
    let scores = v.scores.as_deref().unwrap_or(&[]);
    let mut found: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (id, token) in v.tokens.iter().enumerate() {
        if !mergeable(v, id) {
            continue;
        }
        let score = scores.get(id).copied().unwrap_or(0.0);
        for (at, _) in token.char_indices().skip(1) {
            let (l, r) = token.split_at(at);
            if let (Some(&li), Some(&ri)) = (index.get(l), index.get(r)) {
                if mergeable(v, li) && mergeable(v, ri) {
                    found.push((score, id, li, ri));
                }
            }
        }
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    found.into_iter().map(|(_, _, l, r)| (l, r)).collect()
}

/// SentencePiece's name for a byte-fallback token.
fn byte_token(b: u8) -> String {
    format!("<0x{b:02X}>")
}

/// Control and unknown tokens as special added tokens, user-defined ones as plain added tokens.
fn added_tokens(v: &GgufVocab) -> Vec<Value> {
    let Some(types) = &v.token_type else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (id, (token, &ty)) in v.tokens.iter().zip(types).enumerate() {
        let special = match ty {
            TOKEN_CONTROL | TOKEN_UNKNOWN => true,
            TOKEN_USER_DEFINED => false,
            _ => continue,
        };
        out.push(json!({
            "id": id,
            "content": token,
            "single_word": false,
            "lstrip": false,
            "rstrip": false,
            "normalized": false,
            "special": special,
        }));
    }
    out
}

fn split(pattern: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false})
}

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

/// The pre-tokenizer for a byte-level vocabulary. llama.cpp applies its regexes one after
/// another, each splitting the pieces of the last and keeping the text between matches; HF's
/// `Split` with `Isolated` behaviour does the same. Where the last regex is GPT-2's, HF's own
/// form (`ByteLevel` with `use_regex`) is used.
fn byte_level_pre_tokenizer(s: Split) -> Value {
    let steps = match s {
        Split::Gpt2 => return byte_level(true),
        Split::DigitsGpt2 => vec![
            json!({"type": "Digits", "individual_digits": true}),
            byte_level(true),
        ],
        Split::Llama3 => vec![split(LLAMA3_SPLIT), byte_level(false)],
        Split::Qwen2 => vec![split(QWEN2_SPLIT), byte_level(false)],
        Split::Default => vec![
            split(r"[\p{P}\$\+<=>\^~\|]+"),
            split(GPT2_SPLIT),
            split(r"\p{N}+"),
            split("[0-9][0-9][0-9]"),
            byte_level(false),
        ],
        Split::Falcon => vec![
            split(r"[\p{P}\$\+<=>\^~\|`]+"),
            split(GPT2_SPLIT),
            split("[0-9][0-9][0-9]"),
            byte_level(false),
        ],
    };
    json!({"type": "Sequence", "pretokenizers": steps})
}

/// Normalizer, pre-tokenizer and decoder for a SentencePiece vocabulary: spaces become `▁`
/// (with one prepended to each run of text when `add_space_prefix`, as llama.cpp does after BOS
/// and after every special token), and decoding undoes that and joins byte tokens.
fn sentencepiece_parts(add_space_prefix: bool) -> (Value, Value, Value) {
    let mut norm = Vec::new();
    if add_space_prefix {
        norm.push(json!({"type": "Prepend", "prepend": SPIECE_SPACE}));
    }
    norm.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": SPIECE_SPACE}));
    let mut dec = vec![
        json!({"type": "Replace", "pattern": {"String": SPIECE_SPACE}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_space_prefix {
        dec.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    (
        json!({"type": "Sequence", "normalizers": norm}),
        Value::Null,
        json!({"type": "Sequence", "decoders": dec}),
    )
}

/// Adds BOS / EOS around each sequence when the file asks for them.
fn post_processor(v: &GgufVocab, plan: &Plan, warnings: &mut Vec<String>) -> Value {
    let mut wanted = |flag: bool, id: Option<u32>, what: &str| -> Option<(String, u32)> {
        if !flag {
            return None;
        }
        match id {
            Some(id) => Some((v.tokens[id as usize].clone(), id)),
            None => {
                warnings.push(format!(
                    "`tokenizer.ggml.add_{what}_token` is set but `tokenizer.ggml.{what}_token_id` \
                     is missing, so no {} token is added",
                    what.to_uppercase()
                ));
                None
            }
        }
    };
    let bos = wanted(plan.add_bos, plan.bos, "bos");
    let eos = wanted(plan.add_eos, plan.eos, "eos");
    let byte_level_post = json!({
        "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true
    });
    if bos.is_none() && eos.is_none() {
        return match plan.kind {
            Kind::ByteLevel => byte_level_post,
            Kind::SentencePiece => Value::Null,
        };
    }
    let special =
        |t: &(String, u32), type_id: u32| json!({"SpecialToken": {"id": t.0, "type_id": type_id}});
    let sequence = |name: &str, type_id: u32| json!({"Sequence": {"id": name, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    for (seq, type_id, out) in [("A", 0, &mut single), ("B", 1, &mut pair)] {
        out.extend(bos.iter().map(|t| special(t, type_id)));
        out.push(sequence(seq, type_id));
        out.extend(eos.iter().map(|t| special(t, type_id)));
    }
    let pair: Vec<Value> = single.iter().cloned().chain(pair).collect();
    let mut specials = Map::new();
    for t in bos.iter().chain(eos.iter()) {
        specials.insert(
            t.0.clone(),
            json!({"id": t.0, "ids": [t.1], "tokens": [t.0]}),
        );
    }
    let template = json!({
        "type": "TemplateProcessing",
        "single": single,
        "pair": pair,
        "special_tokens": specials,
    });
    match plan.kind {
        Kind::ByteLevel => json!({"type": "Sequence", "processors": [byte_level_post, template]}),
        Kind::SentencePiece => template,
    }
}

#[cfg(test)]
mod tests;
