//! An HF tokenizer folder: `tokenizer.json` (read by the `tokenizers` crate), the BOS/EOS tokens,
//! `add_bos_token` and the chat template from `tokenizer_config.json` (or `chat_template.jinja`),
//! and end-of-sequence ids from `generation_config.json` and `config.json`. Chat templates render
//! with minijinja under jinja2's settings as transformers uses them.

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One chat message.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A tokenizer with the special tokens its model uses.
pub struct HfTokenizer {
    dir: PathBuf,
    inner: tokenizers::Tokenizer,
    bos: Option<(String, u32)>,
    eos_token: Option<String>,
    eos_ids: Vec<u32>,
    add_bos: Option<bool>,
    chat_template: Option<String>,
}

/// The `chat_template` of a `tokenizer_config.json`: a string, or from a list of named
/// templates the one named `default`, else the first.
pub(crate) fn config_chat_template(cfg: &Value) -> Option<String> {
    match cfg.get("chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(list)) => {
            let named = |n: &str| {
                list.iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some(n))
            };
            named("default")
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(String::from)
        }
        _ => None,
    }
}

pub(crate) fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = crate::base::limits::read_text_capped(path, crate::base::limits::MAX_JSON_BYTES)?;
    let v = serde_json::from_str(&text)
        .map_err(|e| Error::corrupt(path, format!("not valid JSON: {e}")))?;
    Ok(Some(v))
}

/// A special token given as `"<s>"` or as `{"content": "<s>", ...}`.
pub(crate) fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

/// Token ids given as a number or a list of numbers.
fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| x as u32).into_iter().collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

impl HfTokenizer {
    /// Opens the tokenizer in an HF folder.
    pub fn open(dir: &Path) -> Result<Self> {
        crate::base::links::check_folder(dir)?;
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::Invalid(format!(
                "`{}`: no `tokenizer.json` in this folder",
                dir.display()
            )));
        }
        let text =
            crate::base::limits::read_text_capped(&path, crate::base::limits::MAX_TOKENIZER_BYTES)?;
        let inner = text
            .parse::<tokenizers::Tokenizer>()
            .map_err(|e| Error::corrupt(&path, format!("cannot read the tokenizer: {e}")))?;
        let cfg = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let gen = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);
        let model_cfg = read_json(&dir.join("config.json"))?.unwrap_or(Value::Null);
        let jinja = dir.join("chat_template.jinja");
        let jinja = if jinja.is_file() {
            Some(crate::base::limits::read_text_capped(
                &jinja,
                crate::base::limits::MAX_JSON_BYTES,
            )?)
        } else {
            None
        };
        Ok(Self::from_parts(dir, inner, &cfg, &gen, &model_cfg, jinja))
    }

    /// Builds a tokenizer from an in-memory `tokenizer.json` and `tokenizer_config.json` (as
    /// rebuilt from GGUF metadata, say); `origin` names the checkpoint in messages.
    pub fn from_json(
        origin: &Path,
        tokenizer_json: &Value,
        tokenizer_config: &Value,
    ) -> Result<Self> {
        let bytes = serde_json::to_vec(tokenizer_json)
            .map_err(|e| Error::corrupt(origin, format!("cannot encode the tokenizer: {e}")))?;
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::corrupt(origin, format!("cannot load the tokenizer: {e}")))?;
        Ok(Self::from_parts(
            origin,
            inner,
            tokenizer_config,
            &Value::Null,
            &Value::Null,
            None,
        ))
    }

    /// Wraps a built tokenizer with its `tokenizer_config.json`; `origin` names the checkpoint.
    pub(crate) fn from_inner(
        origin: &Path,
        inner: tokenizers::Tokenizer,
        tokenizer_config: &Value,
    ) -> Self {
        Self::from_parts(
            origin,
            inner,
            tokenizer_config,
            &Value::Null,
            &Value::Null,
            None,
        )
    }

    fn from_parts(
        dir: &Path,
        inner: tokenizers::Tokenizer,
        cfg: &Value,
        gen: &Value,
        model_cfg: &Value,
        jinja: Option<String>,
    ) -> Self {
        let bos =
            token_text(cfg.get("bos_token")).and_then(|t| inner.token_to_id(&t).map(|id| (t, id)));
        let eos_token = token_text(cfg.get("eos_token"));
        let mut eos_ids = ids(gen.get("eos_token_id"));
        if eos_ids.is_empty() {
            eos_ids = ids(model_cfg.get("eos_token_id"));
        }
        if let Some(id) = eos_token.as_deref().and_then(|t| inner.token_to_id(t)) {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
        let chat_template = jinja.or_else(|| config_chat_template(cfg));
        HfTokenizer {
            dir: dir.to_path_buf(),
            inner,
            bos,
            eos_token,
            eos_ids,
            add_bos: cfg.get("add_bos_token").and_then(Value::as_bool),
            chat_template,
        }
    }

    /// Entries in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Ids that end generation.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// The BOS id, if the tokenizer has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|(_, id)| *id)
    }

    /// The BOS token's text, if the tokenizer has one.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos.as_ref().map(|(t, _)| t.as_str())
    }

    /// Whether a chat template is available.
    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Encodes `text`. With `special`, the tokenizer's post-processor adds what `tokenizer(text)`
    /// adds in transformers (BOS for llama), corrected by `add_bos_token` when that is set.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, special).map_err(|e| {
            Error::Invalid(format!(
                "`{}`: tokenization failed: {e}",
                self.dir.display()
            ))
        })?;
        let mut ids = enc.get_ids().to_vec();
        if special {
            if let Some(bos) = self.bos_id() {
                let added =
                    ids.first() == Some(&bos) && enc.get_special_tokens_mask().first() == Some(&1);
                match self.add_bos {
                    Some(true) if ids.first() != Some(&bos) => ids.insert(0, bos),
                    Some(false) if added => {
                        ids.remove(0);
                    }
                    _ => {}
                }
            }
        }
        Ok(ids)
    }

    /// Decodes ids to text, keeping special tokens out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::Invalid(format!("`{}`: decoding failed: {e}", self.dir.display())))
    }

    /// Decodes ids to text, special tokens included.
    pub fn decode_special(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::Invalid(format!("`{}`: decoding failed: {e}", self.dir.display())))
    }

    /// Renders `messages` with the chat template, ending with the assistant's turn opener. Encode
    /// the result with `special = false`: templates write their own BOS.
    pub fn render_chat(&self, messages: &[Message]) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| {
            Error::Invalid(format!(
                "`{}`: the tokenizer has no chat template (no `chat_template` in tokenizer_config.json and no chat_template.jinja)",
                self.dir.display()
            ))
        })?;
        let bad = |e: minijinja::Error| {
            Error::Invalid(format!("`{}`: chat template: {e}", self.dir.display()))
        };
        let mut env = minijinja::Environment::new();
        // transformers renders with jinja2's trim_blocks and lstrip_blocks.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(bad)?;
        env.set_syntax(syntax);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", template).map_err(bad)?;
        let ctx = minijinja::context! {
            messages => messages
                .iter()
                .map(|m| minijinja::Value::from_pairs([("role", m.role.as_str()), ("content", m.content.as_str())]))
                .collect::<Vec<_>>(),
            add_generation_prompt => true,
            bos_token => self.bos.as_ref().map(|(t, _)| t.clone()).unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        };
        env.get_template("chat")
            .and_then(|t| t.render(ctx))
            .map_err(bad)
    }
}

