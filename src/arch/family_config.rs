//! The family-specific fields of `config.json` (issue 25), read once with the checks transformers
//! makes and its defaults for absent keys: the activation, Gemma's soft-caps, attention scalar,
//! layer pattern and second RoPE, Phi-3's partial rotary factor, and MoE routing's
//! `norm_topk_prob`. The forward pass ([`crate::model::FamilyOpts`]) only reads this struct.

use super::families::Family;
use super::fields::{self, Obj};
use super::rope::{self, RopeScaling};

type R<T> = std::result::Result<T, String>;

/// The Gemma 3 default of `sliding_window_pattern`.
pub const GEMMA3_PATTERN: usize = 6;

/// Family fields, resolved to their values (the config's, else transformers' default).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FamilyConfig {
    /// `hidden_activation` or `hidden_act`, when stated.
    pub hidden_act: Option<String>,
    /// `attn_logit_softcapping` (Gemma 2 default 50; `null` turns it off).
    pub attn_logit_softcapping: Option<f64>,
    /// `final_logit_softcapping` (Gemma 2 default 30).
    pub final_logit_softcapping: Option<f64>,
    /// `query_pre_attn_scalar` (Gemma; default 256).
    pub query_pre_attn_scalar: f64,
    /// `partial_rotary_factor` (default 1), at the top level or in `rope_parameters`.
    pub partial_rotary_factor: f64,
    /// `sliding_window_pattern` (Gemma 3; default 6).
    pub sliding_window_pattern: usize,
    /// Gemma 3's sliding layers' RoPE base and scaling.
    pub local_rope: Option<(f64, RopeScaling)>,
    /// MoE routing renormalises the top-k weights (always for Mixtral).
    pub norm_topk_prob: bool,
    /// SmolLM3: whether each layer applies RoPE (`no_rope_layers`, 1 = RoPE, 0 = NoPE; absent:
    /// NoPE every `no_rope_layer_interval`-th layer, default 4).
    pub rope_layers: Option<Vec<bool>>,
    /// Granite's four multipliers.
    pub granite: Option<Granite>,
}

/// Granite's scalars (transformers' defaults 1): embeddings are multiplied by
/// `embedding_multiplier`, attention scores use `attention_multiplier` as their scale, each
/// branch is multiplied by `residual_multiplier` before the residual add, and the logits are
/// divided by `logits_scaling`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Granite {
    pub embedding_multiplier: f64,
    pub attention_multiplier: f64,
    pub residual_multiplier: f64,
    pub logits_scaling: f64,
}

impl Granite {
    fn read(raw: &Obj) -> R<Self> {
        let one = |key: &str| -> R<f64> { Ok(fields::positive(raw, key)?.unwrap_or(1.0)) };
        Ok(Granite {
            embedding_multiplier: one("embedding_multiplier")?,
            attention_multiplier: one("attention_multiplier")?,
            residual_multiplier: one("residual_multiplier")?,
            logits_scaling: one("logits_scaling")?,
        })
    }
}

/// A soft-cap: absent gives the family's default, `null` none, else a positive number.
fn softcap(obj: &Obj, key: &str, default: Option<f64>) -> R<Option<f64>> {
    if obj.get(key).is_some_and(|v| v.is_null()) {
        return Ok(None);
    }
    Ok(fields::positive(obj, key)?.or(default))
}

/// The `rope_parameters` entry for one Gemma 3 layer type (transformers 5 writes them nested).
fn nested<'a>(raw: &'a Obj, layer_type: &str) -> R<Option<&'a Obj>> {
    match fields::object(raw, "rope_parameters")? {
        Some(p) => fields::object(p, layer_type),
        None => Ok(None),
    }
}

