//! The reverse of [`super::gguf_vocab`]: an HF folder's `tokenizer.json` and
//! `tokenizer_config.json` as GGUF `tokenizer.*` metadata, as llama.cpp's `convert_hf_to_gguf.py`
//! writes it for byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`).
//!
//! - `tokens`: the BPE vocabulary and the added tokens by id, padded to the model's vocabulary
//!   size with `[PAD{id}]` entries of type unused, as llama.cpp's converter pads;
//! - `token_type`: added tokens marked special are control (3), other added tokens user-defined
//!   (4), the padding unused (5), the rest normal (1);
//! - `merges` as `"left right"` strings;
//! - `pre`: llama.cpp picks it by hashing how a reference text tokenizes; here it is read off the
//!   pre-tokenizer's structure, matching the forms [`super::gguf_vocab`] writes (and HF's own
//!   SmolLM, Llama 3, Qwen2 and GPT-2 tokenizers): `Digits` + `ByteLevel` is `smollm`, the Llama 3
//!   and Qwen2 `Split` regexes are `llama-bpe` and `qwen2`, `ByteLevel` alone is `gpt-2`, and
//!   llama.cpp's default chain is `default`. Anything else is written as `default` with a warning;
//! - BOS/EOS/UNK/PAD ids from `tokenizer_config.json` (else `config.json`), `add_bos_token` /
//!   `add_eos_token` from `tokenizer_config.json` or else the post-processor's template, and the
//!   chat template from `tokenizer_config.json` or `chat_template.jinja`.
//!
//! Other tokenizer models (SentencePiece BPE, Unigram, WordPiece) are not written: the caller
//! gets the reason and writes a GGUF without a tokenizer.

use super::gguf_vocab::{
    GPT2_SPLIT, LLAMA3_SPLIT, QWEN2_SPLIT, TOKEN_CONTROL, TOKEN_UNUSED, TOKEN_USER_DEFINED,
};
use super::hf::{config_chat_template, read_json, token_text};
use crate::checkpoint::gguf::{Array, Value as Gv};
use crate::error::{Error, IoContext, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

const TOKEN_NORMAL: i32 = 1;

/// What [`gguf_tokenizer_metadata`] found.
#[derive(Debug, Clone)]
pub enum TokenizerMetadata {
    /// The `tokenizer.*` entries, in the order llama.cpp writes them, and notes for the user.
    Written {
        entries: Vec<(String, Gv)>,
        warnings: Vec<String>,
    },
    /// No tokenizer can be written, and why.
    Skipped(String),
}

/// The pre-tokenizer steps of a `tokenizer.json` (one, or a `Sequence`'s list).
fn steps(pre: &Value) -> Vec<&Value> {
    match pre.get("type").and_then(Value::as_str) {
        Some("Sequence") => pre
            .get("pretokenizers")
            .and_then(Value::as_array)
            .map(|v| v.iter().collect())
            .unwrap_or_default(),
        Some(_) => vec![pre],
        None => Vec::new(),
    }
}

fn kind(step: &Value) -> &str {
    step.get("type").and_then(Value::as_str).unwrap_or("")
}

fn byte_level_regex(step: &Value) -> Option<bool> {
    (kind(step) == "ByteLevel").then(|| {
        step.get("use_regex")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    })
}

fn split_regex(step: &Value) -> Option<&str> {
    if kind(step) != "Split" {
        return None;
    }
    step.get("pattern")?.get("Regex")?.as_str()
}

/// The `tokenizer.ggml.pre` name of a byte-level pre-tokenizer, if it is one llama.cpp knows.
pub fn detect_pre(pre: &Value) -> Option<&'static str> {
    let s = steps(pre);
    match s.as_slice() {
        [b] if byte_level_regex(b) == Some(true) => Some("gpt-2"),
        [d, b]
            if kind(d) == "Digits"
                && d.get("individual_digits").and_then(Value::as_bool) == Some(true)
                && byte_level_regex(b) == Some(true) =>
        {
            Some("smollm")
        }
        [r, b] if byte_level_regex(b) == Some(false) => match split_regex(r)? {
            x if x == LLAMA3_SPLIT => Some("llama-bpe"),
            x if x == QWEN2_SPLIT => Some("qwen2"),
            _ => None,
        },
        [p, g, n, t, b]
            if byte_level_regex(b) == Some(false)
                && split_regex(p) == Some(r"[\p{P}\$\+<=>\^~\|]+")
                && split_regex(g) == Some(GPT2_SPLIT)
                && split_regex(n) == Some(r"\p{N}+")
                && split_regex(t) == Some("[0-9][0-9][0-9]") =>
        {
            Some("default")
        }
        _ => None,
    }
}

