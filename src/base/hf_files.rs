//! The file names of a Hugging Face model folder, shared by the readers, the writers and the
//! symlink check ([`super::links`]).

/// The model's configuration.
pub const CONFIG_FILE: &str = "config.json";
/// The weights of a single-shard checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The shard index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Files besides the weights that a pruned checkpoint carries over unchanged.
pub const SIDE_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "LICENSE",
    "LICENSE.txt",
    "NOTICE",
];
