//! GGUF files: reading (v2 and v3, single or split), writing (v3, streamed), pruning and
//! summarising. The pipeline:
//!
//! - [`types`]: the ggml type table and tensor byte sizes.
//! - [`value`]: metadata values.
//! - [`read`]: one file's header region, validated against the file before anything is
//!   allocated; [`model`] joins the parts of a split model into one [`GgufModel`].
//! - [`write`](mod@write): a staged writer that copies tensor data straight from the source files.
//! - [`prune`](mod@prune): drops `blk.N.*` tensors, renumbers the rest, rewrites the metadata.
//! - [`info`]: the summary `inspect` prints.
//!
//! Tensor data is never loaded: it moves from file to file one tensor at a time.

pub mod error;
pub mod info;
pub mod model;
pub mod pattern;
pub mod prune;
pub mod read;
mod source;
pub mod split;
pub mod types;
pub mod value;
pub mod write;

pub use error::{Bound, FormatError};
pub use info::GgufInfo;
pub use model::{GgufModel, GgufPart};
pub use prune::{prune, prune_with, Edits, PruneOptions, PruneReport, Replacement};
pub use read::{GgufFile, TensorInfo};
pub use types::GgmlType;
pub use value::{Array, Value, ValueType};
pub use write::GgufWriter;

/// The first four bytes of every GGUF file.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The version this crate writes.
pub const WRITE_VERSION: u32 = 3;
/// The data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Metadata keys with a meaning to the format or to llama.cpp's loader.
pub const KEY_ALIGNMENT: &str = "general.alignment";
pub const KEY_ARCHITECTURE: &str = "general.architecture";
pub const KEY_NAME: &str = "general.name";
/// Split keys as llama.cpp's `gguf-split` writes them: `split.no` (u16, 0-based),
/// `split.count` (u16) and `split.tensors.count` (i32, the total over all parts).
pub const KEY_SPLIT_NO: &str = "split.no";
pub const KEY_SPLIT_COUNT: &str = "split.count";
pub const KEY_SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

/// Caps on what a header may declare. Declared sizes are also checked against the bytes left in
/// the file, which is the tighter bound for any honest file; the caps bound memory for hostile
/// files that are themselves huge.
///
/// At most this many tensors (the largest MoE checkpoints have a few thousand).
pub const MAX_TENSORS: u64 = 1 << 20;
/// At most this many metadata keys.
pub const MAX_KEYS: u64 = 1 << 20;
/// At most this many bytes in a key or tensor name (llama.cpp itself allows 63 for names).
pub const MAX_NAME_LEN: u64 = 4096;
/// At most this many bytes in a string value (chat templates and embedded tokenizer JSON are
/// megabytes at most).
pub const MAX_STRING_LEN: u64 = 256 << 20;
/// At most this many elements in one array (vocabularies are a few hundred thousand).
pub const MAX_ARRAY_LEN: u64 = 1 << 28;
/// At most this many levels of arrays inside arrays.
pub const MAX_ARRAY_DEPTH: usize = 8;
/// At most this many dimensions per tensor (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// Metadata entries in file order, with unique keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
}

impl Metadata {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of `key` if it is a UTF-8 string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Replaces the value of `key` where it stands, or appends it.
    pub fn set(&mut self, key: &str, value: Value) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.entries.push((key.to_string(), value)),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(i).1)
    }

    /// Keeps the entries for which `keep(key, value)` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Value) -> bool) {
        self.entries.retain(|(k, v)| keep(k, v));
    }

    /// Room for `n` entries; `n` must have been checked against the bytes of the file.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Metadata {
            entries: Vec::with_capacity(n),
        }
    }

    /// Appends an entry whose key the caller has checked is new.
    fn push_unique(&mut self, key: String, value: Value) {
        self.entries.push((key, value));
    }
}
