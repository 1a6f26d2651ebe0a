//! A GGUF file as a model: a [`WeightSource`] that serves GGUF tensors under their HF names
//! (dequantized to f32, shapes in HF order, llama.cpp's Q/K row permutation undone for llama),
//! and the `config.json` rebuilt from the file's metadata.
//!
//! llama.cpp's `convert_hf_to_gguf.py` permutes the rows of `q_proj` / `k_proj` (weights and
//! biases) for the `llama` architecture only, so that its RoPE can rotate adjacent pairs; qwen2
//! and qwen3 files keep HF's order (their converters do not override `modify_tensors` this way).

use super::config::{Compute, ModelConfig};
pub use super::gguf_families::check_gguf_prune;
pub(crate) use super::gguf_families::family_metadata;
use super::gguf_moe::gguf_to_hf_moe;
use super::weights::WeightSource;
use crate::arch::gguf_names::{gguf_to_hf_for, norm_shift, ROPE_FACTORS};
use crate::arch::ArchConfig;
use crate::checkpoint::gguf::{GgufModel, TensorInfo, Value};
use crate::error::{Error, IoContext, Result};
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use memmap2::Mmap;
use serde_json::json;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The weights of a GGUF model, by HF name.
pub struct GgufWeights {
    path: PathBuf,
    maps: Vec<Mmap>,
    /// HF name → the GGUF tensor.
    tensors: HashMap<String, TensorInfo>,
    /// HF name of one expert → the stacked GGUF tensor and the expert's index in it.
    experts: HashMap<String, (TensorInfo, usize)>,
    /// `(n_head, n_head_kv)` when the Q/K rows must be un-permuted.
    permute: Option<(usize, usize)>,
    /// The GGUF architecture (Gemma's norms are stored plus one).
    arch: String,
}

impl GgufWeights {
    /// Maps the tensors of `model`. Tensors without an HF name are refused, so nothing the
    /// forward pass would need is silently left out.
    pub fn new(model: &GgufModel) -> Result<Self> {
        let path = model.path().to_path_buf();
        let arch = gguf_arch(model)?;
        let mut tensors = HashMap::new();
        let mut experts = HashMap::new();
        for t in model.tensors() {
            // Phi-3's LongRoPE factors become `config.json` fields.
            if [ROPE_FACTORS.0, ROPE_FACTORS.1].contains(&t.name()) && arch == "phi3" {
                continue;
            }
            if let Some(hf) = gguf_to_hf_for(arch, t.name()) {
                tensors.insert(hf, t.clone());
                continue;
            }
            let stacked = t.dims().get(2).map_or(1, |&n| n as usize);
            let hf = gguf_to_hf_moe(t.name(), arch == "llama", stacked).ok_or_else(|| {
                Error::Unsupported(format!(
                    "`{}`: tensor `{}` has no HF counterpart that depthprune knows for `{arch}`",
                    path.display(),
                    t.name()
                ))
            })?;
            if t.dims().len() == 3 {
                experts.extend(hf.into_iter().enumerate().map(|(e, n)| (n, (t.clone(), e))));
            } else if let Some(n) = hf.into_iter().next() {
                tensors.insert(n, t.clone());
            }
        }
        let mut maps = Vec::with_capacity(model.parts().len());
        for part in model.parts() {
            let file = File::open(&part.path).at(&part.path)?;
            // SAFETY: read-only map of a file the reader has validated; as with every mmap
            // reader, a file truncated underneath us is the one hazard.
            maps.push(unsafe { Mmap::map(&file) }.at(&part.path)?);
        }
        let permute = if crate::arch::registry::by_gguf_arch(arch).is_some_and(|r| r.permute_qk) {
            let key = |k: &str| meta_u64(model, &format!("{arch}.{k}"));
            let heads = key("attention.head_count")?
                .ok_or_else(|| missing(&path, &format!("{arch}.attention.head_count")))?;
            let kv = key("attention.head_count_kv")?.unwrap_or(heads);
            Some((heads as usize, kv as usize))
        } else {
            None
        };
        Ok(GgufWeights {
            path,
            maps,
            tensors,
            experts,
            permute,
            arch: arch.to_string(),
        })
    }

    /// The GGUF tensor behind HF name `name`.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// The stacked GGUF tensor that holds expert tensor `name`, and the expert's index in it.
    pub fn expert_info(&self, name: &str) -> Option<(&TensorInfo, usize)> {
        self.experts.get(name).map(|(t, e)| (t, *e))
    }

