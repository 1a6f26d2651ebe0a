//! depthprune: depth pruning for decoder-only language models.
//!
//! The library measures which transformer layers matter, removes whole layers from Hugging Face
//! safetensors folders and GGUF files, and accounts exactly for what was removed. The binary
//! (`src/main.rs`, `cli/`) is a thin layer over these modules:
//!
//! - [`select`]: the layer SPEC grammar (`3..29`, `last:8`, …) and the removal plan it resolves to.
//! - [`arch`]: architecture descriptions read from `config.json`, tensor naming, parameter counts.
//! - [`checkpoint`]: reading, validating and writing checkpoints; config surgery; model cards.
//!
//! Layer numbers are 0-based everywhere and ranges are half-open (`a..b` keeps `a`, drops `b`).

pub mod arch;
pub mod checkpoint;
pub mod error;
pub mod eval;
pub mod model;
pub mod progress;
pub mod select;
pub mod tokenizer;

pub use error::{Error, Result};

/// The tool's version, recorded in every provenance file.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
