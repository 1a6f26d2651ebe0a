//! Builds GGUF files byte by byte for the GGUF tests, independently of the crate's writer, so a
//! bug in the writer cannot hide the same bug in the reader. Also builds a small llama-like model
//! with quantized tensors (arbitrary bytes of the right sizes) and one IQ2_XXS tensor.

#![allow(dead_code)]

use std::path::Path;

pub const F32: u32 = 0;
pub const Q4_1: u32 = 3;
pub const Q8_0: u32 = 8;
pub const Q4_K: u32 = 12;
pub const Q6_K: u32 = 14;
pub const IQ2_XXS: u32 = 16;

/// `(block size, bytes per block)` for the types the tests use.
pub fn block(ty: u32) -> (u64, u64) {
    match ty {
        F32 => (1, 4),
        Q4_1 => (32, 20),
        Q8_0 => (32, 34),
        Q4_K => (256, 144),
        Q6_K => (256, 210),
        IQ2_XXS => (256, 66),
        _ => panic!("test type {ty} not in the table"),
    }
}

pub fn nbytes(ty: u32, dims: &[u64]) -> u64 {
    let (b, s) = block(ty);
    dims[0] / b * s * dims[1..].iter().product::<u64>()
}

/// Deterministic bytes that differ from tensor to tensor.
pub fn fill(seed: &str, n: u64) -> Vec<u8> {
    let mut x: u32 = seed
        .bytes()
        .fold(2166136261, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub struct Tensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: u32,
    pub data: Vec<u8>,
    /// Forced data-section offset; `None` packs tensors in order.
    pub offset: Option<u64>,
}

/// Byte offsets of the section boundaries of a built file.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub counts_end: u64,
    /// The offset where each metadata entry starts, then where the tensor infos start.
    pub kv_starts: Vec<u64>,
    pub info_starts: Vec<u64>,
    pub infos_end: u64,
    pub data_start: u64,
    pub len: u64,
}

pub struct Builder {
    pub version: u32,
    pub alignment: u64,
    pub kvs: Vec<(String, u32, Vec<u8>)>,
    pub tensors: Vec<Tensor>,
    /// Override the declared counts.
    pub n_tensors: Option<u64>,
    pub n_kv: Option<u64>,
}