    /// The HF names of all tensors, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        v.extend(self.experts.keys().map(String::as_str));
        v.sort_unstable();
        v
    }

    /// The HF shape of tensor `name` (empty if there is none).
    pub fn shape_of(&self, name: &str) -> Vec<usize> {
        match (self.tensors.get(name), self.experts.get(name)) {
            (Some(t), _) => t.dims().iter().rev().map(|&d| d as usize).collect(),
            (None, Some((t, _))) => t.dims().iter().rev().skip(1).map(|&d| d as usize).collect(),
            (None, None) => Vec::new(),
        }
    }

    /// The stored bytes of tensor `name` (one expert's slab for an expert tensor), its GGUF
    /// tensor, its element count and its HF shape.
    fn raw(&self, name: &str) -> Result<(&TensorInfo, &[u8], usize, Vec<usize>)> {
        let (t, expert) = match (self.tensors.get(name), self.experts.get(name)) {
            (Some(t), _) => (t, None),
            (None, Some((t, e))) => (t, Some(*e)),
            (None, None) => {
                return Err(Error::corrupt(
                    &self.path,
                    format!("the checkpoint has no tensor `{name}`"),
                ))
            }
        };
        let outside = || {
            Error::corrupt(
                &self.path,
                format!("tensor `{}` lies outside the file", t.name()),
            )
        };
        let mut start = usize::try_from(t.file_offset()).map_err(|_| outside())?;
        let mut len = usize::try_from(t.n_bytes()).map_err(|_| outside())?;
        let mut n = usize::try_from(t.n_elements()).map_err(|_| outside())?;
        let mut shape: Vec<usize> = t.dims().iter().rev().map(|&d| d as usize).collect();
        if let Some(e) = expert {
            // One expert's slab: the experts are the outermost dimension, so each is a
            // contiguous run of whole rows (and whole quantization blocks).
            let k = shape.remove(0);
            if k == 0 || !len.is_multiple_of(k) || !n.is_multiple_of(k) {
                return Err(Error::corrupt(
                    &self.path,
                    format!("tensor `{}` does not split into {k} experts", t.name()),
                ));
            }
            (len, n) = (len / k, n / k);
            start = start.checked_add(e * len).ok_or_else(outside)?;
        }
        let bytes = self
            .maps
            .get(t.part())
            .and_then(|m| m.get(start..start.checked_add(len)?))
            .ok_or_else(outside)?;
        Ok((t, bytes, n, shape))
    }

    /// Drops the file pages of `bytes` (a slice of one of the maps, just copied) from this
    /// process's resident memory; they stay in the page cache.
    fn release(&self, bytes: &[u8]) {
        for m in &self.maps {
            super::weights::release_pages(m, bytes);
        }
    }

    /// Tensor `name`'s ggml blocks as a `(rows, cols)` quantized matrix in HF layout (Q/K rows
    /// in HF order), when it is a matrix stored in a block type the quantized kernels multiply.
    pub fn quantized_matrix(&self, name: &str) -> Result<Option<Arc<QTensor>>> {
        let (t, bytes, _, shape) = self.raw(name)?;
        let Some(dtype) = super::quantized::kernel_dtype(t.ggml_type().id()) else {
            return Ok(None);
        };
        let [rows, cols] = shape[..] else {
            return Ok(None);
        };
        let bad = |e: Error| Error::corrupt(&self.path, e.to_string());
        let q = match self.qk_heads(name) {
            Some(n_head) => {
                let permuted = permute_impl(bytes, rows, n_head, false)
                    .ok_or_else(|| self.bad_heads(t, rows, n_head))?;
                self.release(bytes);
                super::quantized::qtensor(dtype, &permuted, rows, cols, t.name(), &|_| {})
            }
            None => super::quantized::qtensor(dtype, bytes, rows, cols, t.name(), &|piece| {
                self.release(piece)
            }),
        }
        .map_err(bad)?;
        Ok(Some(q))
    }

    /// The heads whose Q/K rows llama.cpp permuted in tensor `name`, if it is one.
    fn qk_heads(&self, name: &str) -> Option<usize> {
        let (heads, kv) = self.permute?;
        if name.contains("self_attn.q_proj.") {
            Some(heads)
        } else if name.contains("self_attn.k_proj.") {
            Some(kv)
        } else {
            None
        }
    }

    fn bad_heads(&self, t: &TensorInfo, rows: usize, n_head: usize) -> Error {
        Error::corrupt(
            &self.path,
            format!(
                "tensor `{}` has {rows} rows, which do not split into {n_head} heads of even size",
                t.name()
            ),
        )
    }

    /// Tensor `name` as f32 values in HF layout, with its HF shape.
    pub fn values(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let (t, bytes, n, shape) = self.raw(name)?;
        let bad = |e: Error| Error::corrupt(&self.path, format!("tensor `{}`: {e}", t.name()));
        let format = crate::quant::QuantFormat::from_type_id(t.ggml_type().id())
            .map_err(|e| bad(e.into()))?;
        if format.byte_size(n).map_err(|e| bad(e.into()))? != bytes.len() {
            return Err(bad(Error::Invalid(format!(
                "{} bytes do not hold {n} values of {}",
                bytes.len(),
                format.name()
            ))));
        }
        // Whole blocks a few MiB at a time, each piece's file pages released once decoded, so
        // a large tensor is never resident twice.
        let (bs, ts) = (format.block_size(), format.type_size());
        let blocks_per = ((4usize << 20) / ts).max(1);
        let mut values = vec![0f32; n];
        let pieces = bytes.chunks(blocks_per * ts);
        for (piece, out) in pieces.zip(values.chunks_mut(blocks_per * bs)) {
            crate::quant::dequantize_into(format, piece, out).map_err(bad)?;
            self.release(piece);
        }
        let shift = norm_shift(&self.arch, name);
        if shift != 0.0 {
            values.iter_mut().for_each(|v| *v -= shift);
        }
        if let Some(n_head) = self.qk_heads(name) {
            values = unpermute_rows(&values, shape[0], n_head)
                .ok_or_else(|| self.bad_heads(t, shape[0], n_head))?;
        }
        Ok((values, shape))
    }
}

