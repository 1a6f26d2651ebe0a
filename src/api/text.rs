//! Text as tokens, under one rule for every command: a file is read as UTF-8 and tokenized as
//! one stream the way `tokenizer(text)` does in transformers (the special tokens the tokenizer
//! adds, once, at the start), and a slice of it is whole windows of `ctx` tokens from a token
//! offset. Calibration, validation and evaluation slices are all cut this way, so a slice at
//! offset 0 is the evaluation's first windows and the numbers agree.
//!
//! Calibration text is one type, [`CalibText`] (the file, the window length and the tokens
//! skipped first), flattened into the scoring options and the heal request so its flags and keys
//! are the same everywhere. Scoring takes whole windows of it ([`CalibText::slice`]); healing
//! takes a count of tokens ([`CalibText::heal_tokens`]), which need not be whole windows, and
//! cuts them by the same rule, [`eval::windows::whole_windows`].

use crate::error::{Error, Result};
use crate::eval;
use crate::eval::windows::whole_windows;
use crate::progress::Progress;
use crate::tokenizer::HfTokenizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The calibration text: which file, how long its windows are, and how many of its tokens come
/// first and are skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(default)]
pub struct CalibText {
    /// Calibration text (UTF-8), tokenized as one string with the model's tokenizer, as the
    /// evaluation does.
    #[cfg_attr(feature = "cli", arg(long, value_name = "FILE"))]
    pub calib: Option<PathBuf>,
    /// Tokens per calibration window.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 512, value_name = "N"))]
    pub ctx: usize,
    /// Tokens to skip at the start of the text (keep calibration apart from evaluation).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0, value_name = "TOKENS"))]
    pub calib_offset: usize,
}

impl Default for CalibText {
    fn default() -> Self {
        CalibText {
            calib: None,
            ctx: 512,
            calib_offset: 0,
        }
    }
}

impl CalibText {
    /// `windows` whole windows from the offset, if a file was given (scoring's calibration set).
    pub fn slice(&self, windows: usize) -> Option<TextSlice> {
        self.calib.as_ref().map(|f| TextSlice {
            file: f.clone(),
            offset: self.calib_offset,
            ctx: self.ctx,
            windows,
        })
    }

    /// The tokens healing fits on, of a text of `len` tokens: `heal_samples` from the offset, or
    /// as many as the text has (healing cuts them into whole windows as it fits).
    pub fn heal_range(&self, heal_samples: usize, len: usize) -> std::ops::Range<usize> {
        let start = self.calib_offset.min(len);
        start..start.saturating_add(heal_samples).min(len)
    }

    /// Reads the tokens healing fits on ([`Self::heal_range`]), refusing no file, fewer than one
    /// window asked for or an offset past the text, and warning when the text gives fewer
    /// tokens than asked.
    pub fn heal_tokens(
        &self,
        tok: &HfTokenizer,
        heal_samples: usize,
        progress: &dyn Progress,
    ) -> Result<Vec<u32>> {
        let Some(calib) = &self.calib else {
            return Err(Error::Invalid(
                "healing needs calibration text (`calib`)".into(),
            ));
        };
        if heal_samples < self.ctx {
            return Err(Error::Invalid(format!(
                "`heal_samples` {heal_samples} is less than one window of `ctx` {}",
                self.ctx
            )));
        }
        let want = self.calib_offset.saturating_add(heal_samples);
        let tokens = read_tokens(tok, calib, Some(want))?;
        if tokens.len() <= self.calib_offset {
            return Err(Error::Invalid(format!(
                "`calib_offset` {} is past the end of `{}` ({} tokens)",
                self.calib_offset,
                calib.display(),
                tokens.len()
            )));
        }
        let range = self.heal_range(heal_samples, tokens.len());
        if range.len() < heal_samples {
            progress.warn(&format!(
                "`{}` gives {} calibration tokens after an offset of {}, fewer than the {} asked to heal on",
                calib.display(),
                range.len(),
                self.calib_offset,
                heal_samples
            ));
        }
        Ok(tokens[range].to_vec())
    }

    /// Up to `n` whole windows of the text right after healing's `heal_samples` tokens (disjoint
    /// from every window healing fits on); empty without a file.
    pub fn windows_after_heal(
        &self,
        tok: &HfTokenizer,
        heal_samples: usize,
        n: usize,
    ) -> Result<Vec<Vec<u32>>> {
        let Some(calib) = &self.calib else {
            return Ok(Vec::new());
        };
        let start = self.calib_offset.saturating_add(heal_samples);
        let want = start.saturating_add(n.saturating_mul(self.ctx));
        let tokens = read_tokens(tok, calib, Some(want))?;
        Ok(
            whole_windows(tokens.get(start..).unwrap_or_default(), self.ctx)
                .map(<[u32]>::to_vec)
                .collect(),
        )
    }
}

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
        Ok(whole_windows(&tokens[self.offset..end], self.ctx)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::heal::HealRequest;
    use crate::api::score::CalibOptions;
    use serde_json::json;

    #[test]
    fn heal_range_is_heal_samples_from_the_offset_clipped_to_the_text() {
        let c = CalibText {
            calib: Some("t.txt".into()),
            ctx: 4,
            calib_offset: 10,
        };
        assert_eq!(c.heal_range(9, 100), 10..19);
        assert_eq!(c.heal_range(9, 15), 10..15);
        assert_eq!(c.heal_range(9, 7), 7..7);
        assert_eq!(c.heal_range(usize::MAX, usize::MAX), 10..usize::MAX);
        assert_eq!(c.slice(3).unwrap().range(), 10..22);
    }

    #[test]
    fn calibration_keys_are_flat_and_the_same_in_score_and_heal() {
        let given = json!({"calib": "t.txt", "ctx": 64, "calib_offset": 128});
        let score: CalibOptions = serde_json::from_value(given.clone()).unwrap();
        let heal: HealRequest = serde_json::from_value(given.clone()).unwrap();
        let want = CalibText {
            calib: Some("t.txt".into()),
            ctx: 64,
            calib_offset: 128,
        };
        assert_eq!((&score.text, &heal.text), (&want, &want));
        for v in [
            serde_json::to_value(&score).unwrap(),
            serde_json::to_value(&heal).unwrap(),
        ] {
            for key in ["calib", "ctx", "calib_offset"] {
                assert_eq!(v[key], given[key], "{key}");
            }
            assert!(v.get("text").is_none());
        }
        assert!(crate::api::unknown_keys(&given, &heal).is_empty());
        let req: crate::api::score::ScoreRequest = serde_json::from_value(given.clone()).unwrap();
        assert_eq!(req.calib.text, want);
        assert!(crate::api::unknown_keys(&given, &req).is_empty());
        let defaults: HealRequest = serde_json::from_value(json!({})).unwrap();
        assert_eq!(defaults.text, CalibText::default());
    }
}
