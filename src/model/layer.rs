//! One decoder layer: RMSNorm, grouped-query attention with RoPE and a causal (optionally
//! sliding) mask, and a gated MLP, for llama, mistral, qwen2/3 and the dense families of issue 17
//! (Gemma 2/3, Phi-3, OLMo 2; [`super::family`] says what differs). Parts are loaded from tensor
//! names that mirror the checkpoint's (`model.layers.{i}.self_attn.q_proj.weight`).

use super::attention::CausalAttention;
use super::config::Compute;
use super::config::ModelConfig;
use super::family::Activation;
use super::half_gemm::HalfMatmul;
pub use super::norm::RmsNorm;
use super::ops::{FrozenLinear, MaskedSoftmax, SiluMul};
use super::weights::WeightSource;
use crate::arch::families::Family;
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
    /// The tables of sliding layers, when their RoPE differs (Gemma 3).
    local: Option<(Tensor, Tensor)>,
}

impl AttnCtx {
    /// Builds tables for `seq_len` new tokens after `offset` cached ones.
    pub fn new(rope: &super::rope::Rope, offset: usize, seq_len: usize) -> Result<Self> {
        Self::with_local(rope, None, offset, seq_len)
    }

    /// As [`AttnCtx::new`], with a second RoPE for sliding layers.
    pub fn with_local(
        rope: &super::rope::Rope,
        local: Option<&super::rope::Rope>,
        offset: usize,
        seq_len: usize,
    ) -> Result<Self> {
        let (cos, sin) = rope.cos_sin(offset, seq_len)?;
        let local = local.map(|r| r.cos_sin(offset, seq_len)).transpose()?;
        Ok(AttnCtx {
            offset,
            seq_len,
            cos,
            sin,
            local,
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
    /// OLMo 2: q/k norms over the whole projection, not per head.
    qk_norm_full: bool,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    window: Option<usize>,
    /// Scale of the scores (`head_dim^-½`, or Gemma's `query_pre_attn_scalar^-½`).
    scale: f32,
    /// Gemma 2's `tanh(s / c) · c` on the scaled scores.
    softcap: Option<f32>,
    /// Leading dimensions of each head that RoPE rotates.
    rotary_dim: usize,
    /// Whether this layer takes the sliding layers' RoPE tables.
    local_rope: bool,
}

impl Attention {
    fn new(src: &dyn WeightSource, cfg: &ModelConfig, layer: usize, prefix: &str) -> Result<Self> {
        let a = &cfg.arch;
        let (h, d) = (a.hidden_size, a.head_dim);
        let (q_dim, kv_dim) = (a.num_attention_heads * d, a.num_key_value_heads * d);
        let f = &cfg.family;
        let qk_norm_full = f.family == Family::Olmo2;
        let norm = |n: &str, dim| {
            let name = format!("{prefix}.{n}.weight");
            RmsNorm::new_in(src, &name, dim, a.rms_norm_eps, f.norm_plus_one)
        };
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
        let (q_proj, k_proj, v_proj) = if f.family.fused() {
            // Phi-3: one `(q + 2·kv, hidden)` matrix, rows in q, k, v order.
            let name = format!("{prefix}.qkv_proj.weight");
            let w = load_in(src, &name, &[q_dim + 2 * kv_dim, h], cfg.compute)?;
            let part = |at, len| -> Result<Linear> {
                Ok(Linear::from_weight(w.narrow(0, at, len)?.contiguous()?))
            };
            (
                part(0, q_dim)?,
                part(q_dim, kv_dim)?,
                part(q_dim + kv_dim, kv_dim)?,
            )
        } else {
            (
                linear("q_proj", h, q_dim, a.qkv_bias)?,
                linear("k_proj", h, kv_dim, a.qkv_bias)?,
                linear("v_proj", h, kv_dim, a.qkv_bias)?,
            )
        };
        let has_qk_norm = a.qk_norm || qk_norm_full;
        let window = cfg.windows.get(layer).copied().flatten();
        Ok(Attention {
            q_proj,
            k_proj,
            v_proj,
            o_proj: linear("o_proj", q_dim, h, a.o_bias)?,
            q_norm: if has_qk_norm {
                Some(norm("q_norm", if qk_norm_full { q_dim } else { d })?)
            } else {
                None
            },
            k_norm: if has_qk_norm {
                Some(norm("k_norm", if qk_norm_full { kv_dim } else { d })?)
            } else {
                None
            },
            qk_norm_full,
            n_heads: a.num_attention_heads,
            n_kv_heads: a.num_key_value_heads,
            head_dim: d,
            window,
            scale: f.attn_scale,
            softcap: f.attn_softcap,
            rotary_dim: f.rotary_dim,
            local_rope: f.local_rope.is_some() && window.is_some(),
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
        let full = self.qk_norm_full;
        let heads = |x: Tensor, n: usize, norm: &Option<RmsNorm>| -> Result<Tensor> {
            let x = match norm {
                Some(norm) if full => norm.forward(&x)?,
                _ => x,
            };
            let mut x = x.reshape((b, t, n, d))?;
            if let (Some(norm), false) = (norm, full) {
                x = norm.forward(&x)?;
            }
            Ok(x.transpose(1, 2)?.contiguous()?)
        };
        let q = heads(self.q_proj.forward(xs)?, self.n_heads, &self.q_norm)?;
        let k = heads(self.k_proj.forward(xs)?, self.n_kv_heads, &self.k_norm)?;
        let v = heads(self.v_proj.forward(xs)?, self.n_kv_heads, &None)?;
        let (cos, sin) = match (&ctx.local, self.local_rope) {
            (Some((c, s)), true) => (c, s),
            _ => (&ctx.cos, &ctx.sin),
        };
        let q = self.rotate(&q, cos, sin)?;
        let k = self.rotate(&k, cos, sin)?;
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
                    scale: self.scale,
                    softcap: self.softcap,
                },
            )?
        };
        self.o_proj.forward(&out)
    }

    /// RoPE on `(b, heads, t, d)`: the first `rotary_dim` dimensions of each head, the rest
    /// passed through (partial rotary). The fused kernel has no backward pass; the composed one
    /// is for training.
    fn rotate(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let rope = if x.track_op() {
            candle_nn::rotary_emb::rope_slow
        } else {
            candle_nn::rotary_emb::rope
        };
        if self.rotary_dim == self.head_dim {
            return Ok(rope(x, cos, sin)?);
        }
        let r = self.rotary_dim;
        let rotated = rope(&x.narrow(3, 0, r)?.contiguous()?, cos, sin)?;
        let pass = x.narrow(3, r, self.head_dim - r)?;
        Ok(Tensor::cat(&[&rotated, &pass], 3)?.contiguous()?)
    }

    /// Scaled dot-product attention on `q (b, heads, t, d)`, `k`/`v (b, kv_heads, s, d)` with the
    /// score matrix materialised, for training ([`crate::heal::kd`]): every step records a
    /// backward. The query heads sharing a kv head are stacked as rows, so keys and values are
    /// never copied.
    fn core(&self, q: &Tensor, k: &Tensor, v: &Tensor, ctx: &AttnCtx) -> Result<Tensor> {
        let (b, _, t, d) = q.dims4()?;
        let n_rep = self.n_heads / self.n_kv_heads;
        let q = q.reshape((b, self.n_kv_heads, n_rep * t, d))?;
        let mut att = q.matmul(&k.t()?)?;
        let mut scale = self.scale;
        if let Some(c) = self.softcap {
            att = ((att * (self.scale / c) as f64)?.tanh()? * c as f64)?;
            scale = 1.0;
        }
        let softmax = MaskedSoftmax {
            offset: ctx.offset,
            seq_len: t,
            window: self.window,
            scale,
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
    activation: Activation,
}

impl Mlp {
    fn new(src: &dyn WeightSource, cfg: &ModelConfig, prefix: &str) -> Result<Self> {
        let (h, i) = (cfg.arch.hidden_size, cfg.arch.intermediate_size);
        let c = cfg.compute;
        let gate_up = if cfg.family.family.fused() {
            // Phi-3 stores the product this struct computes: gate rows, then up rows.
            load_in(
                src,
                &format!("{prefix}.gate_up_proj.weight"),
                &[2 * i, h],
                c,
            )?
        } else {
            let gate = load_in(src, &format!("{prefix}.gate_proj.weight"), &[i, h], c)?;
            let up = load_in(src, &format!("{prefix}.up_proj.weight"), &[i, h], c)?;
            Tensor::cat(&[&gate, &up], 0)?
        };
        Ok(Mlp {
            gate_up: Linear::from_weight(gate_up),
            down_proj: Linear::new_in(src, &format!("{prefix}.down_proj"), i, h, false, c)?,
            activation: cfg.family.activation,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up.forward(xs)?;
        let hidden = match self.activation {
            Activation::Silu => gate_up.apply_op1(SiluMul)?,
            Activation::GeluTanh => {
                let i = gate_up.dim(candle_core::D::Minus1)? / 2;
                let gate = gate_up.narrow(candle_core::D::Minus1, 0, i)?;
                let up = gate_up.narrow(candle_core::D::Minus1, i, i)?;
                (gate.gelu()? * up)?
            }
        };
        self.down_proj.forward(&hidden)
    }
}

/// What one decoder layer computed: the attention and MLP contributions to the residual
/// stream, and the layer's output.
///
/// `attn` and `mlp` are the sublayers' outputs as transformers' module hooks see them. For the
/// families with a norm after each sublayer (Gemma 2/3, OLMo 2) that is before that norm, so
/// there `output = input + norm(attn) + norm(mlp)`; for the rest `output = input + attn + mlp`.
#[derive(Debug, Clone)]
pub struct LayerOutput {
    /// The attention block's output (before it is added to the residual).
    pub attn: Tensor,
    /// The MLP block's output (before it is added to the residual).
    pub mlp: Tensor,
    /// The layer's output.
    pub output: Tensor,
}

/// A decoder layer: pre-norm (llama, Phi-3), pre- and post-norm (Gemma) or post-norm (OLMo 2).
/// The four norm slots are named by where they sit, since checkpoints reuse
/// `post_attention_layernorm` for two different places.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    index: usize,
    /// Before attention: `input_layernorm` (none in OLMo 2).
    attn_in: Option<RmsNorm>,
    self_attn: Attention,
    /// On the attention output: Gemma's and OLMo 2's `post_attention_layernorm`.
    attn_out: Option<RmsNorm>,
    /// Before the MLP: llama's `post_attention_layernorm`, Gemma's `pre_feedforward_layernorm`.
    mlp_in: Option<RmsNorm>,
    mlp: Mlp,
    /// On the MLP output: `post_feedforward_layernorm` (Gemma, OLMo 2).
    mlp_out: Option<RmsNorm>,
}

fn apply(norm: &Option<RmsNorm>, xs: &Tensor) -> Result<Tensor> {
    match norm {
        Some(n) => n.forward(xs),
        None => Ok(xs.clone()),
    }
}

impl DecoderLayer {
    /// Loads layer `index` (0-based, as numbered in the checkpoint).
    pub fn load(src: &dyn WeightSource, cfg: &ModelConfig, index: usize) -> Result<Self> {
        let p = format!("model.layers.{index}");
        let (h, eps) = (cfg.arch.hidden_size, cfg.arch.rms_norm_eps);
        let plus_one = cfg.family.norm_plus_one;
        let norm = |n: &str| -> Result<Option<RmsNorm>> {
            let name = format!("{p}.{n}.weight");
            RmsNorm::new_in(src, &name, h, eps, plus_one).map(Some)
        };
        let (attn_in, attn_out, mlp_in, mlp_out) = match cfg.family.family {
            Family::Gemma2 | Family::Gemma3 => (
                norm("input_layernorm")?,
                norm("post_attention_layernorm")?,
                norm("pre_feedforward_layernorm")?,
                norm("post_feedforward_layernorm")?,
            ),
            Family::Olmo2 => (
                None,
                norm("post_attention_layernorm")?,
                None,
                norm("post_feedforward_layernorm")?,
            ),
            Family::Llama | Family::Phi3 => (
                norm("input_layernorm")?,
                None,
                norm("post_attention_layernorm")?,
                None,
            ),
        };
        Ok(DecoderLayer {
            index,
            attn_in,
            self_attn: Attention::new(src, cfg, index, &format!("{p}.self_attn"))?,
            attn_out,
            mlp_in,
            mlp: Mlp::new(src, cfg, &format!("{p}.mlp"))?,
            mlp_out,
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
            .forward(&apply(&self.attn_in, xs)?, ctx, cache)?;
        let hidden = (xs + apply(&self.attn_out, &attn)?)?;
        let mlp = self.mlp.forward(&apply(&self.mlp_in, &hidden)?)?;
        let output = (&hidden + apply(&self.mlp_out, &mlp)?)?;
        Ok(LayerOutput { attn, mlp, output })
    }
}