/// Turns a growing list of ids into text pieces to print as they come, holding back a piece
/// while it ends in an incomplete character.
pub struct TextStream<'a> {
    tok: &'a HfTokenizer,
    ids: Vec<u32>,
    printed: usize,
}

impl<'a> TextStream<'a> {
    pub fn new(tok: &'a HfTokenizer) -> Self {
        TextStream {
            tok,
            ids: Vec::new(),
            printed: 0,
        }
    }

    /// Adds one id and returns the text that is now complete.
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}')
            || text.len() < self.printed
            || !text.is_char_boundary(self.printed)
        {
            return Ok(String::new());
        }
        let piece = text[self.printed..].to_string();
        self.printed = text.len();
        Ok(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The golden llama tokenizer in a temporary folder, with `tokenizer_config.json` replaced.
    fn with_config(cfg: Value) -> (tempfile::TempDir, HfTokenizer) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/golden/llama/tokenizer.json");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(src, dir.path().join("tokenizer.json")).unwrap();
        std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
        let tok = HfTokenizer::open(dir.path()).unwrap();
        (dir, tok)
    }

    #[test]
    fn add_bos_token_false_removes_the_post_processor_bos() {
        let (_d, tok) =
            with_config(serde_json::json!({"bos_token": "<s>", "add_bos_token": false}));
        let ids = tok.encode("The bell", true).unwrap();
        assert_ne!(ids[0], tok.bos_id().unwrap());
        let (_d, tok) = with_config(serde_json::json!({"bos_token": {"content": "<s>"}}));
        assert_eq!(
            tok.encode("The bell", true).unwrap()[0],
            tok.bos_id().unwrap()
        );
    }

    #[test]
    fn named_chat_templates_pick_default_and_errors_name_the_folder() {
        let (_d, tok) = with_config(serde_json::json!({"eos_token": "</s>", "chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "{% for m in messages %}[{{ m.role }}] {{ m.content.strip() }}{% endfor %}{{ eos_token }}"}
        ]}));
        let msg = Message {
            role: "user".into(),
            content: " hi ".into(),
        };
        assert_eq!(
            tok.render_chat(std::slice::from_ref(&msg)).unwrap(),
            "[user] hi</s>"
        );
        assert_eq!(tok.eos_ids(), &[tok.encode("</s>", false).unwrap()[0]]);
        let (d, tok) = with_config(
            serde_json::json!({"chat_template": "{{ raise_exception('no system role') }}"}),
        );
        let err = tok.render_chat(&[msg]).unwrap_err().to_string();
        assert!(
            err.contains("no system role") && err.contains(&d.path().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn stream_prints_each_piece_once() {
        let (_d, tok) = with_config(serde_json::json!({}));
        let ids = tok.encode("The old lighthouse stood", false).unwrap();
        let mut stream = TextStream::new(&tok);
        let text: String = ids.iter().map(|&id| stream.push(id).unwrap()).collect();
        assert_eq!(text, "The old lighthouse stood");
    }
}
