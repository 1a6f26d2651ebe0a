//! Format conversion between GGUF files and Hugging Face safetensors folders: GGUF → HF
//! ([`to_hf`]) and HF → GGUF ([`to_gguf`]). Conversion reads weights through the forward pass's
//! loaders ([`crate::model`]) and writes with `checkpoint`'s writers, so it sits above both.

pub mod to_gguf;
pub mod to_hf;
