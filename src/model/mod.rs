//! The forward pass: plain candle code, f32 on the CPU, for llama, mistral, qwen2, qwen3, the
//! dense families Gemma 2, Gemma 3 (text), Phi-3 and OLMo 2, and the mixture-of-experts families
//! qwen2_moe, qwen3_moe and mixtral.
//!
//! [`Model`] is the engine that evaluation, scoring and healing call. It exposes the pieces
//! ([`Model::embed`], [`Model::layer`], [`Model::norm`], [`Model::lm_head`]) and a forward pass
//! that skips a set of layers and shows each layer's input, attention output, MLP output and
//! output to a tap ([`Model::forward_hidden`]). Weights come through a [`WeightSource`]; layers that
//! are not resident are loaded for the one forward that needs them and dropped after, so a model
//! can run one layer at a time.

pub(crate) mod alloc;
mod attention;
mod config;
mod family;
mod fastmath;
mod generate;
pub mod gguf;
mod gguf_families;
pub mod gguf_moe;
mod half_gemm;
mod head;
pub mod kernel;
mod layer;
mod linear;
pub mod machine;
pub mod moe;
mod norm;
mod ops;
mod quantized;
mod rope;
mod self_attention;
pub mod stream;
mod weights;
mod widen;

pub use alloc::{return_freed_memory, reuse_freed_memory};
pub use config::{
    compute_choice, offload_choice, with_compute, with_offload, Compute, ComputeChoice, LongRope,
    ModelConfig, RopeScaling,
};
pub use family::{Activation, FamilyOpts};
pub use fastmath::{gelu_tanh_mul, log_sum_exp, silu_mul, softmax_unnormalised};
pub use generate::{argmax, generate, GenerateOpts, Generation, Sampler, Sampling};
pub use head::RowScore;
pub use layer::{
    Attention, AttnCtx, DecoderLayer, FeedForward, LayerCache, LayerOutput, Linear, Mlp, RmsNorm,
};
pub use moe::SparseMoe;
pub use rope::Rope;
pub use weights::{HfFolder, WeightSource, INDEX_FILE, SINGLE_FILE};

use crate::error::{Error, Result};
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// What a tap sees of one layer during [`Model::forward_hidden`]. All tensors are
/// `(batch, seq, hidden)`, before the final norm.
pub struct LayerTap<'a> {
    /// The layer's index in the checkpoint (0-based).
    pub layer: usize,
    /// The layer's input (the residual stream entering it).
    pub input: &'a Tensor,
    /// The attention output, the MLP output and the layer's output.
    pub parts: &'a LayerOutput,
}

/// Keys and values cached across forwards, one slot per checkpoint layer (skipped layers keep
/// an empty slot). All sequences in a batch share positions; a sequence may start with left
/// padding that no position attends to (prompts of different lengths generating as one batch).
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    len: usize,
    /// Left padding of each sequence (empty: none).
    pad: Vec<usize>,
}

impl KvCache {
    /// An empty cache for a model with `n_layers` layers.
    pub fn new(n_layers: usize) -> Self {
        KvCache {
            layers: vec![LayerCache::default(); n_layers],
            len: 0,
            pad: Vec::new(),
        }
    }

    /// An empty cache for a batch whose sequence `b` starts with `pad[b]` padding positions.
    /// Under RoPE a sequence shifted right by its padding scores as it does alone (scores
    /// depend only on distances); the padding is never attended to.
    pub fn left_padded(n_layers: usize, pad: Vec<usize>) -> Self {
        KvCache {
            pad,
            ..KvCache::new(n_layers)
        }
    }

    /// Keeps only the sequences `rows` of the batch, in that order (finished generations leave
    /// the batch).
    pub fn retain(&mut self, rows: &[usize]) -> Result<()> {
        let index = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            &Device::Cpu,
        )?;
        self.layers = (self.layers.iter())
            .map(|l| l.select(&index))
            .collect::<Result<_>>()?;
        if !self.pad.is_empty() {
            self.pad = rows.iter().map(|&r| self.pad[r]).collect();
        }
        Ok(())
    }

    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// This cache of one sequence, repeated for `n` sequences that continue it (scoring several
    /// continuations of one context, [`crate::eval::loglik`]).
    pub fn repeat(&self, n: usize) -> Result<Self> {
        Ok(KvCache {
            layers: (self.layers.iter())
                .map(|l| l.repeat(n))
                .collect::<Result<_>>()?,
            len: self.len,
            pad: self
                .pad
                .iter()
                .flat_map(|&p| std::iter::repeat_n(p, n))
                .collect(),
        })
    }
}

