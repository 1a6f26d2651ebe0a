//! Checkpoints on disk: reading and validating HF safetensors folders, writing pruned copies
//! tensor by tensor, config surgery, model cards and provenance. Outputs are written atomically
//! ([`atomic`]).

pub mod atomic;
pub mod card;
pub mod config_surgery;
pub mod convert;
pub mod convert_gguf;
pub mod floats;
pub mod gguf;
pub mod hashing;
pub mod hf;
pub mod hf_prune;
pub mod limits;
pub mod links;
pub mod moe_check;
pub mod provenance;
pub mod safetensors;
pub mod shards;
pub mod synth;
pub mod verify;
