//! The RoPE settings of a `config.json`, read once and checked (issue 25): `rope_theta`, and the
//! scaling in `rope_parameters` (transformers 5) or `rope_scaling` (earlier). Every factor must be
//! a positive number; a scaling type the forward pass does not implement is refused.

use super::fields::{self, Obj};
use serde_json::Value;

type R<T> = std::result::Result<T, String>;

/// How RoPE frequencies are derived from `rope_theta`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Every frequency divided by `factor` (HF `linear`).
    Linear { factor: f64 },
    /// Llama 3.1's band-wise scaling (HF `llama3`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// Phi-3's LongRoPE (HF `longrope`, formerly `su`).
    LongRope(LongRope),
}

/// LongRoPE: per-pair frequency divisors, short ones up to `original_max_position_embeddings`
/// positions and long ones past it, and a scale on cos and sin.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LongRope {
    pub short_factor: Vec<f64>,
    pub long_factor: Vec<f64>,
    pub original_max_position_embeddings: usize,
    pub attention_factor: f64,
}

/// The scaling object of the config: `rope_parameters` or `rope_scaling`, whichever is an
/// object (either may be `null`; a value of another type is an error).
fn scaling_object(raw: &Obj) -> R<Option<&Obj>> {
    let a = fields::object(raw, "rope_parameters")?;
    let b = fields::object(raw, "rope_scaling")?;
    Ok(a.or(b))
}

/// `rope_theta` at the top level or inside `rope_parameters`; `None` when neither states it.
pub fn rope_theta(raw: &Obj) -> R<Option<f64>> {
    if let Some(t) = fields::positive(raw, "rope_theta")? {
        return Ok(Some(t));
    }
    match fields::object(raw, "rope_parameters")? {
        Some(p) => fields::positive(p, "rope_theta"),
        None => Ok(None),
    }
}

/// The config's RoPE scaling.
pub fn rope_scaling(raw: &Obj) -> R<RopeScaling> {
    match scaling_object(raw)? {
        None => Ok(RopeScaling::Default),
        Some(params) => scaling_in(params, raw),
    }
}

/// Reads one RoPE parameter object (`rope_type` and its fields), such as Gemma 3's nested
/// `rope_parameters.full_attention`.
pub fn rope_scaling_of(params: &Obj) -> R<RopeScaling> {
    scaling_in(params, params)
}

/// Reads one RoPE parameter object; `raw` is the whole config, for the fields LongRoPE may
/// find at the top level.
fn scaling_in(params: &Obj, raw: &Obj) -> R<RopeScaling> {
    let kind = match fields::string(params, "rope_type")? {
        Some(k) => k,
        None => fields::string(params, "type")?.unwrap_or("default"),
    };
    let num = |key: &str| -> R<f64> {
        fields::positive(params, key)
            .map_err(|e| format!("RoPE scaling `{kind}`: {e}"))?
            .ok_or_else(|| format!("RoPE scaling `{kind}` needs a numeric `{key}`"))
    };
    match kind {
        "default" => Ok(RopeScaling::Default),
        "linear" => Ok(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "longrope" | "su" => Ok(RopeScaling::LongRope(long_rope(params, raw)?)),
        "llama3" => {
            let (lo, hi) = (num("low_freq_factor")?, num("high_freq_factor")?);
            if hi <= lo {
                return Err(format!("RoPE scaling `llama3`: `high_freq_factor` ({hi}) must exceed `low_freq_factor` ({lo})"));
            }
            Ok(RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: lo,
                high_freq_factor: hi,
                original_max_position_embeddings: num("original_max_position_embeddings")?,
            })
        }
        other => Err(format!(
            "RoPE scaling `{other}` is not supported by the forward pass (supported: default, linear, llama3, longrope)"
        )),
    }
}

/// Phi-3's LongRoPE from `rope_parameters` / `rope_scaling` of type `longrope` (`su` is its old
/// name in Phi-3 configs), following transformers: factors per rotated pair, the long ones once
/// the positions pass `original_max_position_embeddings`, and cos/sin scaled by
/// `√(1 + ln(factor) / ln(original))` where `factor = max_position_embeddings / original`.
pub fn long_rope(params: &Obj, raw: &Obj) -> R<LongRope> {
    let factors = |key: &str| -> R<Vec<f64>> {
        fields::positive_list(params, key)
            .map_err(|e| format!("LongRoPE: {e}"))?
            .ok_or_else(|| format!("LongRoPE needs a list of numbers `{key}`"))
    };
    let original = match fields::uint(params, "original_max_position_embeddings")? {
        Some(o) => Some(o),
        None => fields::uint(raw, "original_max_position_embeddings")?,
    }
    .ok_or("LongRoPE needs `original_max_position_embeddings`")?;
    if original < 2 {
        return Err(format!(
            "`original_max_position_embeddings` ({original}) must be at least 2"
        ));
    }
    let orig = original as f64;
    let factor = match fields::positive(params, "factor")? {
        Some(f) => f,
        None => fields::uint(raw, "max_position_embeddings")?.map_or(orig, |m| m as f64) / orig,
    };
    if factor <= 0.0 {
        return Err("`max_position_embeddings` must be positive for LongRoPE".into());
    }
    let attention_factor = match fields::positive(params, "attention_factor")? {
        Some(a) => a,
        None if factor <= 1.0 => 1.0,
        None => (1.0 + factor.ln() / orig.ln()).sqrt(),
    };
    Ok(LongRope {
        short_factor: factors("short_factor")?,
        long_factor: factors("long_factor")?,
        original_max_position_embeddings: original,
        attention_factor,
    })
}

/// The config as an object, for the readers above.
pub fn as_obj(raw: &Value) -> R<&Obj> {
    raw.as_object()
        .ok_or_else(|| "the top level is not a JSON object".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scaling(v: Value) -> R<RopeScaling> {
        rope_scaling(v.as_object().unwrap())
    }

    #[test]
    fn zero_or_textual_factors_are_refused() {
        let lr = |short: Value| {
            json!({"rope_scaling":{"type":"longrope","short_factor":short,"long_factor":[1.0],
                "original_max_position_embeddings":4096}})
        };
        assert!(scaling(lr(json!([1.0]))).is_ok());
        let err = scaling(lr(json!([0.0]))).unwrap_err();
        assert!(err.contains("`short_factor` entry 0"), "{err}");
        assert!(scaling(lr(json!(["1.0"]))).is_err());
        let err = scaling(json!({"rope_scaling":{"type":"linear","factor":"2"}})).unwrap_err();
        assert!(err.contains("`factor` must be a number"), "{err}");
        assert!(scaling(json!({"rope_scaling":{"type":"linear","factor":0}})).is_err());
        assert!(scaling(json!({"rope_scaling":"linear"})).is_err());
        assert_eq!(
            scaling(json!({"rope_scaling":null})).unwrap(),
            RopeScaling::Default
        );
    }

    #[test]
    fn theta_must_be_positive() {
        let t = |v: Value| rope_theta(v.as_object().unwrap());
        assert_eq!(t(json!({"rope_theta":5e5})).unwrap(), Some(5e5));
        assert_eq!(
            t(json!({"rope_parameters":{"rope_theta":5e5}})).unwrap(),
            Some(5e5)
        );
        assert!(t(json!({"rope_theta":0})).is_err());
        assert!(t(json!({"rope_theta":-1.0})).is_err());
        assert!(t(json!({"rope_theta":"1e4"})).is_err());
        assert_eq!(t(json!({})).unwrap(), None);
    }
}