/// The token embedding: floats, or under [`Compute::Quant`] ggml blocks whose rows are widened to
/// f32 only as a batch looks them up.
#[derive(Clone)]
enum Embedding {
    Dense(Tensor),
    Quant(Arc<QTensor>),
}

impl Embedding {
    const NAME: &'static str = "model.embed_tokens.weight";

    fn load(src: &dyn WeightSource, shape: &[usize], compute: Compute) -> Result<Self> {
        if compute == Compute::Quant {
            layer::check_shape(src, Self::NAME, shape)?;
            if let Some(q) = src.quantized(Self::NAME)? {
                return Ok(Embedding::Quant(q));
            }
        }
        Ok(Embedding::Dense(layer::load_in(
            src,
            Self::NAME,
            shape,
            compute,
        )?))
    }

    /// The embedding as the tied output projection.
    fn as_linear(&self) -> Linear {
        match self {
            Embedding::Dense(w) => Linear::from_weight(w.clone()),
            Embedding::Quant(q) => Linear::from_quant(vec![q.clone()]),
        }
    }

    /// Rows `ids` (flat), in the stored precision (f32 when quantized).
    fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Embedding::Dense(w) => Ok(w.index_select(ids, 0)?),
            Embedding::Quant(q) => quantized::rows(q, ids),
        }
    }
}

/// A decoder-only model ready to run. Cloning shares the weights.
#[derive(Clone)]
pub struct Model {
    cfg: ModelConfig,
    source: Arc<dyn WeightSource>,
    embed_tokens: Embedding,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    /// The RoPE of sliding layers, when it differs (Gemma 3).
    local_rope: Option<Rope>,
    /// Resident layers by checkpoint index; `None` is loaded on demand.
    layers: Vec<Option<Arc<DecoderLayer>>>,
}

