//! Evaluation: perplexity over a text file under the literature's window conventions
//! ([`windows`]), streamed in small batches, with the divergence from a reference model
//! ([`perplexity`]); zero-shot multiple-choice accuracy by log-likelihood on task files
//! ([`tasks`] reads them, [`choice`] scores them).

pub mod bootstrap;
pub mod choice;
pub mod data;
pub mod docs;
pub mod execute;
pub mod finite;
pub mod generate_until;
pub mod loglik;
pub mod parquet;
pub mod perplexity;
pub mod prompts;
pub mod pyrandom;
pub mod reference;
pub mod registry;
pub mod suite;
pub mod tasks;
pub mod windows;

pub use bootstrap::{Bootstrap, Difference, Interval, TotalsIntervals};
pub use choice::{
    encode_item, score_encoded, score_tasks, EncodedItem, ItemScore, Request, TaskOpts, TaskReport,
};
pub use finite::ensure_finite;
pub use perplexity::{
    evaluate, score_hidden, score_hidden_windows, Divergence, EvalReport, Run, Totals,
};
pub use reference::ReferenceLogProbs;
pub use tasks::{read_tasks, TaskItem};
pub use windows::{plan, Convention, Window};

use crate::error::{Error, IoContext, Result};
use crate::tokenizer::HfTokenizer;
use std::path::Path;

/// Tokens past the limit that a prefix must yield before its first `max_tokens` are trusted.
const SPARE_TOKENS: usize = 64;

/// Reads a text file, refusing bytes that are not UTF-8 and saying where the first one is.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).at(path)?;
    String::from_utf8(bytes).map_err(|e| {
        Error::Invalid(format!(
            "`{}`: not UTF-8 text: invalid byte at offset {}",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Tokenizes `text` as `tokenizer(text)` does in transformers (special tokens added once, at the
/// start), keeping at most `max_tokens`. With a limit, only a prefix of the text is tokenized:
/// a prefix cut at a line end, grown until it yields more tokens than needed, so the kept tokens
/// are those of the whole text.
pub fn tokenize(tok: &HfTokenizer, text: &str, max_tokens: Option<usize>) -> Result<Vec<u32>> {
    let Some(max) = max_tokens else {
        return tok.encode(text, true);
    };
    let mut bytes = max.saturating_mul(16).max(4096);
    loop {
        if bytes >= text.len() {
            let mut ids = tok.encode(text, true)?;
            ids.truncate(max);
            return Ok(ids);
        }
        let cut = text[..bytes]
            .rfind('\n')
            .filter(|&c| c > 0)
            .unwrap_or_else(|| {
                let mut c = bytes;
                while !text.is_char_boundary(c) {
                    c -= 1;
                }
                c
            });
        let mut ids = tok.encode(&text[..cut], true)?;
        // Spare tokens: the last word of a prefix may split differently in the whole text.
        if ids.len() > max + SPARE_TOKENS {
            ids.truncate(max);
            return Ok(ids);
        }
        bytes = bytes.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_names_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(&p, b"abc\xffdef").unwrap();
        let err = read_text(&p).unwrap_err().to_string();
        assert!(err.contains("offset 3") && err.contains("t.txt"), "{err}");
    }
}
