//! One decoder layer: RMSNorm, grouped-query attention with RoPE and a causal (optionally
//! sliding) mask, and a gated MLP or a sparse block of gated experts ([`super::moe`]), for llama,
//! mistral, qwen2/3, the MoE families (qwen2_moe, qwen3_moe, mixtral) and the dense families of
//! issue 17 (Gemma 2/3, Phi-3, OLMo 2; [`super::family`] says what differs). Parts are loaded
//! from tensor names that mirror the checkpoint's (`model.layers.{i}.self_attn.q_proj.weight`).

use super::config::Compute;
use super::config::ModelConfig;
use super::family::Activation;
pub use super::linear::Linear;
use super::linear::{load_weight, Weight};
use super::moe::SparseMoe;
pub use super::norm::RmsNorm;
use super::ops::{GeluMul, SiluMul};
pub use super::self_attention::{Attention, AttnCtx, LayerCache};
use super::weights::WeightSource;
use crate::arch::families::Family;
use crate::error::{Error, Result};
use candle_core::Tensor;

/// Checks a tensor's stored shape against what the config implies.
pub(crate) fn check_shape(src: &dyn WeightSource, name: &str, shape: &[usize]) -> Result<()> {
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
        Compute::F32 | Compute::Quant => src.tensor(name),
        Compute::Bf16 => src.tensor_half(name),
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
        if cfg.family.family.fused() {
            // Phi-3 stores the product this struct computes: gate rows, then up rows.
            let (h, i, c) = (
                cfg.arch.hidden_size,
                cfg.arch.intermediate_size,
                cfg.compute,
            );
            let gate_up = load_in(
                src,
                &format!("{prefix}.gate_up_proj.weight"),
                &[2 * i, h],
                c,
            )?;
            return Ok(Mlp {
                gate_up: Linear::from_weight(gate_up),
                down_proj: Linear::new_in(src, &format!("{prefix}.down_proj"), i, h, false, c)?,
                activation: cfg.family.activation,
            });
        }
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
        let down = Linear::new_in(src, &format!("{prefix}.{down}"), i, h, false, c)?;
        let (gate, up) = (
            format!("{prefix}.{gate}.weight"),
            format!("{prefix}.{up}.weight"),
        );
        if let (Weight::Quant(g), Weight::Quant(u)) = (
            load_weight(src, &gate, &[i, h], c)?,
            load_weight(src, &up, &[i, h], c)?,
        ) {
            return Ok(Mlp {
                gate_up: Linear::from_quant(g.into_iter().chain(u).collect()),
                down_proj: down,
                activation: cfg.family.activation,
            });
        }
        let gate = load_in(src, &gate, &[i, h], c)?;
        let up = load_in(src, &up, &[i, h], c)?;
        let gate_up = Tensor::cat(&[&gate, &up], 0)?;
        drop((gate, up));
        Ok(Mlp {
            gate_up: Linear::from_weight(gate_up),
            down_proj: down,
            activation: cfg.family.activation,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up.forward(xs)?;
        let hidden = match self.activation {
            Activation::Silu => gate_up.apply_op1(SiluMul)?,
            Activation::GeluTanh if !gate_up.track_op() => gate_up.apply_op1_no_bwd(&GeluMul)?,
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
    mlp: FeedForward,
    /// On the MLP output: `post_feedforward_layernorm` (Gemma, OLMo 2).
    mlp_out: Option<RmsNorm>,
    /// Granite's `residual_multiplier` on each branch.
    residual_scale: Option<f32>,
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
            mlp: FeedForward::load(src, cfg, index)?,
            mlp_out,
            residual_scale: cfg.family.residual_scale,
        })
    }

    /// The layer's index in the checkpoint.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The attention window this layer uses, if any.
    pub fn window(&self) -> Option<usize> {
        self.self_attn.window()
    }

    /// A branch's output as it reaches the residual stream (Granite's `residual_multiplier`).
    fn scaled(&self, xs: Tensor) -> Result<Tensor> {
        match self.residual_scale {
            None => Ok(xs),
            Some(s) => Ok((xs * s as f64)?),
        }
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
        let hidden = (xs + self.scaled(apply(&self.attn_out, &attn)?)?)?;
        let mlp = self.mlp.forward(&apply(&self.mlp_in, &hidden)?)?;
        let output = (&hidden + self.scaled(apply(&self.mlp_out, &mlp)?)?)?;
        Ok(LayerOutput { attn, mlp, output })
    }
}