impl GgufWeights {
    /// `values` of HF tensor `name` (HF layout) in the element order of its GGUF tensor: the same
    /// row-major data (GGUF's dims are HF's reversed), with the Q/K rows permuted back where the
    /// file's architecture has them permuted.
    pub fn to_gguf_layout(&self, name: &str, values: Vec<f32>) -> Result<Vec<f32>> {
        let t = self.tensors.get(name).ok_or_else(|| {
            Error::corrupt(&self.path, format!("the checkpoint has no tensor `{name}`"))
        })?;
        if values.len() as u64 != t.n_elements() {
            return Err(Error::Invalid(format!(
                "tensor `{name}` has {} elements, not {}",
                t.n_elements(),
                values.len()
            )));
        }
        let shift = norm_shift(&self.arch, name);
        if shift != 0.0 {
            let mut values = values;
            values.iter_mut().for_each(|v| *v += shift);
            return Ok(values);
        }
        let Some((heads, kv)) = self.permute else {
            return Ok(values);
        };
        let n_head = if name.contains("self_attn.q_proj.") {
            heads
        } else if name.contains("self_attn.k_proj.") {
            kv
        } else {
            return Ok(values);
        };
        let rows = t.dims().last().copied().unwrap_or(1) as usize;
        permute_rows(&values, rows, n_head).ok_or_else(|| {
            Error::Invalid(format!(
                "tensor `{name}` has {rows} rows, which do not split into {n_head} heads"
            ))
        })
    }
}

/// Undoes llama.cpp's per-head row permutation: GGUF row `2j + t` of a head holds HF row
/// `t * head_dim / 2 + j`. `values` holds `rows` rows of equal length.
pub fn unpermute_rows(values: &[f32], rows: usize, n_head: usize) -> Option<Vec<f32>> {
    permute_impl(values, rows, n_head, false)
}

/// llama.cpp's permutation itself (HF order → GGUF order), for writing llama GGUF files.
pub fn permute_rows(values: &[f32], rows: usize, n_head: usize) -> Option<Vec<f32>> {
    permute_impl(values, rows, n_head, true)
}

