//! Tokenizers: HF `tokenizer.json` folders ([`hf`]), with the special tokens and chat template
//! from `tokenizer_config.json`; and, for GGUF files, which carry their tokenizer as metadata
//! (`tokenizer.ggml.*`), [`gguf_vocab`] rebuilds the `tokenizer.json` and `tokenizer_config.json`
//! that the `tokenizers` / `transformers` libraries load, splitting text as llama.cpp does.

pub mod gguf_vocab;
pub mod hf;

pub use gguf_vocab::{to_tokenizer_json, tokenizer_config_json, GgufVocab, TokenizerJson, VocabError};
pub use hf::{HfTokenizer, Message, TextStream};
