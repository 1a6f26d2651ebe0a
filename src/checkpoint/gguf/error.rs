//! The rules a GGUF file can break, one variant each. The reader returns these; at the library
//! boundary they become [`crate::Error::Corrupt`] (or [`crate::Error::Io`]) with the file's path,
//! so the CLI prints one line such as
//! ``error: `model.gguf`: tensor `blk.3.attn_q.weight` has unknown ggml type id 99``.

use super::types::ShapeError;
use crate::error::Error;
use std::path::Path;

/// A broken rule of the GGUF format, found while reading a file's header region.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file does not start with the four bytes `GGUF`.
    #[error("not a GGUF file: it starts with {} instead of `GGUF`", show_magic(.found))]
    BadMagic { found: Vec<u8> },
    /// A version field that reads as a byte-swapped 2 or 3: the file was written big-endian.
    #[error("big-endian GGUF files are not supported (GGUF version {0} written big-endian)")]
    BigEndian(u32),
    /// A version other than 2 or 3 (version 1 used 32-bit lengths and is long obsolete).
    #[error("GGUF version {0} is not supported; depthprune reads versions 2 and 3")]
    UnsupportedVersion(u32),
    /// The file ends before a field it declares.
    #[error("truncated: {what} needs {need} bytes at offset {at}, but only {left} remain")]
    Truncated {
        what: String,
        at: u64,
        need: u64,
        left: u64,
    },
    /// A tensor or key count larger than the file could hold, or than [`super::MAX_TENSORS`] /
    /// [`super::MAX_KEYS`].
    #[error("the header declares {count} {what}, but {bound}")]
    TooMany {
        what: &'static str,
        count: u64,
        bound: Bound,
    },
    /// A string whose declared length passes the end of the file or a named cap.
    #[error("{what} declares a string of {len} bytes, but {bound}")]
    StringTooLong {
        what: String,
        len: u64,
        bound: Bound,
    },
    /// An array whose declared length passes the end of the file or [`super::MAX_ARRAY_LEN`].
    #[error("{what} declares an array of {len} elements, but {bound}")]
    ArrayTooLong {
        what: String,
        len: u64,
        bound: Bound,
    },
    /// Arrays of arrays nested deeper than [`super::MAX_ARRAY_DEPTH`].
    #[error("{what} nests arrays more than {limit} deep")]
    ArrayTooDeep { what: String, limit: usize },
    /// A metadata value type id outside 0..=12.
    #[error("{what} has unknown value type {id}")]
    UnknownValueType { what: String, id: u32 },
    /// A bool stored as a byte other than 0 or 1.
    #[error("{what} is a bool stored as {byte}, not 0 or 1")]
    BadBool { what: String, byte: u8 },
    /// A key or tensor name that is not UTF-8.
    #[error("{what} is not valid UTF-8")]
    NotUtf8 { what: String },
    /// An empty key or tensor name.
    #[error("{what} is empty")]
    EmptyName { what: String },
    /// The same metadata key twice.
    #[error("metadata key `{0}` appears twice")]
    DuplicateKey(String),
    /// The same tensor name twice (in one file, or across the parts of a split model).
    #[error("tensor `{0}` appears twice")]
    DuplicateTensor(String),
    /// A well-known key with a value of the wrong type or out of range.
    #[error("`{key}` {problem}")]
    BadKey { key: String, problem: String },
    /// More than [`super::MAX_DIMS`] dimensions.
    #[error("tensor `{name}` has {n_dims} dimensions; GGUF allows at most {max}", max = super::MAX_DIMS)]
    TooManyDims { name: String, n_dims: u32 },
    /// A shape with a zero dimension, an overflowing size, or a row that is not whole blocks.
    #[error("tensor `{name}` with shape {dims:?}: {source}")]
    BadShape {
        name: String,
        dims: Vec<u64>,
        source: ShapeError,
    },
    /// A ggml type id the type table does not define.
    #[error("tensor `{name}` has unknown ggml type id {id}")]
    UnknownType { name: String, id: u32 },
    /// A tensor data offset that is not a multiple of the file's alignment.
    #[error("tensor `{name}` starts at data offset {offset}, which is not a multiple of the alignment {alignment}")]
    Misaligned {
        name: String,
        offset: u64,
        alignment: u64,
    },
    /// Tensor data that reaches past the end of the file.
    #[error(
        "tensor `{name}` spans bytes {start}..{end}, past the end of the file ({file_len} bytes)"
    )]
    OutOfBounds {
        name: String,
        start: u64,
        end: u64,
        file_len: u64,
    },
    /// Two tensors whose data ranges share bytes.
    #[error("tensors `{first}` and `{second}` overlap in the data section")]
    Overlap { first: String, second: String },
    /// The operating system failed to read the file.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Which limit a declared size broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// A named cap (`MAX_*`).
    Cap(u64),
    /// What the bytes left in the file can hold.
    File(u64),
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bound::Cap(n) => write!(f, "depthprune accepts at most {n}"),
            Bound::File(n) => write!(f, "the rest of the file has room for at most {n}"),
        }
    }
}

fn show_magic(found: &[u8]) -> String {
    format!("`{}`", found.escape_ascii())
}

impl FormatError {
    /// The library error for this problem in the file at `path`.
    pub fn at(self, path: &Path) -> Error {
        match self {
            FormatError::Io(e) => Error::io(path, e),
            other => Error::corrupt(path, other.to_string()),
        }
    }
}
