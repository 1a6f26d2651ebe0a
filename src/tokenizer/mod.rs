//! Tokenizers: HF `tokenizer.json` folders ([`hf`]), with the special tokens and chat template
//! from `tokenizer_config.json`; and the files rebuilt from GGUF metadata ([`gguf_vocab`]), so a
//! pruned GGUF model exported as a Hugging Face folder splits text the way llama.cpp does.

pub mod gguf_vocab;
pub mod hf;

pub use gguf_vocab::{
    to_tokenizer_json, tokenizer_config_json, GgufVocab, TokenizerJson, VocabError,
};
pub use hf::{HfTokenizer, Message, TextStream};