pub fn s(text: &str) -> Vec<u8> {
    let mut b = (text.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(text.as_bytes());
    b
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    pub fn new() -> Self {
        Builder {
            version: 3,
            alignment: 32,
            kvs: Vec::new(),
            tensors: Vec::new(),
            n_tensors: None,
            n_kv: None,
        }
    }

    pub fn kv(mut self, key: &str, ty: u32, payload: Vec<u8>) -> Self {
        self.kvs.push((key.to_string(), ty, payload));
        self
    }

    pub fn str(self, key: &str, v: &str) -> Self {
        self.kv(key, 8, s(v))
    }

    pub fn u32(self, key: &str, v: u32) -> Self {
        self.kv(key, 4, v.to_le_bytes().to_vec())
    }

    pub fn u32s(self, key: &str, v: &[u32]) -> Self {
        let mut p = 4u32.to_le_bytes().to_vec();
        p.extend_from_slice(&(v.len() as u64).to_le_bytes());
        v.iter().for_each(|x| p.extend_from_slice(&x.to_le_bytes()));
        self.kv(key, 9, p)
    }

    pub fn strs(self, key: &str, v: &[&str]) -> Self {
        let mut p = 8u32.to_le_bytes().to_vec();
        p.extend_from_slice(&(v.len() as u64).to_le_bytes());
        v.iter().for_each(|x| p.extend_from_slice(&s(x)));
        self.kv(key, 9, p)
    }

    pub fn alignment(mut self, a: u32) -> Self {
        self.alignment = a as u64;
        self.u32("general.alignment", a)
    }

    pub fn tensor(mut self, name: &str, dims: &[u64], ty: u32) -> Self {
        let data = fill(name, nbytes(ty, dims));
        self.tensors.push(Tensor {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
            data,
            offset: None,
        });
        self
    }

    pub fn tensor_at(mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        self = self.tensor(name, dims, ty);
        self.tensors.last_mut().unwrap().offset = Some(offset);
        self
    }

    pub fn build(&self) -> (Vec<u8>, Layout) {
        let mut b = b"GGUF".to_vec();
        let mut l = Layout::default();
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(
            &self
                .n_tensors
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        b.extend_from_slice(&self.n_kv.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        l.counts_end = b.len() as u64;
        for (k, ty, payload) in &self.kvs {
            l.kv_starts.push(b.len() as u64);
            b.extend_from_slice(&s(k));
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(payload);
        }
        let a = self.alignment;
        let mut offsets = Vec::new();
        let mut next = 0u64;
        for t in &self.tensors {
            let off = t.offset.unwrap_or(next);
            offsets.push(off);
            next = off
                .saturating_add(t.data.len() as u64)
                .checked_next_multiple_of(a)
                .unwrap_or(u64::MAX);
        }
        for (t, off) in self.tensors.iter().zip(&offsets) {
            l.info_starts.push(b.len() as u64);
            b.extend_from_slice(&s(&t.name));
            b.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            t.dims
                .iter()
                .for_each(|d| b.extend_from_slice(&d.to_le_bytes()));
            b.extend_from_slice(&t.ty.to_le_bytes());
            b.extend_from_slice(&off.to_le_bytes());
        }
        l.infos_end = b.len() as u64;
        b.resize((b.len() as u64).next_multiple_of(a) as usize, 0);
        l.data_start = b.len() as u64;
        for (t, off) in self.tensors.iter().zip(&offsets) {
            // Offsets far past any real data are for out-of-bounds tests: leave them unwritten.
            let Some(at) = l.data_start.checked_add(*off).filter(|&a| a < 1 << 30) else {
                continue;
            };
            let at = at as usize;
            if b.len() < at + t.data.len() {
                b.resize(at + t.data.len(), 0);
            }
            b[at..at + t.data.len()].copy_from_slice(&t.data);
        }
        b.resize((b.len() as u64).next_multiple_of(a) as usize, 0);
        l.len = b.len() as u64;
        (b, l)
    }

    pub fn write(&self, path: &Path) -> Layout {
        let (b, l) = self.build();
        std::fs::write(path, b).unwrap();
        l
    }
}

/// The layers' per-layer KV-head counts in the toy model: distinct, so slicing is visible.
pub fn head_counts(n_layers: usize) -> Vec<u32> {
    (0..n_layers as u32).map(|i| 100 + i).collect()
}

/// A llama-like model with `n_layers` blocks. Its vocabulary and `general.tags` have exactly
/// `n_layers` entries, so a prune that sliced them as if per-layer would be caught.
pub fn toy_model(n_layers: usize) -> Builder {
    let tokens: Vec<String> = (0..n_layers).map(|i| format!("tok{i}")).collect();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut b = Builder::new()
        .str("general.architecture", "llama")
        .str("general.name", "Toy")
        .u32("llama.block_count", n_layers as u32)
        .u32("llama.embedding_length", 32)
        .u32s("llama.attention.head_count_kv", &head_counts(n_layers))
        .u32("llama.feed_forward_length", 256)
        .strs("tokenizer.ggml.tokens", &tokens)
        .strs("general.tags", &tokens)
        .tensor("token_embd.weight", &[32, 16], Q8_0);
    for i in 0..n_layers {
        b = b
            .tensor(&format!("blk.{i}.attn_norm.weight"), &[32], F32)
            .tensor(&format!("blk.{i}.attn_q.weight"), &[32, 32], Q4_1)
            .tensor(&format!("blk.{i}.attn_k.weight"), &[256, 2], IQ2_XXS)
            .tensor(&format!("blk.{i}.ffn_down.weight"), &[256, 3], Q4_K);
    }
    b.tensor("output_norm.weight", &[32], F32)
        .tensor("output.weight", &[256, 16], Q6_K)
}

/// The bytes of a tensor in a file, given its absolute offset and length.
pub fn slice(file: &[u8], offset: u64, len: u64) -> &[u8] {
    &file[offset as usize..(offset + len) as usize]
}

/// Names of the entries in a folder, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