/// Whether the pre-tokenizer (or, lacking one, the decoder) is byte-level.
fn is_byte_level(tok: &Value) -> bool {
    let pre = tok.get("pre_tokenizer").unwrap_or(&Value::Null);
    steps(pre).iter().any(|s| kind(s) == "ByteLevel")
        || (pre.is_null() && tok.get("decoder").is_some_and(|d| kind(d) == "ByteLevel"))
}

/// The `TemplateProcessing` post-processor, alone or inside a `Sequence`.
fn template(post: &Value) -> Option<&Value> {
    match kind(post) {
        "TemplateProcessing" => Some(post),
        "Sequence" => post
            .get("processors")?
            .as_array()?
            .iter()
            .find(|p| kind(p) == "TemplateProcessing"),
        _ => None,
    }
}

/// Whether the template's single-sequence form starts (`first`) or ends with a special token.
fn template_adds(post: &Value, first: bool) -> bool {
    let Some(single) = template(post)
        .and_then(|t| t.get("single"))
        .and_then(Value::as_array)
    else {
        return false;
    };
    let end = if first { single.first() } else { single.last() };
    end.is_some_and(|e| e.get("SpecialToken").is_some())
}

/// The `tokenizer.*` metadata for the HF folder `dir`, whose model has `vocab_size` embedding
/// rows. A folder without `tokenizer.json`, or with a tokenizer other than byte-level BPE, is
/// [`TokenizerMetadata::Skipped`]; malformed files are errors naming the file.
pub fn gguf_tokenizer_metadata(dir: &Path, vocab_size: usize) -> Result<TokenizerMetadata> {
    let path = dir.join("tokenizer.json");
    let Some(tok) = read_json(&path)? else {
        return Ok(TokenizerMetadata::Skipped(format!(
            "`{}` has no tokenizer.json",
            dir.display()
        )));
    };
    let bad = |what: String| Error::corrupt(&path, what);
    let model = tok
        .get("model")
        .ok_or_else(|| bad("no `model` entry".into()))?;
    let model_type = model.get("type").and_then(Value::as_str).unwrap_or("");
    if model_type != "BPE" || !is_byte_level(&tok) {
        return Ok(TokenizerMetadata::Skipped(format!(
            "`{}`: only byte-level BPE tokenizers are written to GGUF, and this is {} {}",
            path.display(),
            if is_byte_level(&tok) {
                "a byte-level"
            } else {
                "a non-byte-level"
            },
            if model_type.is_empty() {
                "model of unknown type"
            } else {
                model_type
            }
        )));
    }
    let mut warnings = Vec::new();

    // Tokens by id: the BPE vocabulary, then the added tokens over it.
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("`model.vocab` is not an object".into()))?;
    let mut by_id: Vec<Option<(String, i32)>> = Vec::new();
    let mut place = |id: u64, text: &str, ty: i32, added: bool| -> Result<()> {
        let id = usize::try_from(id)
            .ok()
            .filter(|&i| i < (1 << 24))
            .ok_or_else(|| bad(format!("token id {id} of `{text}` is implausibly large")))?;
        if by_id.len() <= id {
            by_id.resize(id + 1, None);
        }
        match &by_id[id] {
            Some((old, _)) if old != text && !added => {
                Err(bad(format!("tokens `{old}` and `{text}` share id {id}")))
            }
            _ => {
                by_id[id] = Some((text.to_string(), ty));
                Ok(())
            }
        }
    };
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad(format!("the id of token `{text}` is not a number")))?;
        place(id, text, TOKEN_NORMAL, false)?;
    }
    if let Some(added) = tok.get("added_tokens").and_then(Value::as_array) {
        for a in added {
            let (Some(id), Some(text)) = (
                a.get("id").and_then(Value::as_u64),
                a.get("content").and_then(Value::as_str),
            ) else {
                return Err(bad("an added token lacks `id` or `content`".into()));
            };
            let special = a.get("special").and_then(Value::as_bool).unwrap_or(false);
            let ty = if special {
                TOKEN_CONTROL
            } else {
                TOKEN_USER_DEFINED
            };
            place(id, text, ty, true)?;
        }
    }
    if by_id.len() < vocab_size {
        by_id.resize(vocab_size, None);
    } else if by_id.len() > vocab_size {
        warnings.push(format!(
            "the tokenizer has {} tokens but the model only {vocab_size} embedding rows",
            by_id.len()
        ));
    }
    let mut padded = 0;
    let (tokens, types): (Vec<String>, Vec<i32>) = by_id
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                padded += 1;
                (format!("[PAD{i}]"), TOKEN_UNUSED)
            })
        })
        .unzip();
    if padded > 0 {
        warnings.push(format!(
            "{padded} ids without a token were filled with `[PAD{{id}}]` entries (unused)"
        ));
    }
    let index: HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();

    let merges: Vec<Vec<u8>> = match model.get("merges") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, m)| match m {
                Value::String(s) => Ok(s.clone().into_bytes()),
                Value::Array(pair) => match pair.as_slice() {
                    [Value::String(l), Value::String(r)] => Ok(format!("{l} {r}").into_bytes()),
                    _ => Err(bad(format!("merge {i} is not a pair of strings"))),
                },
                _ => Err(bad(format!("merge {i} is neither a string nor a pair"))),
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(bad("`model.merges` is not a list".into())),
    };

    let pre = match detect_pre(tok.get("pre_tokenizer").unwrap_or(&Value::Null)) {
        Some(p) => p,
        None => {
            warnings.push(format!(
                "`{}`: the pre-tokenizer is not one llama.cpp names (smollm, llama-bpe, qwen2, gpt-2, default); wrote `tokenizer.ggml.pre = default`, so llama.cpp may split text differently",
                path.display()
            ));
            "default"
        }
    };

    let cfg_path = dir.join("tokenizer_config.json");
    let cfg = read_json(&cfg_path)?.unwrap_or(Value::Null);
    let model_cfg = read_json(&dir.join("config.json"))?.unwrap_or(Value::Null);
    let id_of = |key: &str, cfg_key: &str| -> Option<u32> {
        if let Some(text) = token_text(cfg.get(key)) {
            if let Some(&id) = index.get(text.as_str()) {
                return Some(id);
            }
        }
        match model_cfg.get(cfg_key) {
            Some(Value::Number(n)) => n.as_u64().map(|x| x as u32),
            Some(Value::Array(a)) => a.first().and_then(Value::as_u64).map(|x| x as u32),
            _ => None,
        }
    };
    let unk = id_of("unk_token", "unk_token_id").or_else(|| {
        model
            .get("unk_token")
            .and_then(Value::as_str)
            .and_then(|t| index.get(t).copied())
    });
    let ids = [
        (
            "tokenizer.ggml.bos_token_id",
            id_of("bos_token", "bos_token_id"),
        ),
        (
            "tokenizer.ggml.eos_token_id",
            id_of("eos_token", "eos_token_id"),
        ),
        ("tokenizer.ggml.unknown_token_id", unk),
        (
            "tokenizer.ggml.padding_token_id",
            id_of("pad_token", "pad_token_id"),
        ),
    ];
    let post = tok.get("post_processor").unwrap_or(&Value::Null);
    let add_bos = cfg
        .get("add_bos_token")
        .and_then(Value::as_bool)
        .unwrap_or_else(|| template_adds(post, true));
    let add_eos = cfg
        .get("add_eos_token")
        .and_then(Value::as_bool)
        .unwrap_or_else(|| template_adds(post, false));

    let jinja = dir.join("chat_template.jinja");
    let chat_template = if jinja.is_file() {
        Some(std::fs::read_to_string(&jinja).at(&jinja)?)
    } else {
        config_chat_template(&cfg)
    };

    let mut entries: Vec<(String, Gv)> = vec![
        ("tokenizer.ggml.model".into(), Gv::string("gpt2")),
        ("tokenizer.ggml.pre".into(), Gv::string(pre)),
        (
            "tokenizer.ggml.tokens".into(),
            Gv::Array(Array::String(
                tokens.into_iter().map(String::into_bytes).collect(),
            )),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Gv::Array(Array::I32(types)),
        ),
        (
            "tokenizer.ggml.merges".into(),
            Gv::Array(Array::String(merges)),
        ),
    ];
    for (key, id) in ids {
        if let Some(id) = id {
            entries.push((key.into(), Gv::U32(id)));
        }
    }
    entries.push(("tokenizer.ggml.add_bos_token".into(), Gv::Bool(add_bos)));
    entries.push(("tokenizer.ggml.add_eos_token".into(), Gv::Bool(add_eos)));
    if let Some(t) = chat_template {
        entries.push(("tokenizer.chat_template".into(), Gv::string(&t)));
    }
    Ok(TokenizerMetadata::Written { entries, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pre_tokenizers_are_named() {
        let bl = |r: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "use_regex": r});
        let split =
            |p: &str| json!({"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated"});
        let seq = |v: Vec<Value>| json!({"type": "Sequence", "pretokenizers": v});
        assert_eq!(detect_pre(&bl(true)), Some("gpt-2"));
        assert_eq!(
            detect_pre(&seq(vec![
                json!({"type": "Digits", "individual_digits": true}),
                bl(true)
            ])),
            Some("smollm")
        );
        assert_eq!(
            detect_pre(&seq(vec![split(LLAMA3_SPLIT), bl(false)])),
            Some("llama-bpe")
        );
        assert_eq!(
            detect_pre(&seq(vec![split(QWEN2_SPLIT), bl(false)])),
            Some("qwen2")
        );
        assert_eq!(detect_pre(&seq(vec![split("x+"), bl(false)])), None);
        assert_eq!(detect_pre(&Value::Null), None);
    }
}
