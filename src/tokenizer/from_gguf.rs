//! The one place that reads a GGUF file's `tokenizer.*` metadata into a [`GgufVocab`], and builds
//! a ready [`HfTokenizer`] from it. Used by evaluation (`eval FILE.gguf`) and by conversion to an
//! HF folder.

use super::gguf_vocab::{to_tokenizer_json, tokenizer_config_json, GgufVocab};
use super::hf::HfTokenizer;
use crate::checkpoint::gguf::{Array, GgufModel, Metadata, Value};
use crate::error::{Error, Result};
use std::path::Path;

/// Reads the tokenizer metadata of `meta` (from the file at `path`, named in errors).
pub fn vocab_from_metadata(meta: &Metadata, path: &Path) -> Result<GgufVocab> {
    let bad =
        |key: &str, want: &str| Error::corrupt(path, format!("`tokenizer.{key}` is not {want}"));
    let string = |key: &str| -> Result<Option<String>> {
        match meta.get(&format!("tokenizer.{key}")) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| bad(key, "a UTF-8 string")),
        }
    };
    let id = |key: &str| -> Result<Option<u32>> {
        match meta.get(&format!("tokenizer.{key}")) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| bad(key, "a token id")),
        }
    };
    let flag = |key: &str| -> Result<Option<bool>> {
        match meta.get(&format!("tokenizer.{key}")) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(bad(key, "a boolean")),
        }
    };
    fn array<'a>(meta: &'a Metadata, key: &str) -> Option<&'a Array> {
        meta.get(&format!("tokenizer.{key}"))
            .and_then(Value::as_array)
    }
    let strings = |key: &str| -> Result<Vec<String>> {
        match array(meta, key) {
            None => Ok(Vec::new()),
            Some(Array::String(v)) => v
                .iter()
                .map(|b| String::from_utf8(b.clone()).map_err(|_| bad(key, "UTF-8 text")))
                .collect(),
            Some(_) => Err(bad(key, "an array of strings")),
        }
    };
    let model = string("ggml.model")?.ok_or_else(|| {
        Error::corrupt(
            path,
            "no `tokenizer.ggml.model`: the file carries no tokenizer",
        )
    })?;
    let scores = match array(meta, "ggml.scores") {
        None => None,
        Some(Array::F32(v)) => Some(v.clone()),
        Some(Array::F64(v)) => Some(v.iter().map(|&x| x as f32).collect()),
        Some(_) => return Err(bad("ggml.scores", "an array of floats")),
    };
    let token_type = match array(meta, "ggml.token_type") {
        None => None,
        Some(Array::I32(v)) => Some(v.clone()),
        Some(Array::U32(v)) => Some(v.iter().map(|&x| x as i32).collect()),
        Some(_) => return Err(bad("ggml.token_type", "an array of 32-bit integers")),
    };
    Ok(GgufVocab {
        model,
        pre: string("ggml.pre")?,
        tokens: strings("ggml.tokens")?,
        scores,
        token_type,
        merges: strings("ggml.merges")?,
        bos_token_id: id("ggml.bos_token_id")?,
        eos_token_id: id("ggml.eos_token_id")?,
        unk_token_id: id("ggml.unknown_token_id")?,
        padding_token_id: id("ggml.padding_token_id")?,
        add_bos_token: flag("ggml.add_bos_token")?,
        add_eos_token: flag("ggml.add_eos_token")?,
        add_space_prefix: flag("ggml.add_space_prefix")?,
        chat_template: string("chat_template")?,
    })
}

/// The tokenizer of a GGUF model, with the warnings its conversion raised (for the caller to
/// show).
pub fn gguf_tokenizer(model: &GgufModel) -> Result<(HfTokenizer, Vec<String>)> {
    let vocab = vocab_from_metadata(model.metadata(), model.path())?;
    let built = to_tokenizer_json(&vocab)?;
    let config = tokenizer_config_json(&vocab)?;
    let tok = HfTokenizer::from_json(model.path(), &built.json, &config)?;
    Ok((tok, built.warnings))
}

/// The tokenizer of a checkpoint: a `.gguf` file's metadata, or an HF folder's
/// `tokenizer.json`; with the warnings a GGUF conversion raised.
pub fn open_tokenizer(path: &Path) -> Result<(HfTokenizer, Vec<String>)> {
    let gguf = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if gguf {
        gguf_tokenizer(&GgufModel::open(path)?)
    } else {
        Ok((HfTokenizer::open(path)?, Vec::new()))
    }
}
