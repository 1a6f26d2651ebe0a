//! Limits on what a file may make depthprune allocate. Every size that comes from a file (a count,
//! a length, a shape) is checked before memory is reserved for it, first against the bytes the
//! file still holds and then against a named cap, so a hostile file cannot make the tool allocate
//! more than a small multiple of its own size.
//!
//! The guarantee, tested with a counting allocator in `tests/alloc_limits.rs`: reading the header
//! of a GGUF or safetensors file of `n` bytes allocates at most [`HEADER_ALLOC_FACTOR`] × `n` +
//! [`HEADER_ALLOC_SLACK`] bytes at its peak, whatever the file claims; a header that claims more
//! than it holds is refused with an error naming the file and the count.
//!
//! | what | bound | cap |
//! |---|---|---|
//! | GGUF tensor count | bytes left / 25 (the smallest tensor info) | [`MAX_TENSORS`](crate::checkpoint::gguf::MAX_TENSORS) |
//! | GGUF metadata key count | bytes left / 14 (the smallest entry) | [`MAX_KEYS`](crate::checkpoint::gguf::MAX_KEYS) |
//! | GGUF key or tensor name | bytes left | [`MAX_NAME_LEN`](crate::checkpoint::gguf::MAX_NAME_LEN) |
//! | GGUF string value | bytes left | [`MAX_STRING_LEN`](crate::checkpoint::gguf::MAX_STRING_LEN) |
//! | GGUF array length | bytes left / smallest element | [`MAX_ARRAY_LEN`](crate::checkpoint::gguf::MAX_ARRAY_LEN), nested [`MAX_ARRAY_DEPTH`](crate::checkpoint::gguf::MAX_ARRAY_DEPTH) deep |
//! | GGUF tensor dimensions | — | [`MAX_DIMS`](crate::checkpoint::gguf::MAX_DIMS) |
//! | GGUF tensor data | inside the file, no overlap | — (never read whole) |
//! | safetensors header | the file's length | [`MAX_HEADER_BYTES`](crate::checkpoint::safetensors::MAX_HEADER_BYTES), parsed into compact types |
//! | safetensors shape, `data_offsets` | — | [`MAX_SHAPE_DIMS`](crate::checkpoint::safetensors::MAX_SHAPE_DIMS) entries |
//! | safetensors `__metadata__` | — | [`MAX_METADATA_ENTRIES`](crate::checkpoint::safetensors::MAX_METADATA_ENTRIES) entries |
//! | `config.json`, index, tokenizer config | — | [`MAX_JSON_BYTES`] |
//! | `tokenizer.json` | — | [`MAX_TOKENIZER_BYTES`] |
//! | GGUF vocabulary → tokenizer | — | [`MAX_VOCAB_TOKENS`] tokens, [`MAX_MERGES`] merges |
//! | GGUF header read over HTTP | the file's length | [`MAX_REMOTE_GGUF_HEADER`] |
//!
//! Tensor data is never read whole into memory on the strength of a header: pruning streams it,
//! and the forward pass maps files and reads one tensor at a time, whose size was checked against
//! the file.

use crate::error::{Error, IoContext, Result};
use std::io::Read;
use std::path::Path;

/// Peak heap bytes per byte of file while reading a GGUF or safetensors header.
pub const HEADER_ALLOC_FACTOR: u64 = 16;
/// Peak heap bytes allowed besides [`HEADER_ALLOC_FACTOR`] per byte: read buffers and the like.
pub const HEADER_ALLOC_SLACK: u64 = 2 << 20;
/// The largest `config.json`, `model.safetensors.index.json` or tokenizer/generation config read
/// (real ones are well under 10 MiB).
pub const MAX_JSON_BYTES: u64 = 64 << 20;
/// The largest `tokenizer.json` read (real ones are under 50 MiB).
pub const MAX_TOKENIZER_BYTES: u64 = 256 << 20;
/// The most tokens a GGUF vocabulary may hold to be turned into a tokenizer (real ones hold at
/// most a few hundred thousand).
pub const MAX_VOCAB_TOKENS: usize = 1 << 20;
/// The most merges a GGUF vocabulary may hold.
pub const MAX_MERGES: usize = 1 << 21;
/// The largest GGUF header region read from the hub by range requests (`plan`/`inspect` on
/// `org/name:file.gguf`); real ones, vocabulary included, are a few tens of MiB at most.
pub const MAX_REMOTE_GGUF_HEADER: u64 = 256 << 20;

/// Reads a text file of at most `cap` bytes whole; a longer file is refused before it is read.
pub fn read_text_capped(path: &Path, cap: u64) -> Result<String> {
    let file = std::fs::File::open(path).at(path)?;
    let len = file.metadata().at(path)?.len();
    let too_big = |len: u64| {
        Error::corrupt(
            path,
            format!("{len} bytes is over the {cap}-byte limit for this file"),
        )
    };
    if len > cap {
        return Err(too_big(len));
    }
    let mut text = String::with_capacity(len as usize);
    file.take(cap + 1).read_to_string(&mut text).at(path)?;
    if text.len() as u64 > cap {
        return Err(too_big(text.len() as u64));
    }
    Ok(text)
}
