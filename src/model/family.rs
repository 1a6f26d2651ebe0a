//! What the forward pass does differently for each dense family (issue 17), read once from
//! the checked config ([`crate::arch::family_config`]) into [`FamilyOpts`]: where the norms sit and how they scale, the MLP's
//! activation, the embedding scale, soft-capping, the attention scale, Gemma 3's second RoPE for
//! sliding layers, Phi-3's partial rotary and LongRoPE. See [`crate::arch::families`] for the
//! table of differences.

use super::config::RopeScaling;
use crate::arch::families::Family;
use crate::arch::ArchConfig;

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// GELU with the tanh approximation (`gelu_pytorch_tanh`).
    GeluTanh,
}

/// Forward-pass settings that depend on the family.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyOpts {
    pub family: Family,
    /// RMSNorm weights scale as `1 + w` (Gemma's HF checkpoints). GGUF files store `1 + w`
    /// already, so the GGUF reader serves them minus one.
    pub norm_plus_one: bool,
    pub activation: Activation,
    /// Embeddings multiplied by `√hidden`, rounded to the checkpoint's dtype (Gemma).
    pub embed_scale: Option<f32>,
    /// The dtype the embedding scale and product are rounded to (`bfloat16`, `float16`), if
    /// not f32.
    pub embed_dtype: Option<candle_core::DType>,
    /// `tanh(x / c) · c` on attention scores (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// `tanh(x / c) · c` on the final logits (Gemma 2).
    pub final_softcap: Option<f32>,
    /// The attention scale (`query_pre_attn_scalar^-½` for Gemma, else `head_dim^-½`).
    pub attn_scale: f32,
    /// RoPE base and scaling of sliding layers, when they differ from global ones (Gemma 3).
    pub local_rope: Option<(f64, RopeScaling)>,
    /// How many leading dimensions of each head RoPE rotates (`partial_rotary_factor`).
    pub rotary_dim: usize,
    /// Each branch's output is multiplied by this before the residual add (Granite).
    pub residual_scale: Option<f32>,
    /// The logits are divided by this (Granite's `logits_scaling`).
    pub logits_divisor: Option<f32>,
    /// Which layers apply RoPE, by original index (SmolLM3's `no_rope_layers`); all when `None`.
    pub rope_layers: Option<Vec<bool>>,
}

impl FamilyOpts {
    /// The forward-pass settings of a checked config.
    pub fn new(arch: &ArchConfig) -> std::result::Result<Self, String> {
        let f = &arch.family;
        let family = Family::of(&arch.model_type);
        let gemma = family.is_gemma();
        let activation = match f.hidden_act.as_deref() {
            None if gemma => Activation::GeluTanh,
            None | Some("silu") | Some("swish") => Activation::Silu,
            Some("gelu_pytorch_tanh") | Some("gelu_tanh") => Activation::GeluTanh,
            Some(other) => {
                return Err(format!(
                    "activation `{other}` is not supported by the forward pass (supported: silu, gelu_pytorch_tanh)"
                ))
            }
        };
        let attn_scale = if let Some(g) = &f.granite {
            g.attention_multiplier as f32
        } else if gemma {
            f.query_pre_attn_scalar.powf(-0.5) as f32
        } else {
            (arch.head_dim as f32).powf(-0.5)
        };
        let factor = f.partial_rotary_factor;
        let rotary_dim = (arch.head_dim as f64 * factor) as usize;
        if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) {
            return Err(format!(
                "`partial_rotary_factor` ({factor}) must give an even rotary width in 2..={}",
                arch.head_dim
            ));
        }
        if let RopeScaling::LongRope(l) = &arch.rope_scaling {
            if l.short_factor.len() != rotary_dim / 2 || l.long_factor.len() != rotary_dim / 2 {
                return Err(format!(
                    "LongRoPE has {} short and {} long factors, but the rotary width {rotary_dim} needs {} of each",
                    l.short_factor.len(),
                    l.long_factor.len(),
                    rotary_dim / 2
                ));
            }
        }
        let embed_dtype = match arch.torch_dtype.as_deref() {
            Some("bfloat16") if gemma => Some(candle_core::DType::BF16),
            Some("float16") if gemma => Some(candle_core::DType::F16),
            _ => None,
        };
        Ok(FamilyOpts {
            family,
            norm_plus_one: gemma,
            activation,
            embed_scale: match &f.granite {
                Some(g) => Some(g.embedding_multiplier as f32),
                None => gemma.then(|| (arch.hidden_size as f64).sqrt() as f32),
            },
            embed_dtype,
            attn_softcap: f.attn_logit_softcapping.map(|c| c as f32),
            final_softcap: f.final_logit_softcapping.map(|c| c as f32),
            attn_scale,
            local_rope: f.local_rope.clone(),
            rotary_dim,
            rope_layers: f.rope_layers.clone(),
            residual_scale: f.granite.map(|g| g.residual_multiplier as f32),
            logits_divisor: f.granite.map(|g| g.logits_scaling as f32),
        })
    }
}