impl Model {
    /// Opens an HF folder or a `.gguf` file with every layer resident.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, &[])
    }

    /// Opens an HF folder or a `.gguf` file, leaving the layers in `skip` unloaded.
    pub fn open_with(dir: &Path, skip: &[usize]) -> Result<Self> {
        let (cfg, source) = open_checkpoint(dir)?;
        Self::from_source(cfg, source, &|i| !skip.contains(&i))
    }

    /// Builds a model from any weight source; layers for which `resident` is false, and every
    /// layer inside [`with_offload`], are not loaded now (a forward that needs one loads it for
    /// that forward only).
    pub fn from_source(
        cfg: ModelConfig,
        source: Arc<dyn WeightSource>,
        resident: &dyn Fn(usize) -> bool,
    ) -> Result<Self> {
        // What the caller freed before the weights arrive (a tokenizer's transient memory) leaves
        // the process instead of sitting beside them.
        alloc::return_freed_memory();
        let a = &cfg.arch;
        let src = source.as_ref();
        let embed_tokens = Embedding::load(src, &[a.vocab_size, a.hidden_size], cfg.compute)?;
        let norm = RmsNorm::new_in(
            src,
            "model.norm.weight",
            a.hidden_size,
            a.rms_norm_eps,
            cfg.family.norm_plus_one,
        )?;
        let lm_head = if a.tie_word_embeddings {
            embed_tokens.as_linear()
        } else {
            Linear::new_in(
                src,
                "lm_head",
                a.hidden_size,
                a.vocab_size,
                false,
                cfg.compute,
            )?
        };
        let rotary = cfg.family.rotary_dim;
        let rope = Rope::new(rotary, a.rope_theta, &cfg.rope_scaling);
        let local_rope = (cfg.family.local_rope.as_ref()).map(|(t, s)| Rope::new(rotary, *t, s));
        let offload = offload_choice();
        let layers = (0..a.num_hidden_layers)
            .map(|i| {
                if resident(i) && !offload {
                    DecoderLayer::load(src, &cfg, i).map(|l| Some(Arc::new(l)))
                } else {
                    Ok(None)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Model {
            cfg,
            source,
            embed_tokens,
            norm,
            lm_head,
            rope,
            local_rope,
            layers,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// This model with the layers in `replaced` swapped in (a healed removal measured without
    /// writing it); every other weight is shared.
    pub fn with_layers(&self, replaced: &BTreeMap<usize, DecoderLayer>) -> Result<Model> {
        let mut m = self.clone();
        for (&i, layer) in replaced {
            m.check_index(i)?;
            m.layers[i] = Some(Arc::new(layer.clone()));
        }
        Ok(m)
    }

    /// Whether every layer is resident (none is loaded on demand).
    pub fn all_resident(&self) -> bool {
        self.layers.iter().all(Option::is_some)
    }

    /// Layer `i`: the resident one, or loaded now for the caller to drop.
    pub fn fetch_layer(&self, i: usize) -> Result<Arc<DecoderLayer>> {
        self.check_index(i)?;
        match &self.layers[i] {
            Some(l) => Ok(l.clone()),
            None => Ok(Arc::new(DecoderLayer::load(
                self.source.as_ref(),
                &self.cfg,
                i,
            )?)),
        }
    }

    /// Where the weights come from.
    pub fn source(&self) -> &Arc<dyn WeightSource> {
        &self.source
    }

    /// Layers in the checkpoint.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn vocab_size(&self) -> usize {
        self.cfg.arch.vocab_size
    }

    /// The checkpoint this model reads.
    pub fn path(&self) -> &Path {
        self.source.path()
    }

    /// Token ids `(batch, seq)` as a tensor, checking every id against the vocabulary.
    pub fn tokens(&self, rows: &[&[u32]]) -> Result<Tensor> {
        let t = rows.first().map_or(0, |r| r.len());
        if t == 0 || rows.iter().any(|r| r.len() != t) {
            return Err(Error::Invalid(
                "token rows must be non-empty and of equal length".into(),
            ));
        }
        let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        if let Some(&bad) = flat.iter().find(|&&id| id as usize >= self.vocab_size()) {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the vocabulary of {} entries",
                self.vocab_size()
            )));
        }
        Ok(Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu)?)
    }

    /// Embeds token ids `(batch, seq)` into `(batch, seq, hidden)`.
    pub fn embed(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let ids = tokens.flatten_all()?;
        let xs = self
            .embed_tokens
            .rows(&ids)?
            .to_dtype(candle_core::DType::F32)?
            .reshape((b, t, self.cfg.arch.hidden_size))?;
        let f = &self.cfg.family;
        let Some(scale) = f.embed_scale else {
            return Ok(xs);
        };
        // Gemma multiplies by `√hidden` in the model's dtype, scale and product both rounded.
        Ok(match f.embed_dtype {
            None => (xs * scale as f64)?,
            Some(dt) => {
                let s = Tensor::new(scale, &Device::Cpu)?
                    .to_dtype(dt)?
                    .to_dtype(candle_core::DType::F32)?;
                xs.broadcast_mul(&s)?
                    .to_dtype(dt)?
                    .to_dtype(candle_core::DType::F32)?
            }
        })
    }

    /// Layer `i` if it is resident; otherwise an error (see [`Model::load_layer`]).
    pub fn layer(&self, i: usize) -> Result<&DecoderLayer> {
        match self.layers.get(i) {
            Some(Some(l)) => Ok(l),
            Some(None) => Err(Error::Invalid(format!("layer {i} is not loaded"))),
            None => Err(Error::Invalid(format!(
                "layer {i} is out of range: the model has {} layers",
                self.n_layers()
            ))),
        }
    }

    /// Makes layer `i` resident.
    pub fn load_layer(&mut self, i: usize) -> Result<()> {
        self.check_index(i)?;
        if self.layers[i].is_none() {
            self.layers[i] = Some(Arc::new(DecoderLayer::load(
                self.source.as_ref(),
                &self.cfg,
                i,
            )?));
        }
        Ok(())
    }

    /// Drops layer `i`'s weights; later forwards load it on demand.
    pub fn unload_layer(&mut self, i: usize) -> Result<()> {
        self.check_index(i)?;
        self.layers[i] = None;
        Ok(())
    }

    fn check_index(&self, i: usize) -> Result<()> {
        if i >= self.n_layers() {
            return Err(Error::Invalid(format!(
                "layer {i} is out of range: the model has {} layers",
                self.n_layers()
            )));
        }
        Ok(())
    }

    /// The final RMSNorm.
    pub fn norm(&self, xs: &Tensor) -> Result<Tensor> {
        self.norm.forward(xs)
    }

    /// The output projection (apply [`Model::norm`] first), with Gemma 2's final soft-capping
    /// `tanh(x / c) · c`.
    pub fn lm_head(&self, xs: &Tensor) -> Result<Tensor> {
        let mut logits = self.lm_head.forward(xs)?;
        if let Some(d) = self.cfg.family.logits_divisor {
            logits = (logits / d as f64)?;
        }
        match self.cfg.family.final_softcap {
            None => Ok(logits),
            Some(c) => Ok(((logits / c as f64)?.tanh()? * c as f64)?),
        }
    }

    /// The output projection's `(vocab, hidden)` weight (the embeddings when tied), dequantized
    /// when it is quantized.
    pub fn lm_head_weight(&self) -> Result<Tensor> {
        self.lm_head.weight()
    }

    /// Logits from hidden states before the final norm: `lm_head(norm(xs))`.
    pub fn logits(&self, xs: &Tensor) -> Result<Tensor> {
        self.lm_head(&self.norm(xs)?)
    }

    /// Whether a left-padded sequence ([`KvCache::left_padded`]) computes what it computes alone,
    /// up to rounding: its RoPE (and the sliding layers') depends on distances only.
    pub fn left_padding_exact(&self) -> bool {
        self.rope.shift_invariant() && self.local_rope.as_ref().is_none_or(|r| r.shift_invariant())
    }

    /// RoPE tables and masks for `seq_len` new positions after `offset` cached ones.
    pub fn attn_ctx(&self, offset: usize, seq_len: usize) -> Result<AttnCtx> {
        AttnCtx::with_local(&self.rope, self.local_rope.as_ref(), offset, seq_len)
    }

    /// Checks a skip list: indices in range, and at least one layer left.
    pub fn check_skip(&self, skip: &[usize]) -> Result<()> {
        if let Some(&bad) = skip.iter().find(|&&i| i >= self.n_layers()) {
            return Err(Error::Invalid(format!(
                "cannot skip layer {bad}: the model has {} layers",
                self.n_layers()
            )));
        }
        if (0..self.n_layers()).all(|i| skip.contains(&i)) {
            return Err(Error::Invalid(format!(
                "cannot skip all {} layers; at least one must run",
                self.n_layers()
            )));
        }
        Ok(())
    }

    /// Runs `tokens (batch, seq)` through every layer not in `skip`, in order, and returns the
    /// hidden states before the final norm. With `cache`, the new positions follow the cached
    /// ones and their keys and values are appended. `tap` sees each layer that runs.
    pub fn forward_hidden(
        &self,
        tokens: &Tensor,
        skip: &[usize],
        mut cache: Option<&mut KvCache>,
        tap: &mut dyn FnMut(LayerTap<'_>) -> Result<()>,
    ) -> Result<Tensor> {
        self.check_skip(skip)?;
        let (_, t) = tokens.dims2()?;
        let offset = cache.as_ref().map_or(0, |c| c.len);
        if let Some(c) = cache.as_ref() {
            if c.layers.len() != self.n_layers() {
                return Err(Error::Invalid(format!(
                    "the cache has {} layers, the model {}",
                    c.layers.len(),
                    self.n_layers()
                )));
            }
        }
        let mut ctx = self.attn_ctx(offset, t)?;
        if let Some(c) = cache.as_ref().filter(|c| !c.pad.is_empty()) {
            if c.pad.len() != tokens.dim(0)? {
                return Err(Error::Invalid(format!(
                    "the cache pads {} sequences, the batch has {}",
                    c.pad.len(),
                    tokens.dim(0)?
                )));
            }
            ctx.pad = c.pad.clone();
        }
        let mut xs = self.embed(tokens)?;
        for (i, slot) in self.layers.iter().enumerate() {
            if skip.contains(&i) {
                continue;
            }
            let loaded;
            let layer = match slot {
                Some(l) => l.as_ref(),
                None => {
                    loaded = DecoderLayer::load(self.source.as_ref(), &self.cfg, i)?;
                    &loaded
                }
            };
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            let parts = layer.forward(&xs, &ctx, layer_cache)?;
            tap(LayerTap {
                layer: i,
                input: &xs,
                parts: &parts,
            })?;
            xs = parts.output;
        }
        if let Some(c) = cache {
            c.len += t;
        }
        Ok(xs)
    }

    /// Runs layer `i` alone on `xs (batch, seq, hidden)` without a cache, loading its weights for
    /// this call when it is not resident. Scoring uses this to restart a forward from cached
    /// activations at the first layer a candidate removal changes.
    pub fn run_layer(&self, i: usize, xs: &Tensor, ctx: &AttnCtx) -> Result<LayerOutput> {
        self.check_index(i)?;
        match &self.layers[i] {
            Some(l) => l.forward(xs, ctx, None),
            None => DecoderLayer::load(self.source.as_ref(), &self.cfg, i)?.forward(xs, ctx, None),
        }
    }

    /// Logits `(batch, seq, vocab)` for `tokens`, skipping the layers in `skip`.
    pub fn forward(
        &self,
        tokens: &Tensor,
        skip: &[usize],
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let hidden = self.forward_hidden(tokens, skip, cache, &mut |_| Ok(()))?;
        self.logits(&hidden)
    }
}

