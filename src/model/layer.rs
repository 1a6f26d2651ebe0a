//! One decoder layer of the llama family (llama, mistral, qwen2, qwen3 and the MoE families):
//! RMSNorm, grouped-query attention with RoPE and a causal (optionally sliding) mask, and a SwiGLU
//! MLP or a sparse block of SwiGLU experts ([`super::moe`]). Parts are loaded
//! from tensor names that mirror the checkpoint's (`model.layers.{i}.self_attn.q_proj.weight`).

use super::attention::CausalAttention;
use super::config::Compute;
use super::config::ModelConfig;
use super::half_gemm::HalfMatmul;
use super::moe::SparseMoe;
use super::ops::{FrozenLinear, MaskedSoftmax, SiluMul};
use super::weights::WeightSource;
use crate::error::{Error, Result};
use candle_core::{DType, Tensor};

/// Checks a tensor's stored shape against what the config implies.
fn check_shape(src: &dyn WeightSource, name: &str, shape: &[usize]) -> Result<()> {
    if let Some(found) = src.shape(name) {
        if found != shape {
            return Err(Error::corrupt(
                src.path(),
                format!("tensor `{name}` has shape {found:?}, but config.json implies {shape:?}"),
            ));
        }
    }
    Ok(())
}

/// Reads a tensor as f32 and checks its shape against what the config implies.
pub(crate) fn load(src: &dyn WeightSource, name: &str, shape: &[usize]) -> Result<Tensor> {
    check_shape(src, name, shape)?;
    src.tensor(name)
}

/// Reads a matrix weight in the precision `compute` keeps it in: f32, or 16 bits
/// ([`WeightSource::tensor_half`]).
pub(crate) fn load_in(
    src: &dyn WeightSource,
    name: &str,
    shape: &[usize],
    compute: Compute,
) -> Result<Tensor> {
    check_shape(src, name, shape)?;
    match compute {
        Compute::F32 => src.tensor(name),
        Compute::Bf16 => src.tensor_half(name),
    }
}

/// RMSNorm with a learned scale.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub(crate) fn new(src: &dyn WeightSource, name: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm {
            weight: load(src, name, &[dim])?,
            eps: eps as f32,
        })
    }

    /// Normalises over the last dimension. An input that records a graph (training) takes
    /// candle's composed form, which has a backward pass; the fused kernel has none.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if xs.track_op() {
            return Ok(candle_nn::ops::rms_norm_slow(xs, &self.weight, self.eps)?);
        }
        Ok(candle_nn::ops::rms_norm(
            &xs.contiguous()?,
            &self.weight,
            self.eps,
        )?)
    }
}

/// A linear map `xs @ weight.T + bias`, with `weight` stored `(out, in)` as in the checkpoint.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `{prefix}.weight` (and `{prefix}.bias`), the weight kept in the precision `compute`
    /// says (biases stay f32).
    pub(crate) fn new_in(
        src: &dyn WeightSource,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        compute: Compute,
    ) -> Result<Self> {
        let weight = load_in(src, &format!("{prefix}.weight"), &[d_out, d_in], compute)?;
        let bias = if bias {
            Some(load(src, &format!("{prefix}.bias"), &[d_out])?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// Wraps an existing `(out, in)` weight, such as tied embeddings.
    pub fn from_weight(weight: Tensor) -> Self {
        Linear { weight, bias: None }
    }

    /// The `(out, in)` weight: f32, or bf16/f16 under [`Compute::Bf16`].
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Applies the map to `(..., in)`, giving `(..., out)`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dims = xs.dims();
        let d_in = *dims
            .last()
            .ok_or_else(|| Error::Compute("linear input has no dimensions".into()))?;
        let rows = xs.elem_count() / d_in.max(1);
        let flat = xs.contiguous()?.reshape((rows, d_in))?;
        let mut ys = if flat.track_op() {
            // Training (a recorded graph) needs only the input's gradient, never the weight's.
            if self.weight.dtype() != DType::F32 {
                return Err(Error::Invalid(
                    "training through the layers needs f32 weights (--compute f32)".into(),
                ));
            }
            flat.apply_op1(FrozenLinear(self.weight.clone()))?
        } else if self.weight.dtype() == DType::F32 {
            flat.matmul(&self.weight.t()?)?
        } else {
            flat.apply_op2_no_bwd(&self.weight, &HalfMatmul)?
        };
        if let Some(b) = &self.bias {
            ys = ys.broadcast_add(b)?;
        }
        let mut out_dims = dims.to_vec();
        let last = out_dims.len() - 1;
        out_dims[last] = self.weight.dim(0)?;
        Ok(ys.reshape(out_dims)?)
    }
}

/// Per-forward attention inputs shared by every layer: RoPE tables for the new positions.
pub struct AttnCtx {
    /// Position of the first new token (the cache length before this forward).
    pub offset: usize,
    pub seq_len: usize,
    cos: Tensor,
    sin: Tensor,
}

impl AttnCtx {
    /// Builds tables for `seq_len` new tokens after `offset` cached ones.
    pub fn new(rope: &super::rope::Rope, offset: usize, seq_len: usize) -> Result<Self> {
        let (cos, sin) = rope.cos_sin(offset, seq_len)?;
        Ok(AttnCtx {
            offset,
            seq_len,
            cos,
            sin,
        })
    }
}

/// One layer's cached keys and values, each `(batch, kv_heads, cached, head_dim)`.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    kv: Option<(Tensor, Tensor)>,
}

