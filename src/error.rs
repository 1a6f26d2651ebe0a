//! The library's error type. Every variant names the file or value at fault, so the CLI can print
//! it on one line. Messages are lowercase, end without a period, and put names in backticks.
//!
//! # The one import circle, and why it stays
//!
//! Nearly every module imports this file for [`Error`] and [`Result`], and this file names three
//! error types defined above it: [`crate::quant::QuantError`], [`crate::tokenizer::VocabError`]
//! and [`crate::hub::HubError`]. Those three names close an import circle across folders
//! (`error → quant → checkpoint → error`, and likewise through `tokenizer` and `hub`);
//! `python3 scripts/import_floors.py` lists them as allowed climbs, and without them it finds
//! no circle through this file. The circle is kept because it costs nothing:
//! - the names are payloads, not calls: this file runs no code of those modules; each variant
//!   holds the value and prints the module's own message (`#[error(transparent)]` or a prefix);
//! - the crate compiles as one unit, so a circle of modules orders nothing at build time;
//! - the types stay typed for the callers that match on them: the hub's fetch rewrites a
//!   network [`crate::hub::HubError`] with what the cache holds, and the format tests expect
//!   the exact variant of the rule broken.
//!
//! The alternative, each module returning its own error and the API converting, would add a
//! conversion at every call that crosses those modules for the same messages.

use std::path::{Path, PathBuf};

/// Errors raised by the depthprune library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error while reading or writing `path`.
    #[error("`{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file whose bytes break the rules of its format (truncated, out of bounds, overlapping).
    #[error("`{}`: {msg}", path.display())]
    Corrupt { path: PathBuf, msg: String },
    /// A `config.json` that is missing a field, has a wrong type, or contradicts the tensors.
    #[error("`{}`: {msg}", path.display())]
    Config { path: PathBuf, msg: String },
    /// A task file (JSONL) whose record on `line` (1-based) cannot be used.
    #[error("`{}` line {line}: {msg}", path.display())]
    Task {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    /// A layer SPEC that cannot be parsed or resolved.
    #[error("layer spec `{spec}`: {msg}")]
    Spec { spec: String, msg: String },
    /// Something valid in principle that this tool does not handle (a dtype, an architecture).
    #[error("{0}")]
    Unsupported(String),
    /// A request that cannot be carried out as asked (an existing output folder, say).
    #[error("{0}")]
    Invalid(String),
    /// Tensor data that cannot be (de)quantized as asked: an unsupported ggml type, or a byte
    /// length that does not match the element count.
    #[error(transparent)]
    Quant(#[from] crate::quant::QuantError),
    /// GGUF tokenizer metadata that cannot be turned into a `tokenizer.json`.
    #[error("tokenizer: {0}")]
    Vocab(#[from] crate::tokenizer::VocabError),
    /// A hub reference that cannot be resolved, from the cache or the network.
    #[error("{0}")]
    Hub(Box<crate::hub::HubError>),
    /// A tensor computation that failed (shapes that contradict the config, say).
    #[error("tensor computation failed: {0}")]
    Compute(String),
    /// A long job stopped at a signal's request ([`crate::base::cancel`]) after saving what it
    /// finished; the message says how to resume.
    #[error("{0}")]
    Interrupted(String),
}

impl From<crate::hub::HubError> for Error {
    fn from(e: crate::hub::HubError) -> Self {
        Error::Hub(Box::new(e))
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Compute(e.to_string())
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn corrupt(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    pub fn config(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Config {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }
}

/// Attaches a path to `std::io::Error`s.
pub trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
