//! The one place that reads a GGUF file's `tokenizer.*` metadata into a [`GgufVocab`], and builds
//! a ready [`HfTokenizer`] from it. Used by evaluation (`eval FILE.gguf`) and by conversion to an
//! HF folder.

use super::gguf_vocab::{tokenizer_config_json, tokenizer_parts, GgufVocab, TokenizerParts};
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
    let config = tokenizer_config_json(&vocab)?;
    let (inner, warnings) = build(&vocab, model.path())?;
    drop(vocab);
    Ok((
        HfTokenizer::from_inner(model.path(), inner, &config),
        warnings,
    ))
}

/// The tokenizer that [`super::to_tokenizer_json`] describes, built without that document: the
/// small parts are parsed from JSON, the BPE vocabulary and merges are handed to the model's
/// builder directly, and the added tokens are added last, as `tokenizers` does when it reads a
/// `tokenizer.json`. `origin` names the checkpoint in errors.
fn build(v: &GgufVocab, origin: &Path) -> Result<(tokenizers::Tokenizer, Vec<String>)> {
    let bad = |e: String| Error::corrupt(origin, format!("cannot load the tokenizer: {e}"));
    let TokenizerParts {
        json,
        merges,
        added,
        warnings,
    } = tokenizer_parts(v)?;
    let settings = &json["model"];
    let flag = |key: &str| settings[key].as_bool().unwrap_or(false);
    let mut bpe = tokenizers::models::bpe::BPE::builder()
        .fuse_unk(flag("fuse_unk"))
        .byte_fallback(flag("byte_fallback"))
        .ignore_merges(flag("ignore_merges"));
    if let Some(unk) = settings["unk_token"].as_str() {
        bpe = bpe.unk_token(unk.to_string());
    }
    let vocab: tokenizers::models::bpe::Vocab = (v.tokens.iter().enumerate())
        .map(|(id, t)| (t.clone(), id as u32))
        .collect();
    let merges = (merges.into_iter())
        .map(|(l, r)| (v.tokens[l].clone(), v.tokens[r].clone()))
        .collect();
    let bpe = bpe
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let bytes = serde_json::to_vec(&json).map_err(|e| bad(e.to_string()))?;
    let mut tok = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| bad(e.to_string()))?;
    tok.with_model(bpe);
    let added = (added.into_iter())
        .map(serde_json::from_value::<tokenizers::AddedToken>)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    tok.add_tokens(added).map_err(|e| bad(e.to_string()))?;
    Ok((tok, warnings))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::to_tokenizer_json;
    use std::str::FromStr;

    /// A byte-level vocabulary (GPT-2's byte characters for ASCII letters, space and digits, a
    /// few merges, a control and a user-defined token) and a SentencePiece one (scores, byte
    /// fallback tokens, an unknown token).
    fn vocabs() -> Vec<GgufVocab> {
        let mut bl: Vec<String> = vec!["<|endoftext|>".into(), "<think>".into()];
        bl.extend(('a'..='z').chain('0'..='9').map(String::from));
        bl.extend(["Ġ", "he", "ll", "hell", "hello", "Ġw", "12"].map(String::from));
        let mut types = vec![3, 4];
        types.resize(bl.len(), 1);
        let byte_level = GgufVocab {
            model: "gpt2".into(),
            pre: Some("smollm".into()),
            tokens: bl,
            token_type: Some(types),
            merges: ["h e", "l l", "he ll", "hell o", "Ġ w", "1 2"]
                .map(String::from)
                .into(),
            bos_token_id: Some(0),
            eos_token_id: Some(0),
            add_bos_token: Some(true),
            ..Default::default()
        };
        let mut sp: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).into();
        sp.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        sp.extend(["▁", "h", "i", "e", "hi", "▁h", "▁hi", "he"].map(String::from));
        let mut types = vec![2, 3, 3];
        types.extend(std::iter::repeat_n(6, 256));
        types.resize(sp.len(), 1);
        let scores = (0..sp.len()).map(|i| -(i as f32)).collect();
        let sentencepiece = GgufVocab {
            model: "llama".into(),
            tokens: sp,
            token_type: Some(types),
            scores: Some(scores),
            unk_token_id: Some(0),
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            ..Default::default()
        };
        vec![byte_level, sentencepiece]
    }

    #[test]
    fn direct_build_tokenizes_as_the_tokenizer_json_does() {
        let texts = [
            "hello world 123",
            "<|endoftext|>hi <think> he",
            "hi hehe é ☃ <s> x",
            "",
        ];
        for v in vocabs() {
            let json = to_tokenizer_json(&v).unwrap().json;
            let want = tokenizers::Tokenizer::from_str(&json.to_string()).unwrap();
            let (got, _) = build(&v, Path::new("t.gguf")).unwrap();
            assert_eq!(got.get_vocab(true), want.get_vocab(true), "{}", v.model);
            for text in texts {
                let (g, w) = (
                    got.encode(text, true).unwrap(),
                    want.encode(text, true).unwrap(),
                );
                assert_eq!(g.get_ids(), w.get_ids(), "{}: {text:?}", v.model);
                assert!(g.get_ids().len() > usize::from(!text.is_empty()) || text.is_empty());
                assert_eq!(
                    got.decode(g.get_ids(), false).unwrap(),
                    want.decode(w.get_ids(), false).unwrap()
                );
            }
        }
    }
}
