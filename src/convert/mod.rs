//! Format conversion between GGUF files and Hugging Face safetensors folders: GGUF → HF
//! ([`to_hf`]) and HF → GGUF ([`to_gguf`], quantized with [`quantize`]'s mixes on request). Conversion reads weights through the forward pass's
//! loaders ([`crate::model`]) and writes with `checkpoint`'s writers, so it sits above both.

pub mod quantize;
pub mod to_gguf;
pub mod to_hf;