impl FamilyConfig {
    /// Reads the family fields of `raw`; for Gemma 3, also the global layers' RoPE (returned
    /// as `(theta, scaling)`, replacing the top-level reading).
    pub fn read(
        family: Family,
        model_type: &str,
        layers: usize,
        raw: &Obj,
    ) -> R<(Self, Option<(f64, RopeScaling)>)> {
        let gemma = family.is_gemma();
        let hidden_act = match fields::string(raw, "hidden_activation")? {
            Some(a) => Some(a),
            None => fields::string(raw, "hidden_act")?,
        }
        .map(String::from);
        let (attn, fin) = match family {
            Family::Gemma2 => (Some(50.0), Some(30.0)),
            _ => (None, None),
        };
        let (attn_logit_softcapping, final_logit_softcapping) = if gemma {
            (
                softcap(raw, "attn_logit_softcapping", attn)?,
                softcap(raw, "final_logit_softcapping", fin)?,
            )
        } else {
            (None, None)
        };
        let query_pre_attn_scalar =
            fields::positive(raw, "query_pre_attn_scalar")?.unwrap_or(256.0);
        let in_rope = match fields::object(raw, "rope_parameters")? {
            Some(p) => fields::number(p, "partial_rotary_factor")?,
            None => None,
        };
        let partial_rotary_factor = fields::number(raw, "partial_rotary_factor")?
            .or(in_rope)
            .unwrap_or(1.0);
        if !(partial_rotary_factor > 0.0 && partial_rotary_factor <= 1.0) {
            return Err(format!(
                "`partial_rotary_factor` ({partial_rotary_factor}) must be in (0, 1]"
            ));
        }
        let sliding_window_pattern =
            fields::positive_uint(raw, "sliding_window_pattern")?.unwrap_or(GEMMA3_PATTERN);
        let (local_rope, global_rope) = if family == Family::Gemma3 {
            let global = match nested(raw, "full_attention")? {
                Some(full) => (
                    fields::positive(full, "rope_theta")?.unwrap_or(1e6),
                    rope::rope_scaling_of(full)?,
                ),
                None => (
                    fields::positive(raw, "rope_theta")?.unwrap_or(1e6),
                    rope::rope_scaling(raw)?,
                ),
            };
            let local = match nested(raw, "sliding_attention")? {
                Some(p) => (
                    fields::positive(p, "rope_theta")?.unwrap_or(1e4),
                    rope::rope_scaling_of(p)?,
                ),
                None => (
                    fields::positive(raw, "rope_local_base_freq")?.unwrap_or(1e4),
                    RopeScaling::Default,
                ),
            };
            (Some(local), Some(global))
        } else {
            (None, None)
        };
        let norm_topk_prob = fields::boolean(raw, "norm_topk_prob")?.unwrap_or(false);
        let rope_layers = if model_type == "smollm3" {
            Some(rope_layers(raw, layers)?)
        } else {
            None
        };
        Ok((
            FamilyConfig {
                hidden_act,
                attn_logit_softcapping,
                final_logit_softcapping,
                query_pre_attn_scalar,
                partial_rotary_factor,
                sliding_window_pattern,
                local_rope,
                norm_topk_prob,
                rope_layers,
                granite: if model_type == "granite" {
                    Some(Granite::read(raw)?)
                } else {
                    None
                },
            },
            global_rope,
        ))
    }
}

/// SmolLM3's per-layer RoPE switch, as transformers reads it: `no_rope_layers` (one 0 or 1 per
/// layer), else a NoPE layer every `no_rope_layer_interval`-th layer.
fn rope_layers(raw: &Obj, layers: usize) -> R<Vec<bool>> {
    let given = fields::list(raw, "no_rope_layers", |v| match v.as_u64() {
        Some(0) => Some(false),
        Some(1) => Some(true),
        _ => None,
    })
    .map_err(|e| format!("{e} (entries are 1 for a RoPE layer, 0 for NoPE)"))?;
    match given {
        Some(l) if l.len() != layers => Err(format!(
            "`no_rope_layers` has {} entries but `num_hidden_layers` is {layers}",
            l.len()
        )),
        Some(l) => Ok(l),
        None => {
            let every = fields::positive_uint(raw, "no_rope_layer_interval")?.unwrap_or(4);
            Ok((0..layers)
                .map(|i| !(i + 1).is_multiple_of(every))
                .collect())
        }
    }
}
