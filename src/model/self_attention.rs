//! Self-attention of one decoder layer: grouped-query attention with RoPE (full or partial,
//! with a second table for Gemma 3's sliding layers), optional q/k norms (per head, or over the
//! whole projection for OLMo 2), q, k and v stacked into one product (as Phi-3 stores them), a
//! causal (optionally sliding) mask and Gemma 2's score soft-capping; plus the per-forward RoPE tables
//! ([`AttnCtx`]) and the KV cache of one layer ([`LayerCache`]).

use super::attention::CausalAttention;
use super::config::ModelConfig;
use super::layer::{load_in, Linear, RmsNorm};
use super::ops::MaskedSoftmax;
use super::weights::WeightSource;
use crate::arch::families::Family;
use crate::error::{Error, Result};
use candle_core::Tensor;

/// Per-forward attention inputs shared by every layer: RoPE tables for the new positions.
pub struct AttnCtx {
    /// Position of the first new token (the cache length before this forward).
    pub offset: usize,
    pub seq_len: usize,
    /// Left padding of each sequence of the batch (empty: none), from [`super::KvCache`].
    pub pad: Vec<usize>,
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
            pad: Vec::new(),
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

    /// The cache of one sequence repeated along the batch for `n` sequences.
    pub fn repeat(&self, n: usize) -> Result<Self> {
        let kv = match &self.kv {
            None => None,
            Some((k, v)) => {
                if k.dim(0)? != 1 {
                    return Err(Error::Invalid(format!(
                        "only a cache of one sequence repeats, this one holds {}",
                        k.dim(0)?
                    )));
                }
                Some((k.repeat((n, 1, 1, 1))?, v.repeat((n, 1, 1, 1))?))
            }
        };
        Ok(LayerCache { kv })
    }

    /// The cache of the sequences `rows` of the batch, in that order.
    pub fn select(&self, rows: &Tensor) -> Result<Self> {
        let kv = match &self.kv {
            None => None,
            Some((k, v)) => Some((k.index_select(rows, 0)?, v.index_select(rows, 0)?)),
        };
        Ok(LayerCache { kv })
    }
}

/// The q, k and v projections: stacked into one product where they can be (issue 24), else
/// apart.
#[derive(Debug, Clone)]
enum Projections {
    Fused(Linear),
    Apart([Linear; 3]),
}

/// Grouped-query self-attention.
#[derive(Debug, Clone)]
pub struct Attention {
    qkv: Projections,
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
    /// Whether this layer applies RoPE at all (SmolLM3's NoPE layers do not).
    use_rope: bool,
}

impl Attention {
    pub(crate) fn new(
        src: &dyn WeightSource,
        cfg: &ModelConfig,
        layer: usize,
        prefix: &str,
    ) -> Result<Self> {
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
        let qkv = if f.family.fused() {
            // Phi-3: one `(q + 2·kv, hidden)` matrix, rows in q, k, v order, as this runs it.
            let name = format!("{prefix}.qkv_proj.weight");
            let w = load_in(src, &name, &[q_dim + 2 * kv_dim, h], cfg.compute)?;
            Projections::Fused(Linear::from_weight(w))
        } else {
            let apart = [
                linear("q_proj", h, q_dim, a.qkv_bias)?,
                linear("k_proj", h, kv_dim, a.qkv_bias)?,
                linear("v_proj", h, kv_dim, a.qkv_bias)?,
            ];
            // OLMo 2 normalises each whole projection, so it keeps them apart.
            match (qk_norm_full, Linear::stack(&apart)?) {
                (false, Some(fused)) => Projections::Fused(fused),
                _ => Projections::Apart(apart),
            }
        };
        let has_qk_norm = a.qk_norm || qk_norm_full;
        let window = cfg.windows.get(layer).copied().flatten();
        Ok(Attention {
            qkv,
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
            use_rope: f
                .rope_layers
                .as_ref()
                .is_none_or(|r| r.get(layer).copied().unwrap_or(true)),
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
        // `x (b, t, n, d)`, possibly a view into the fused projection.
        let heads = |x: Tensor, norm: &Option<RmsNorm>| -> Result<Tensor> {
            let x = match norm {
                Some(norm) if !full => norm.forward(&x)?,
                _ => x,
            };
            Ok(x.transpose(1, 2)?.contiguous()?)
        };
        let (nq, nkv) = (self.n_heads, self.n_kv_heads);
        let (q, k, v) = match &self.qkv {
            Projections::Fused(qkv) => {
                let all = qkv.forward(xs)?.reshape((b, t, nq + 2 * nkv, d))?;
                (
                    all.narrow(2, 0, nq)?,
                    all.narrow(2, nq, nkv)?,
                    all.narrow(2, nq + nkv, nkv)?,
                )
            }
            Projections::Apart([qp, kp, vp]) => {
                let split = |p: &Linear, n: usize, norm: &Option<RmsNorm>| -> Result<Tensor> {
                    let x = p.forward(xs)?;
                    let x = match norm {
                        Some(norm) if full => norm.forward(&x)?,
                        _ => x,
                    };
                    Ok(x.reshape((b, t, n, d))?)
                };
                (
                    split(qp, nq, &self.q_norm)?,
                    split(kp, nkv, &self.k_norm)?,
                    split(vp, nkv, &None)?,
                )
            }
        };
        let (q, k, v) = (
            heads(q, &self.q_norm)?,
            heads(k, &self.k_norm)?,
            heads(v, &None)?,
        );
        let (cos, sin) = match (&ctx.local, self.local_rope) {
            (Some((c, s)), true) => (c, s),
            _ => (&ctx.cos, &ctx.sin),
        };
        let (q, k) = if self.use_rope {
            (self.rotate(&q, cos, sin)?, self.rotate(&k, cos, sin)?)
        } else {
            (q, k)
        };
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
                    pad: ctx.pad.clone(),
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

    /// The attention window, if any.
    pub fn window(&self) -> Option<usize> {
        self.window
    }

    /// Scaled dot-product attention on `q (b, heads, t, d)`, `k`/`v (b, kv_heads, s, d)` with the
    /// score matrix materialised, for training ([`crate::heal::kd`]): every step records a
    /// backward. The query heads sharing a kv head are stacked as rows, so keys and values are
    /// never copied.
    fn core(&self, q: &Tensor, k: &Tensor, v: &Tensor, ctx: &AttnCtx) -> Result<Tensor> {
        let (b, _, t, d) = q.dims4()?;
        if !ctx.pad.is_empty() {
            return Err(Error::Compute(
                "training attention takes no left padding".into(),
            ));
        }
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