impl LayerCache {
    /// The number of cached positions.
    pub fn len(&self) -> usize {
        self.kv.as_ref().map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Grouped-query self-attention.
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    window: Option<usize>,
}

impl Attention {
    fn new(src: &dyn WeightSource, cfg: &ModelConfig, layer: usize, prefix: &str) -> Result<Self> {
        let a = &cfg.arch;
        let (h, d) = (a.hidden_size, a.head_dim);
        let (q_dim, kv_dim) = (a.num_attention_heads * d, a.num_key_value_heads * d);
        let norm = |n: &str| RmsNorm::new(src, &format!("{prefix}.{n}.weight"), d, a.rms_norm_eps);
        let linear = |n: &str, d_in, d_out, bias| {
            Linear::new_in(
                src,
                &format!("{prefix}.{n}"),
                d_in,
                d_out,
                bias,
                cfg.compute,
            )
        };
        Ok(Attention {
            q_proj: linear("q_proj", h, q_dim, a.qkv_bias)?,
            k_proj: linear("k_proj", h, kv_dim, a.qkv_bias)?,
            v_proj: linear("v_proj", h, kv_dim, a.qkv_bias)?,
            o_proj: linear("o_proj", q_dim, h, a.o_bias)?,
            q_norm: if a.qk_norm {
                Some(norm("q_norm")?)
            } else {
                None
            },
            k_norm: if a.qk_norm {
                Some(norm("k_norm")?)
            } else {
                None
            },
            n_heads: a.num_attention_heads,
            n_kv_heads: a.num_key_value_heads,
            head_dim: d,
            window: cfg.windows.get(layer).copied().flatten(),
        })
    }

    /// `(batch, seq, hidden)` → `(batch, seq, hidden)`, appending this forward's keys and values
    /// to `cache` when given.
    pub fn forward(
        &self,
        xs: &Tensor,
        ctx: &AttnCtx,
        cache: Option<&mut LayerCache>,
    ) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        if t != ctx.seq_len {
            return Err(Error::Compute(format!(
                "attention got {t} positions, the context has {}",
                ctx.seq_len
            )));
        }
        let d = self.head_dim;
        let heads = |x: Tensor, n: usize, norm: &Option<RmsNorm>| -> Result<Tensor> {
            let mut x = x.reshape((b, t, n, d))?;
            if let Some(norm) = norm {
                x = norm.forward(&x)?;
            }
            Ok(x.transpose(1, 2)?.contiguous()?)
        };
        let q = heads(self.q_proj.forward(xs)?, self.n_heads, &self.q_norm)?;
        let k = heads(self.k_proj.forward(xs)?, self.n_kv_heads, &self.k_norm)?;
        let v = heads(self.v_proj.forward(xs)?, self.n_kv_heads, &None)?;
        // The fused RoPE kernel has no backward pass; the composed one is for training.
        let rope = if q.track_op() {
            candle_nn::rotary_emb::rope_slow
        } else {
            candle_nn::rotary_emb::rope
        };
        let q = rope(&q, &ctx.cos, &ctx.sin)?;
        let k = rope(&k, &ctx.cos, &ctx.sin)?;
        let (k, v) = match cache {
            None => (k, v),
            Some(c) => {
                let (k, v) = match c.kv.take() {
                    None => (k, v),
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                };
                c.kv = Some((k.clone(), v.clone()));
                (k, v)
            }
        };
        let s = k.dim(2)?;
        if s != ctx.offset + t {
            return Err(Error::Compute(format!(
                "cache holds {} positions, expected {}",
                s - t,
                ctx.offset
            )));
        }
        let out = if q.track_op() {
            // Training: the composed attention, which has a backward pass.
            let out = self.core(&q, &k, &v, ctx)?;
            out.transpose(1, 2)?.reshape((b, t, self.n_heads * d))?
        } else {
            q.apply_op3_no_bwd(
                &k,
                &v,
                &CausalAttention {
                    offset: ctx.offset,
                    window: self.window,
                    scale: 1.0 / (d as f32).sqrt(),
                },
            )?
        };
        self.o_proj.forward(&out)
    }

