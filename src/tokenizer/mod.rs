//! Tokenizers: HF `tokenizer.json` folders ([`hf`]), with the special tokens and chat template
//! from `tokenizer_config.json`.

pub mod hf;

pub use hf::{HfTokenizer, Message, TextStream};
