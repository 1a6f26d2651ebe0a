//! Checkpoints on disk: reading and validating HF safetensors folders, writing pruned copies
//! tensor by tensor, config surgery, model cards and provenance. Outputs are written atomically
//! ([`atomic`]).

pub mod atomic;
pub mod card;
pub mod config_surgery;
pub mod floats;
pub mod gguf;
pub mod hashing;
pub mod hf;
pub mod hf_prune;
pub mod lock;
/// Every size cap in one table: the base caps ([`crate::base::limits`]) and the GGUF and
/// safetensors header caps.
pub mod limits {
    pub use super::gguf::{
        MAX_ARRAY_DEPTH, MAX_ARRAY_LEN, MAX_DIMS, MAX_KEYS, MAX_NAME_LEN, MAX_STRING_LEN,
        MAX_TENSORS,
    };
    pub use super::safetensors::{MAX_HEADER_BYTES, MAX_METADATA_ENTRIES, MAX_SHAPE_DIMS};
    pub use crate::base::limits::*;
}
pub use crate::base::links;
pub mod moe_check;
pub mod provenance;
pub mod safetensors;
pub mod shards;
pub mod synth;
pub mod verify;