    /// Scaled dot-product attention on `q (b, heads, t, d)`, `k`/`v (b, kv_heads, s, d)` with the
    /// score matrix materialised, for training ([`crate::heal::kd`]): every step records a
    /// backward. The query heads sharing a kv head are stacked as rows, so keys and values are
    /// never copied.
    fn core(&self, q: &Tensor, k: &Tensor, v: &Tensor, ctx: &AttnCtx) -> Result<Tensor> {
        let (b, _, t, d) = q.dims4()?;
        let n_rep = self.n_heads / self.n_kv_heads;
        let q = q.reshape((b, self.n_kv_heads, n_rep * t, d))?;
        let att = q.matmul(&k.t()?)?;
        let softmax = MaskedSoftmax {
            offset: ctx.offset,
            seq_len: t,
            window: self.window,
            scale: 1.0 / (d as f32).sqrt(),
        };
        let att = att.apply_op1(softmax)?;
        Ok(att.matmul(v)?.reshape((b, self.n_heads, t, d))?)
    }
}

/// The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`, with the gate and up
/// projections stored as one `(2 * intermediate, hidden)` matrix so they run as one product.
#[derive(Debug, Clone)]
pub struct Mlp {
    gate_up: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn new(src: &dyn WeightSource, cfg: &ModelConfig, prefix: &str) -> Result<Self> {
        let names = ["gate_proj", "up_proj", "down_proj"];
        Self::load_named(src, cfg, prefix, names, cfg.arch.intermediate_size)
    }

    /// Loads `{prefix}.{gate,up,down}.weight` under the given names with intermediate size `i`
    /// (a MoE expert: `w1`, `w3`, `w2` in Mixtral).
    pub(crate) fn load_named(
        src: &dyn WeightSource,
        cfg: &ModelConfig,
        prefix: &str,
        [gate, up, down]: [&str; 3],
        i: usize,
    ) -> Result<Self> {
        let (h, c) = (cfg.arch.hidden_size, cfg.compute);
        let gate = load_in(src, &format!("{prefix}.{gate}.weight"), &[i, h], c)?;
        let up = load_in(src, &format!("{prefix}.{up}.weight"), &[i, h], c)?;
        let gate_up = Tensor::cat(&[&gate, &up], 0)?;
        drop((gate, up));
        Ok(Mlp {
            gate_up: Linear::from_weight(gate_up),
            down_proj: Linear::new_in(src, &format!("{prefix}.{down}"), i, h, false, c)?,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up.forward(xs)?;
        self.down_proj.forward(&gate_up.apply_op1(SiluMul)?)
    }
}

/// A layer's feed-forward block: a dense MLP, or experts ([`SparseMoe`]).
#[derive(Debug, Clone)]
pub enum FeedForward {
    Dense(Mlp),
    Sparse(SparseMoe),
}

impl FeedForward {
    fn load(src: &dyn WeightSource, cfg: &ModelConfig, layer: usize) -> Result<Self> {
        if cfg.arch.layer_is_sparse(layer) {
            Ok(FeedForward::Sparse(SparseMoe::load(src, cfg, layer)?))
        } else {
            let p = format!("model.layers.{layer}.mlp");
            Ok(FeedForward::Dense(Mlp::new(src, cfg, &p)?))
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            FeedForward::Dense(m) => m.forward(xs),
            FeedForward::Sparse(m) => m.forward(xs),
        }
    }
}

/// What one decoder layer computed: the attention and MLP contributions added to the residual
/// stream, and the layer's output.
#[derive(Debug, Clone)]
pub struct LayerOutput {
    /// The attention block's output (before it is added to the residual).
    pub attn: Tensor,
    /// The MLP block's output (before it is added to the residual).
    pub mlp: Tensor,
    /// The layer's output: `input + attn + mlp`.
    pub output: Tensor,
}

/// A pre-norm decoder layer.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    index: usize,
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: FeedForward,
}

impl DecoderLayer {
    /// Loads layer `index` (0-based, as numbered in the checkpoint).
    pub fn load(src: &dyn WeightSource, cfg: &ModelConfig, index: usize) -> Result<Self> {
        let p = format!("model.layers.{index}");
        let (h, eps) = (cfg.arch.hidden_size, cfg.arch.rms_norm_eps);
        Ok(DecoderLayer {
            index,
            input_layernorm: RmsNorm::new(src, &format!("{p}.input_layernorm.weight"), h, eps)?,
            self_attn: Attention::new(src, cfg, index, &format!("{p}.self_attn"))?,
            post_attention_layernorm: RmsNorm::new(
                src,
                &format!("{p}.post_attention_layernorm.weight"),
                h,
                eps,
            )?,
            mlp: FeedForward::load(src, cfg, index)?,
        })
    }

    /// The layer's index in the checkpoint.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The attention window this layer uses, if any.
    pub fn window(&self) -> Option<usize> {
        self.self_attn.window
    }

    /// Runs the layer on `(batch, seq, hidden)`.
    pub fn forward(
        &self,
        xs: &Tensor,
        ctx: &AttnCtx,
        cache: Option<&mut LayerCache>,
    ) -> Result<LayerOutput> {
        let attn = self
            .self_attn
            .forward(&self.input_layernorm.forward(xs)?, ctx, cache)?;
        let hidden = (xs + &attn)?;
        let mlp = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&hidden)?)?;
        let output = (&hidden + &mlp)?;
        Ok(LayerOutput { attn, mlp, output })
    }
}
