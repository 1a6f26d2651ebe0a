//! Checkpoints on disk: reading and validating HF safetensors folders, writing pruned copies
//! tensor by tensor, config surgery, model cards and provenance. Outputs are written atomically
//! ([`atomic`]).

pub mod atomic;
pub mod gguf;
