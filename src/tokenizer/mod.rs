//! Tokenizers: HF `tokenizer.json` folders ([`hf`]), with the special tokens and chat template
//! from `tokenizer_config.json`; and ([`gguf_vocab`]) the `tokenizer.json` /
//! `tokenizer_config.json` rebuilt from a GGUF file's `tokenizer.ggml.*` metadata, splitting text
//! the way llama.cpp does for the same file; and ([`to_gguf`]) the reverse, an HF folder's
//! byte-level BPE tokenizer as GGUF metadata.

pub mod from_gguf;
pub mod gguf_vocab;
pub mod hf;
pub mod to_gguf;

pub use from_gguf::{gguf_tokenizer, open_tokenizer, vocab_from_metadata};
pub use gguf_vocab::{
    to_tokenizer_json, tokenizer_config_json, GgufVocab, TokenizerJson, VocabError,
};
pub use hf::{HfTokenizer, Message, TextStream};
