//! Text as tokens, under one rule for every command: a file is read as UTF-8 and tokenized as
//! one stream the way `tokenizer(text)` does in transformers (the special tokens the tokenizer
//! adds, once, at the start), and a slice of it is whole windows of `ctx` tokens from a token
//! offset. Calibration, validation and evaluation slices are all cut this way, so a slice at
//! offset 0 is the evaluation's first windows and the numbers agree.

use crate::error::{Error, Result};
use crate::eval;
use crate::tokenizer::HfTokenizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Windows of `ctx` tokens from token `offset` of `file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextSlice {
    pub file: PathBuf,
    /// Tokens of the text skipped first.
    pub offset: usize,
    /// Tokens per window.
    pub ctx: usize,
    /// Windows.
    pub windows: usize,
}

impl TextSlice {
    /// The token range the slice covers (its end saturates: [`TextSlice::check`] refuses a
    /// slice whose end does not fit in a `usize`).
    pub fn range(&self) -> std::ops::Range<usize> {
        let end = self
            .ctx
            .saturating_mul(self.windows)
            .saturating_add(self.offset);
        self.offset..end
    }

    /// Refuses windows shorter than 2 tokens, no windows, or an end past any text, naming the
    /// options that set them for the slice's `role`.
    pub fn check(&self, role: &str) -> Result<()> {
        let (offset, ctx, windows) = match role {
            "calibration" => ("calib_offset", "ctx", "samples"),
            "evaluation" => ("eval_offset", "eval_ctx", "eval_samples"),
            "validation" => ("select_offset", "eval_ctx", "select_samples"),
            _ => ("offset", "ctx", "windows"),
        };
        let file = self.file.display();
        if self.ctx < 2 {
            return Err(Error::Invalid(format!(
                "`{file}`: `{ctx}` {}: {role} windows need at least 2 tokens",
                self.ctx
            )));
        }
        if self.windows == 0 {
            return Err(Error::Invalid(format!(
                "`{file}`: `{windows}` 0: {role} needs at least 1 window"
            )));
        }
        if self
            .ctx
            .checked_mul(self.windows)
            .and_then(|n| n.checked_add(self.offset))
            .is_none()
        {
            return Err(Error::Invalid(format!(
                "`{file}`: `{offset}` {} + `{ctx}` {} × `{windows}` {} tokens is past the end of any text",
                self.offset, self.ctx, self.windows
            )));
        }
        Ok(())
    }

    /// Whether two slices share a token of the same file.
    pub fn overlaps(&self, other: &TextSlice) -> bool {
        let (a, b) = (self.range(), other.range());
        a.start < b.end && b.start < a.end && same_file(&self.file, &other.file)
    }

    /// The windows, refusing a text too short for them with a message naming the file and the
    /// slice's `role` (calibration, validation, evaluation).
    pub fn cut(&self, tok: &HfTokenizer, role: &str) -> Result<Vec<Vec<u32>>> {
        self.check(role)?;
        let tokens = read_tokens(tok, &self.file, Some(self.range().end))?;
        self.windows_of(&tokens, role)
    }

    /// The windows, from `tokens` already read from the file under the one rule.
    pub fn windows_of(&self, tokens: &[u32], role: &str) -> Result<Vec<Vec<u32>>> {
        self.check(role)?;
        let end = self.range().end;
        if tokens.len() < end {
            return Err(Error::Invalid(format!(
                "`{}`: {role} text too short: {} tokens, but {} windows of {} from token {} need {end}",
                self.file.display(),
                tokens.len(),
                self.windows,
                self.ctx,
                self.offset
            )));
        }
        Ok(tokens[self.offset..end]
            .chunks_exact(self.ctx)
            .map(<[u32]>::to_vec)
            .collect())
    }
}

/// The tokens of `file` under the one rule, at most `max` of them (a prefix of the text is
/// tokenized when that suffices).
pub fn read_tokens(tok: &HfTokenizer, file: &Path, max: Option<usize>) -> Result<Vec<u32>> {
    eval::tokenize(tok, &eval::read_text(file)?, max)
}

/// Whether two paths name the same file (by their canonical paths when both exist).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