fn permute_impl<T: Copy + Default>(
    values: &[T],
    rows: usize,
    n_head: usize,
    forward: bool,
) -> Option<Vec<T>> {
    if n_head == 0
        || rows == 0
        || !rows.is_multiple_of(2 * n_head)
        || !values.len().is_multiple_of(rows)
    {
        return None;
    }
    let cols = values.len() / rows;
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = vec![T::default(); values.len()];
    for h in 0..n_head {
        for t in 0..2 {
            for j in 0..half {
                let hf = h * head_dim + t * half + j;
                let gguf = h * head_dim + 2 * j + t;
                let (dst, src) = if forward { (gguf, hf) } else { (hf, gguf) };
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    Some(out)
}

impl WeightSource for GgufWeights {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        let (values, shape) = self.values(name)?;
        Ok(Tensor::from_vec(values, shape.as_slice(), &Device::Cpu)?)
    }

    fn quantized(&self, name: &str) -> Result<Option<Arc<QTensor>>> {
        self.quantized_matrix(name)
    }

    fn stored_compute(&self) -> Compute {
        // The layers' matrices decide: any in a block type the kernels multiply runs quantized.
        let types = || {
            (self.tensors.iter())
                .filter(|(n, t)| n.contains(".layers.") && t.dims().len() == 2)
                .map(|(_, t)| t.ggml_type().id())
        };
        if types().any(|id| super::quantized::kernel_dtype(id).is_some()) {
            Compute::Quant
        } else if types().any(|id| id == 1 || id == 30) {
            Compute::Bf16
        } else {
            Compute::F32
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name) || self.experts.contains_key(name)
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.contains(name).then(|| self.shape_of(name))
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

pub(super) fn missing(path: &Path, key: &str) -> Error {
    Error::corrupt(path, format!("metadata `{key}` is missing"))
}

pub(super) fn meta_u64(model: &GgufModel, key: &str) -> Result<Option<u64>> {
    match model.metadata().get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            Error::corrupt(
                model.path(),
                format!(
                    "metadata `{key}` is {}, not a non-negative integer",
                    v.type_name()
                ),
            )
        }),
    }
}

fn meta_f64(model: &GgufModel, key: &str) -> Result<Option<f64>> {
    match model.metadata().get(key) {
        None => Ok(None),
        Some(Value::F32(x)) => Ok(Some(f64::from(*x))),
        Some(Value::F64(x)) => Ok(Some(*x)),
        Some(v) => v.as_u64().map(|x| Some(x as f64)).ok_or_else(|| {
            Error::corrupt(
                model.path(),
                format!("metadata `{key}` is {}, not a number", v.type_name()),
            )
        }),
    }
}

/// The GGUF architecture, checked against those the forward pass reads.
pub fn gguf_arch(model: &GgufModel) -> Result<&str> {
    let arch = model.architecture()?;
    if crate::arch::registry::by_gguf_arch(arch).is_some() {
        Ok(arch)
    } else {
        Err(Error::Unsupported(format!(
            "`{}`: GGUF architecture `{arch}` is not supported (supported: {})",
            model.path().display(),
            crate::arch::registry::gguf_arches().join(", ")
        )))
    }
}

/// The HF `config.json` equivalent of a GGUF model's metadata.
pub fn gguf_config_json(model: &GgufModel) -> Result<serde_json::Value> {
    let path = model.path();
    let arch = gguf_arch(model)?;
    let row = crate::arch::registry::by_gguf_arch(arch);
    let model_type = row.map_or(arch, |r| r.model_type);
    let k = |s: &str| format!("{arch}.{s}");
    let need =
        |key: String| -> Result<u64> { meta_u64(model, &key)?.ok_or_else(|| missing(path, &key)) };
    // Checked against the `blk.N` tensors, not just read (issue 13).
    let layers = model.block_count()? as u64;
    let hidden = need(k("embedding_length"))?;
    let ffn = need(k("feed_forward_length"))?;
    let heads = need(k("attention.head_count"))?;
    if heads == 0 {
        return Err(Error::corrupt(
            path,
            format!("`{}` is 0", k("attention.head_count")),
        ));
    }
    let kv = meta_u64(model, &k("attention.head_count_kv"))?.unwrap_or(heads);
    let head_dim = meta_u64(model, &k("attention.key_length"))?.unwrap_or(hidden / heads);
    let eps = meta_f64(model, &k("attention.layer_norm_rms_epsilon"))?
        .ok_or_else(|| missing(path, &k("attention.layer_norm_rms_epsilon")))?;
    let theta = meta_f64(model, &k("rope.freq_base"))?.unwrap_or(10000.0);
    let ctx = meta_u64(model, &k("context_length"))?.unwrap_or(2048);
    let find = |name: &str| model.tensors().iter().find(|t| t.name() == name);
    if find("rope_freqs.weight").is_some() {
        return Err(Error::Unsupported(format!(
            "`{}`: the file has a RoPE frequency table (`rope_freqs.weight`, Llama 3.1 scaling), which depthprune does not read yet",
            path.display()
        )));
    }
    let embd = find("token_embd.weight")
        .ok_or_else(|| Error::corrupt(path, "no `token_embd.weight` tensor"))?;
    let vocab = embd.dims().get(1).copied().unwrap_or(0);
    let tied = find("output.weight").is_none();
    let bias = find("blk.0.attn_q.bias").is_some();
    let serde_json::Value::Object(mut cfg) = json!({
        "architectures": [row.map_or("LlamaForCausalLM", |r| r.hf_class)],
        "model_type": model_type,
        "num_hidden_layers": layers,
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": head_dim,
        "rms_norm_eps": eps,
        "rope_theta": theta,
        "max_position_embeddings": ctx,
        "vocab_size": vocab,
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
    }) else {
        unreachable!("`json!` of an object literal is an object")
    };
    if model_type != "qwen2" && model_type != "qwen2_moe" {
        // qwen2 always has Q/K/V biases; the others say so in `attention_bias`.
        cfg.insert("attention_bias".into(), json!(bias));
    }
    cfg.insert("mlp_bias".into(), json!(false));
    if let Some(kind) = model.metadata().get_str(&k("rope.scaling.type")) {
        match kind {
            "none" => {}
            "linear" => {
                let factor = meta_f64(model, &k("rope.scaling.factor"))?
                    .ok_or_else(|| missing(path, &k("rope.scaling.factor")))?;
                cfg.insert(
                    "rope_scaling".into(),
                    json!({"rope_type": "linear", "factor": factor}),
                );
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "`{}`: RoPE scaling `{other}` is not supported (supported: none, linear)",
                    path.display()
                )))
            }
        }
    }
    if let Some(n) = meta_u64(model, &k("expert_count"))?.filter(|&n| n > 0) {
        super::gguf_moe::add_moe_config(model, arch, n, layers as usize, &mut cfg)?;
    }
    for (key, field) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
    ] {
        if let Some(id) = meta_u64(model, key)? {
            cfg.insert(field.into(), json!(id));
        }
    }
    cfg.insert("torch_dtype".into(), json!("float32"));
    super::gguf_families::family_config(model, arch, &mut cfg)?;
    Ok(serde_json::Value::Object(cfg))
}

