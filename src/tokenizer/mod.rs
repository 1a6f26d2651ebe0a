//! Tokenizers: HF `tokenizer.json` folders ([`hf`]), with the special tokens and chat template
//! from `tokenizer_config.json`; and the tokenizer files for exported checkpoints.
//!
//! A GGUF file carries its tokenizer as metadata (`tokenizer.ggml.*`), not as a `tokenizer.json`.
//! When a pruned GGUF model is exported as a Hugging Face folder, [`gguf_vocab`] rebuilds the
//! `tokenizer.json` and `tokenizer_config.json` that the `tokenizers` / `transformers` libraries
//! load, splitting text the way llama.cpp does for the same file.

pub mod gguf_vocab;
pub mod hf;

pub use gguf_vocab::{
    to_tokenizer_json, tokenizer_config_json, GgufVocab, TokenizerJson, VocabError,
};
pub use hf::{HfTokenizer, Message, TextStream};
