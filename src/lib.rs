//! depthprune: depth pruning for decoder-only language models.
//!
//! The library measures which transformer layers matter, removes whole layers from Hugging Face
//! safetensors folders and GGUF files, and accounts exactly for what was removed. The binary
//! (`src/main.rs`, `cli/`) and the Python package (`python/`) are thin faces over [`api`], one
//! call per job, which is built on these modules:
//!
//! - [`base`]: size caps, the symlink policy and HF folder file names, below every other module.
//! - [`select`]: the layer SPEC grammar (`3..29`, `last:8`, …) and the removal plan it resolves to.
//! - [`arch`]: architecture descriptions read from `config.json`, tensor naming, parameter counts.
//! - [`choose`]: score-based strategies that pick the layers to remove, and their stability.
//! - [`score`]: layer-importance criteria (angular distance, Block Influence, perplexity, greedy).
//! - [`model`]: the forward pass with per-layer taps, skips and a KV cache.
//! - [`eval`]: perplexity under the literature's window conventions, and KL from a reference.
//! - [`sweep`]: the study: strategies × layers removed, pruned virtually and measured against the dense model.
//! - [`heal`]: healing without training: a least-squares linear map per removed block, folded into `down_proj`.
//! - [`convert`]: GGUF ↔ HF safetensors conversion, above `checkpoint` and `model`.
//! - [`checkpoint`]: reading, validating and writing checkpoints; config surgery; model cards.
//! - [`quant`]: decoding ggml tensor formats (F16, BF16, Q4_0 … Q8_0, the k-quants) to `f32`.
//! - [`tokenizer`]: HF `tokenizer.json` folders, chat templates, and tokenizers rebuilt from GGUF metadata.
//! - [`hub`]: hub IDs (`org/name@rev`), the HF cache, and downloads.
//!
//! Layer numbers are 0-based everywhere and ranges are half-open (`a..b` keeps `a`, drops `b`).

pub mod api;
pub mod arch;
pub mod base;
pub mod checkpoint;
pub mod choose;
pub mod convert;
pub mod error;
pub mod eval;
pub mod fmt;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod heal;
pub mod hub;
pub mod model;
pub mod progress;
pub mod quant;
pub mod score;
pub mod select;
pub mod sweep;
pub mod tokenizer;

pub use error::{Error, Result};

/// The tool's version, recorded in every provenance file.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub mod report;