/// Opens a checkpoint: a `.gguf` file or an HF folder, its precision resolved from the running
/// call's [`ComputeChoice`] ([`with_compute`]) and what the checkpoint stores.
pub fn open_checkpoint(path: &Path) -> Result<(ModelConfig, Arc<dyn WeightSource>)> {
    let (mut cfg, source) = if is_gguf(path) {
        let (cfg, weights, _) = gguf::open_gguf(path)?;
        let weights: Arc<dyn WeightSource> = weights;
        (cfg, weights)
    } else {
        open_folder(path)?
    };
    cfg.compute = resolve_compute(compute_choice(), source.as_ref());
    Ok((cfg, source))
}

/// The precision `choice` means for the checkpoint behind `source`.
pub fn resolve_compute(choice: ComputeChoice, source: &dyn WeightSource) -> Compute {
    match choice {
        ComputeChoice::F32 => Compute::F32,
        ComputeChoice::Bf16 => Compute::Bf16,
        ComputeChoice::Auto => source.stored_compute(),
    }
}

/// Whether `path` names a GGUF file (by its extension).
pub fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// Reads `config.json` and opens the weights of an HF folder.
pub fn open_folder(dir: &Path) -> Result<(ModelConfig, Arc<dyn WeightSource>)> {
    if !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "`{}`: the forward pass reads HF folders (config.json + safetensors); this is not a folder",
            dir.display()
        )));
    }
    crate::checkpoint::links::check_folder(dir)?;
    let cfg = ModelConfig::from_file(&dir.join("config.json"))?;
    let folder = HfFolder::open(dir)?;
    crate::checkpoint::hf::check_layer_tensors(
        &dir.join("config.json"),
        cfg.arch.num_hidden_layers,
        folder.names().into_iter(),
    )?;
    let shapes = folder.names().into_iter().map(|n| {
        let shape = folder.shape(n).unwrap_or_default();
        (n, shape.into_iter().map(|d| d as u64).collect())
    });
    crate::checkpoint::moe_check::check_moe_tensors(&dir.join("config.json"), &cfg.arch, shapes)?;
    let source: Arc<dyn WeightSource> = Arc::new(folder);
    Ok((cfg, source))
}
