//! What the forward pass does differently for each dense family (issue 17), read once from
//! `config.json` into [`FamilyOpts`]: where the norms sit and how they scale, the MLP's
//! activation, the embedding scale, soft-capping, the attention scale, Gemma 3's second RoPE for
//! sliding layers, Phi-3's partial rotary and LongRoPE. See [`crate::arch::families`] for the
//! table of differences.

use super::config::{LongRope, RopeScaling};
use crate::arch::families::Family;
use crate::arch::ArchConfig;
use serde_json::Value;

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
}

fn num(raw: &Value, key: &str) -> Option<f64> {
    raw.get(key).and_then(Value::as_f64)
}

/// The `rope_parameters` entry for one Gemma 3 layer type (transformers 5 writes them nested).
fn nested<'a>(raw: &'a Value, layer_type: &str) -> Option<&'a Value> {
    raw.get("rope_parameters")
        .and_then(|p| p.get(layer_type))
        .filter(|v| v.is_object())
}

impl FamilyOpts {
    /// Reads the family settings; `arch.rope_theta` and `rope` are set to the global layers'
    /// RoPE for Gemma 3, whose config nests them per layer type.
    pub fn new(
        arch: &mut ArchConfig,
        raw: &Value,
        rope: &mut RopeScaling,
    ) -> std::result::Result<Self, String> {
        let family = Family::of(&arch.model_type);
        let gemma = family.is_gemma();
        let activation = match raw
            .get("hidden_activation")
            .or_else(|| raw.get("hidden_act"))
            .and_then(Value::as_str)
        {
            None if gemma => Activation::GeluTanh,
            None | Some("silu") | Some("swish") => Activation::Silu,
            Some("gelu_pytorch_tanh") | Some("gelu_tanh") => Activation::GeluTanh,
            Some(other) => {
                return Err(format!(
                    "activation `{other}` is not supported by the forward pass (supported: silu, gelu_pytorch_tanh)"
                ))
            }
        };
        let softcap = |key: &str, default: Option<f64>| -> Option<f32> {
            match raw.get(key) {
                Some(Value::Null) => None,
                Some(v) => v.as_f64().map(|c| c as f32),
                None => default.map(|c| c as f32),
            }
        };
        let (attn_softcap, final_softcap) = match family {
            Family::Gemma2 => (
                softcap("attn_logit_softcapping", Some(50.0)),
                softcap("final_logit_softcapping", Some(30.0)),
            ),
            Family::Gemma3 => (
                softcap("attn_logit_softcapping", None),
                softcap("final_logit_softcapping", None),
            ),
            _ => (None, None),
        };
        if [attn_softcap, final_softcap]
            .iter()
            .flatten()
            .any(|c| !(c.is_finite() && *c > 0.0))
        {
            return Err("logit soft-capping values must be positive".into());
        }
        let attn_scale = if gemma {
            let s = num(raw, "query_pre_attn_scalar").unwrap_or(256.0);
            if !(s.is_finite() && s > 0.0) {
                return Err(format!("`query_pre_attn_scalar` ({s}) must be positive"));
            }
            s.powf(-0.5) as f32
        } else {
            (arch.head_dim as f32).powf(-0.5)
        };
        let local_rope = if family == Family::Gemma3 {
            gemma3_ropes(arch, raw, rope)?
        } else {
            None
        };
        let factor = num(raw, "partial_rotary_factor")
            .or_else(|| {
                raw.get("rope_parameters")
                    .and_then(|p| num(p, "partial_rotary_factor"))
            })
            .unwrap_or(1.0);
        let rotary_dim = (arch.head_dim as f64 * factor) as usize;
        if !(factor > 0.0 && factor <= 1.0) || rotary_dim == 0 || !rotary_dim.is_multiple_of(2) {
            return Err(format!(
                "`partial_rotary_factor` ({factor}) must give an even rotary width in 2..={}",
                arch.head_dim
            ));
        }
        if let RopeScaling::LongRope(l) = &*rope {
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
            embed_scale: gemma.then(|| (arch.hidden_size as f64).sqrt() as f32),
            embed_dtype,
            attn_softcap,
            final_softcap,
            attn_scale,
            local_rope,
            rotary_dim,
        })
    }
}

/// Gemma 3's two RoPEs. Global layers: `rope_parameters.full_attention`, or the top-level
/// `rope_theta` (default 1e6) and `rope_scaling`. Sliding layers: `rope_parameters
/// .sliding_attention`, or `rope_local_base_freq` (default 1e4), unscaled.
fn gemma3_ropes(
    arch: &mut ArchConfig,
    raw: &Value,
    rope: &mut RopeScaling,
) -> std::result::Result<Option<(f64, RopeScaling)>, String> {
    if let Some(full) = nested(raw, "full_attention") {
        arch.rope_theta = num(full, "rope_theta").unwrap_or(1e6);
        *rope = super::config::rope_scaling_of(full)?;
    } else {
        arch.rope_theta = num(raw, "rope_theta").unwrap_or(1e6);
    }
    let local = match nested(raw, "sliding_attention") {
        Some(p) => (
            num(p, "rope_theta").unwrap_or(1e4),
            super::config::rope_scaling_of(p)?,
        ),
        None => (
            num(raw, "rope_local_base_freq").unwrap_or(1e4),
            RopeScaling::Default,
        ),
    };
    Ok(Some(local))
}

/// Phi-3's LongRoPE from `rope_parameters` / `rope_scaling` of type `longrope` (`su` and `yarn`
/// are its old names in Phi-3 configs), following transformers: factors per rotated pair, the
/// long ones once the positions pass `original_max_position_embeddings`, and cos/sin scaled by
/// `√(1 + ln(factor) / ln(original))` where `factor = max_position_embeddings / original`.
pub(crate) fn long_rope(params: &Value, raw: &Value) -> std::result::Result<LongRope, String> {
    let factors = |key: &str| -> std::result::Result<Vec<f64>, String> {
        params
            .get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_f64).collect())
            .ok_or_else(|| format!("LongRoPE needs a list of numbers `{key}`"))
    };
    let original = num(params, "original_max_position_embeddings")
        .or_else(|| num(raw, "original_max_position_embeddings"))
        .ok_or("LongRoPE needs `original_max_position_embeddings`")?;
    if original < 2.0 {
        return Err("`original_max_position_embeddings` must be at least 2".into());
    }
    let factor = match num(params, "factor") {
        Some(f) => f,
        None => num(raw, "max_position_embeddings").unwrap_or(original) / original,
    };
    let attention_factor = match num(params, "attention_factor") {
        Some(a) => a,
        None if factor <= 1.0 => 1.0,
        None => (1.0 + factor.ln() / original.ln()).sqrt(),
    };
    Ok(LongRope {
        short_factor: factors("short_factor")?,
        long_factor: factors("long_factor")?,
        original_max_position_embeddings: original as usize,
        attention_factor,
    })
}