/// Opens a GGUF file as a model: its configuration and its weights.
pub fn open_gguf(path: &Path) -> Result<(ModelConfig, std::sync::Arc<GgufWeights>, GgufModel)> {
    let model = GgufModel::open(path)?;
    let raw = gguf_config_json(&model)?;
    let arch = ArchConfig::from_value(&raw).map_err(|m| Error::config(path, m))?;
    let cfg = ModelConfig::new(arch).map_err(|m| Error::config(path, m))?;
    let weights = std::sync::Arc::new(GgufWeights::new(&model)?);
    super::gguf_moe::check_gguf_moe(&model)?;
    Ok((cfg, weights, model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::gguf::{GgmlType, GgufWriter};

    /// Writes a 1-layer GGUF of architecture `arch` (hidden 8, 2 heads of 4, 1 KV head, ffn 8,
    /// vocab 6), every tensor F32 with values 0, 1, 2, … in file order, and no `output.weight`.
    fn tiny_gguf(dir: &Path, arch: &str) -> PathBuf {
        let path = dir.join(format!("{arch}.gguf"));
        let mut tensors: Vec<(&str, Vec<u64>)> = vec![
            ("token_embd.weight", vec![8, 6]),
            ("output_norm.weight", vec![8]),
            ("blk.0.attn_norm.weight", vec![8]),
            ("blk.0.attn_q.weight", vec![8, 8]),
            ("blk.0.attn_k.weight", vec![8, 4]),
            ("blk.0.attn_v.weight", vec![8, 4]),
            ("blk.0.attn_output.weight", vec![8, 8]),
            ("blk.0.ffn_norm.weight", vec![8]),
            ("blk.0.ffn_gate.weight", vec![8, 8]),
            ("blk.0.ffn_up.weight", vec![8, 8]),
            ("blk.0.ffn_down.weight", vec![8, 8]),
        ];
        if arch == "qwen3" {
            tensors.push(("blk.0.attn_q_norm.weight", vec![4]));
            tensors.push(("blk.0.attn_k_norm.weight", vec![4]));
        }
        let kvs: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::string(arch)),
            (format!("{arch}.block_count"), Value::U32(1)),
            (format!("{arch}.embedding_length"), Value::U32(8)),
            (format!("{arch}.feed_forward_length"), Value::U32(8)),
            (format!("{arch}.attention.head_count"), Value::U32(2)),
            (format!("{arch}.attention.head_count_kv"), Value::U32(1)),
            (
                format!("{arch}.attention.layer_norm_rms_epsilon"),
                Value::F32(1e-5),
            ),
            (format!("{arch}.rope.freq_base"), Value::F32(10000.0)),
            (format!("{arch}.context_length"), Value::U32(64)),
        ];
        let mut w = GgufWriter::new(Vec::new(), &path, 32).unwrap();
        w.header(tensors.len() as u64, kvs.len() as u64).unwrap();
        for (k, v) in &kvs {
            w.kv(k, v).unwrap();
        }
        for (name, dims) in &tensors {
            w.tensor_info(name, dims, GgmlType::F32).unwrap();
        }
        for (_, dims) in &tensors {
            let n: u64 = dims.iter().product();
            let bytes: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
            w.write_tensor(&bytes).unwrap();
        }
        std::fs::write(&path, w.finish().unwrap()).unwrap();
        path
    }

    #[test]
    fn serves_hf_names_shapes_and_unpermuted_rows() {
        let dir = tempfile::tempdir().unwrap();
        for arch in ["llama", "qwen3"] {
            let path = tiny_gguf(dir.path(), arch);
            let (cfg, w, _) = open_gguf(&path).unwrap();
            assert_eq!(cfg.arch.model_type, arch);
            assert_eq!(cfg.arch.num_key_value_heads, 1);
            assert_eq!(cfg.arch.vocab_size, 6);
            assert!(cfg.arch.tie_word_embeddings);
            assert_eq!(cfg.arch.head_dim, 4);
            assert_eq!(
                w.shape("model.layers.0.self_attn.k_proj.weight"),
                Some(vec![4, 8])
            );
            assert_eq!(w.shape("model.embed_tokens.weight"), Some(vec![6, 8]));
            assert!(!w.contains("lm_head.weight"));
            // Row i starts with 8 × (the GGUF row it came from).
            let first_col = |name: &str| -> Vec<f32> {
                let (v, shape) = w.values(name).unwrap();
                v.chunks(shape[1]).map(|r| r[0] / 8.0).collect()
            };
            let (q_rows, k_rows, v_rows): (Vec<f32>, Vec<f32>, Vec<f32>) = if arch == "llama" {
                (
                    vec![0., 2., 1., 3., 4., 6., 5., 7.],
                    vec![0., 2., 1., 3.],
                    vec![0., 1., 2., 3.],
                )
            } else {
                (
                    (0..8).map(|x| x as f32).collect(),
                    vec![0., 1., 2., 3.],
                    vec![0., 1., 2., 3.],
                )
            };
            assert_eq!(first_col("model.layers.0.self_attn.q_proj.weight"), q_rows);
            assert_eq!(first_col("model.layers.0.self_attn.k_proj.weight"), k_rows);
            assert_eq!(first_col("model.layers.0.self_attn.v_proj.weight"), v_rows);
            let model = super::super::Model::from_source(cfg, w, &|_| true).unwrap();
            let x = model.tokens(&[&[1u32, 2, 3][..]]).unwrap();
            assert_eq!(model.forward(&x, &[], None).unwrap().dims(), &[1, 3, 6]);
        }
    }

    #[test]
    fn refuses_unknown_tensors_and_architectures() {
        let dir = tempfile::tempdir().unwrap();
        let path = tiny_gguf(dir.path(), "gpt2");
        let err = open_gguf(&path).err().unwrap().to_string();
        assert!(err.contains("`gpt2`") && err.contains("gpt2.gguf"), "{err}");
    }

    #[test]
    fn permutation_round_trips_and_matches_llama_cpp() {
        // 2 heads of head_dim 4, 1 column: HF rows [0 1 2 3 | 4 5 6 7].
        let hf: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let gguf = permute_rows(&hf, 8, 2).unwrap();
        // reshape(2, 2, 2) swapaxes(1, 2): per head, rows interleave halves.
        assert_eq!(gguf, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        assert_eq!(unpermute_rows(&gguf, 8, 2).unwrap(), hf);
        // Two columns move with their row.
        let wide: Vec<f32> = (0..16).map(|x| x as f32).collect();
        let p = permute_rows(&wide, 8, 2).unwrap();
        assert_eq!(&p[2..4], &[4., 5.]);
        assert_eq!(unpermute_rows(&p, 8, 2).unwrap(), wide);
        assert!(permute_rows(&hf, 8, 3).is_none());
        assert!(permute_rows(&hf, 0, 1).is_none());
    }
}
