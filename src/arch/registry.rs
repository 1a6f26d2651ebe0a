//! The architecture registry (issue 25): one row per HF `model_type`, giving everything the rest
//! of depthprune asks about an architecture — its family and transformers class, the GGUF
//! architecture llama.cpp names it and whether a GGUF of that name is read back as it, the layer
//! form (norm slots, feed-forward kind, fused projections, q/k norms, attention biases), the per-layer config
//! fields pruning slices, what llama.cpp fixes rather than reads, how healing folds, the Q/K row
//! permutation of llama.cpp's converter, and transformers' defaults that differ between
//! families. Tensor names per GGUF architecture stay in [`super::gguf_names`] (one table per
//! fact, as gguf-py keeps them), keyed by [`ArchRow::gguf_arch`].
//!
//! Adding a family of llama-form layers: a row here, a case in
//! `scripts/make_golden_registry_families.py` (its transformers fixture, which
//! `tests/golden_families.rs` finds and tests), and the table in `docs/architectures.md`
//! regenerated (see that page). Beyond the row's columns: its fields in [`super::family_config`],
//! its layer code where it differs, its GGUF names in [`super::gguf_names`].

use super::families::Family;

/// Where a layer's RMSNorms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norms {
    /// Before attention and before the MLP (llama).
    Pre,
    /// Before and after both (Gemma 2 and 3).
    Sandwich,
    /// After attention and after the MLP only (OLMo 2).
    Post,
}

/// The feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ffn {
    /// `down(act(gate(x)) · up(x))`.
    Gated,
    /// Routed experts (and, for some, a shared expert).
    Experts,
}

/// How healing folds its learned map into the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealFold {
    /// Into the last kept layer's `down_proj` (the MLP output reaches the residual directly).
    DownProj,
    /// A norm sits on the MLP output: a rotation-and-scale folded into the post-MLP norm.
    PostNorm,
}

/// Whether a set of attention projections carries a bias: read from a `config.json` key, with
/// transformers' default when the key is absent, or fixed by the architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bias {
    /// The config key (`None`: the architecture fixes it).
    pub key: Option<&'static str>,
    /// The value when the key is absent, or the fixed value.
    pub default: bool,
}

impl Bias {
    /// Read from `key`, `default` when absent.
    pub const fn key(key: &'static str, default: bool) -> Self {
        Bias {
            key: Some(key),
            default,
        }
    }

    /// Fixed by the architecture.
    pub const fn fixed(value: bool) -> Self {
        Bias {
            key: None,
            default: value,
        }
    }
}

/// One architecture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArchRow {
    pub model_type: &'static str,
    pub hf_class: &'static str,
    pub family: Family,
    /// The architecture llama.cpp's converter writes (`None`: no GGUF conversion).
    pub gguf_arch: Option<&'static str>,
    /// Whether a GGUF of [`Self::gguf_arch`] is read back as this `model_type` (mistral and
    /// mixtral become `llama` files, read back as llama).
    pub reads_gguf: bool,
    /// Whether llama.cpp's converter permuted the Q/K rows for RoPE's pair order.
    pub permute_qk: bool,
    pub norms: Norms,
    pub ffn: Ffn,
    /// q/k/v and gate/up stored fused (`qkv_proj`, `gate_up_proj`).
    pub fused: bool,
    /// A per-head RMSNorm on queries and keys.
    pub qk_norm: bool,
    /// Biases on the q/k/v projections.
    pub qkv_bias: Bias,
    /// A bias on the output projection.
    pub o_bias: Bias,
    /// Config fields holding one entry per layer, sliced on prune (any other top-level list of
    /// that length is sliced too, and reported).
    pub layer_fields: &'static [&'static str],
    /// What llama.cpp hard-codes for this architecture instead of reading it from metadata (a
    /// conversion refuses a model that differs).
    pub gguf_fixed: &'static [&'static str],
    pub heal_fold: HealFold,
    /// transformers' `rms_norm_eps` when the key is absent.
    pub rms_norm_eps: f64,
    /// transformers' `rope_theta` when the key is absent.
    pub rope_theta: f64,
    /// transformers' `num_experts_per_tok` when absent (MoE rows).
    pub top_k: usize,
}

const LLAMA: ArchRow = ArchRow {
    model_type: "llama",
    hf_class: "LlamaForCausalLM",
    family: Family::Llama,
    gguf_arch: Some("llama"),
    reads_gguf: true,
    permute_qk: true,
    norms: Norms::Pre,
    ffn: Ffn::Gated,
    fused: false,
    qk_norm: false,
    qkv_bias: Bias::key("attention_bias", false),
    o_bias: Bias::key("attention_bias", false),
    layer_fields: &[],
    gguf_fixed: &[],
    heal_fold: HealFold::DownProj,
    rms_norm_eps: 1e-6,
    rope_theta: 10000.0,
    top_k: 0,
};

const GEMMA_FIXED: &[&str] = &[
    "the sliding/global layer pattern",
    "sliding layers' RoPE base 10000, unscaled (Gemma 3)",
    "attention scale head_dim^-1/2 (hidden/heads for the 27B models)",
    "norm weights stored as 1 + w",
];

/// Granite's multipliers: the `config.json` key and the GGUF key (after `granite.`) llama.cpp's
/// converter writes it as.
pub const GRANITE_SCALES: &[(&str, &str)] = &[
    ("embedding_multiplier", "embedding_scale"),
    ("residual_multiplier", "residual_scale"),
    ("attention_multiplier", "attention.scale"),
    ("logits_scaling", "logit_scale"),
];

/// Every architecture depthprune knows, in the order error messages list them.
pub const ARCHES: &[ArchRow] = &[
    LLAMA,
    ArchRow {
        model_type: "mistral",
        hf_class: "MistralForCausalLM",
        reads_gguf: false,
        qkv_bias: Bias::fixed(false),
        o_bias: Bias::fixed(false),
        ..LLAMA
    },
    ArchRow {
        model_type: "qwen2",
        hf_class: "Qwen2ForCausalLM",
        gguf_arch: Some("qwen2"),
        permute_qk: false,
        qkv_bias: Bias::fixed(true),
        o_bias: Bias::fixed(false),
        ..LLAMA
    },
    ArchRow {
        model_type: "qwen3",
        hf_class: "Qwen3ForCausalLM",
        gguf_arch: Some("qwen3"),
        permute_qk: false,
        qk_norm: true,
        ..LLAMA
    },
    ArchRow {
        model_type: "qwen2_moe",
        hf_class: "Qwen2MoeForCausalLM",
        gguf_arch: Some("qwen2moe"),
        permute_qk: false,
        ffn: Ffn::Experts,
        // transformers 5 writes `qkv_bias` for qwen2_moe.
        qkv_bias: Bias::key("qkv_bias", true),
        o_bias: Bias::fixed(false),
        top_k: 4,
        ..LLAMA
    },
    ArchRow {
        model_type: "qwen3_moe",
        hf_class: "Qwen3MoeForCausalLM",
        gguf_arch: Some("qwen3moe"),
        permute_qk: false,
        ffn: Ffn::Experts,
        qk_norm: true,
        top_k: 8,
        ..LLAMA
    },
    ArchRow {
        model_type: "mixtral",
        hf_class: "MixtralForCausalLM",
        reads_gguf: false,
        ffn: Ffn::Experts,
        qkv_bias: Bias::fixed(false),
        o_bias: Bias::fixed(false),
        rms_norm_eps: 1e-5,
        rope_theta: 1e6,
        top_k: 2,
        ..LLAMA
    },
    ArchRow {
        model_type: "gemma2",
        hf_class: "Gemma2ForCausalLM",
        family: Family::Gemma2,
        gguf_arch: Some("gemma2"),
        permute_qk: false,
        norms: Norms::Sandwich,
        layer_fields: &["layer_types"],
        gguf_fixed: GEMMA_FIXED,
        heal_fold: HealFold::PostNorm,
        ..LLAMA
    },
    ArchRow {
        model_type: "gemma3_text",
        hf_class: "Gemma3ForCausalLM",
        family: Family::Gemma3,
        gguf_arch: Some("gemma3"),
        permute_qk: false,
        norms: Norms::Sandwich,
        qk_norm: true,
        layer_fields: &["layer_types"],
        gguf_fixed: GEMMA_FIXED,
        heal_fold: HealFold::PostNorm,
        ..LLAMA
    },
    ArchRow {
        model_type: "phi3",
        hf_class: "Phi3ForCausalLM",
        family: Family::Phi3,
        gguf_arch: Some("phi3"),
        permute_qk: false,
        fused: true,
        rms_norm_eps: 1e-5,
        ..LLAMA
    },
    ArchRow {
        model_type: "olmo2",
        hf_class: "Olmo2ForCausalLM",
        family: Family::Olmo2,
        gguf_arch: Some("olmo2"),
        permute_qk: false,
        norms: Norms::Post,
        heal_fold: HealFold::PostNorm,
        rms_norm_eps: 1e-5,
        ..LLAMA
    },
    // No GGUF: llama.cpp's `smollm3` fixes a NoPE layer every 4th layer, which pruning breaks.
    ArchRow {
        model_type: "smollm3",
        hf_class: "SmolLM3ForCausalLM",
        gguf_arch: None,
        reads_gguf: false,
        layer_fields: &["no_rope_layers"],
        gguf_fixed: &["a NoPE layer every 4th layer"],
        rope_theta: 2e6,
        ..LLAMA
    },
    // llama.cpp's `granite` reads the four multipliers from metadata ([`GRANITE_SCALES`]).
    ArchRow {
        model_type: "granite",
        hf_class: "GraniteForCausalLM",
        gguf_arch: Some("granite"),
        ..LLAMA
    },
    // Seed-OSS: llama layers with q/k/v biases by default and a separate key for o_proj's. No
    // GGUF: llama.cpp's `seed_oss` names are not checked here.
    ArchRow {
        model_type: "seed_oss",
        hf_class: "SeedOssForCausalLM",
        gguf_arch: None,
        reads_gguf: false,
        qkv_bias: Bias::key("attention_bias", true),
        o_bias: Bias::key("attention_out_bias", false),
        ..LLAMA
    },
];

/// The row of an HF `model_type`.
pub fn by_model_type(model_type: &str) -> Option<&'static ArchRow> {
    ARCHES.iter().find(|r| r.model_type == model_type)
}

/// The row a GGUF file of llama.cpp architecture `arch` is read as.
pub fn by_gguf_arch(arch: &str) -> Option<&'static ArchRow> {
    ARCHES
        .iter()
        .find(|r| r.reads_gguf && r.gguf_arch == Some(arch))
}

/// Every known `model_type`, for error messages.
pub fn model_types() -> Vec<&'static str> {
    ARCHES.iter().map(|r| r.model_type).collect()
}

/// The GGUF architectures read back, for error messages.
pub fn gguf_arches() -> Vec<&'static str> {
    ARCHES
        .iter()
        .filter(|r| r.reads_gguf)
        .filter_map(|r| r.gguf_arch)
        .collect()
}

/// The registry as a Markdown table, one row per `model_type`: what `docs/architectures.md`
/// shows between its `registry` markers (a test keeps the two equal, so the page cannot drift).
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| `model_type` | transformers class | GGUF architecture | norms | feed-forward | fused q/k/v, gate/up | q/k norm | attention biases | healing folds into | per-layer config fields | llama.cpp fixes |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let list = |xs: &[&str]| {
        if xs.is_empty() {
            "".to_string()
        } else {
            xs.join("; ")
        }
    };
    for r in ARCHES {
        let gguf = match (r.gguf_arch, r.reads_gguf) {
            (None, _) => "none".to_string(),
            (Some(a), true) => format!("`{a}`"),
            (Some(a), false) => match by_gguf_arch(a) {
                Some(back) => format!("`{a}` (read back as `{}`)", back.model_type),
                None => format!("`{a}` (written, not read back)"),
            },
        };
        let norms = match r.norms {
            Norms::Pre => "pre",
            Norms::Sandwich => "pre and post",
            Norms::Post => "post",
        };
        let ffn = match r.ffn {
            Ffn::Gated => "gated MLP",
            Ffn::Experts => "experts",
        };
        let fold = match r.heal_fold {
            HealFold::DownProj => "`down_proj`",
            HealFold::PostNorm => "`down_proj` (rotation) + post-MLP norm (scale)",
        };
        let bias = |b: Bias| match b.key {
            Some(k) => format!("`{k}` (default {})", yes_no(b.default)),
            None => yes_no(b.default).to_string(),
        };
        let biases = match (r.qkv_bias, r.o_bias) {
            (a, b) if a == b && a.key.is_none() => yes_no(a.default).to_string(),
            (a, b) if a == b => bias(a),
            (a, b) => format!("q/k/v {}, o {}", bias(a), bias(b)),
        };
        let fields: Vec<String> = r.layer_fields.iter().map(|f| format!("`{f}`")).collect();
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.model_type,
            r.hf_class,
            gguf,
            norms,
            ffn,
            yes_no(r.fused),
            yes_no(r.qk_norm),
            biases,
            fold,
            list(&fields),
            list(r.gguf_fixed),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_model_type_and_per_gguf_arch_read() {
        let mut m = model_types();
        m.sort_unstable();
        m.dedup();
        assert_eq!(m.len(), ARCHES.len());
        let mut g = gguf_arches();
        let n = g.len();
        g.sort_unstable();
        g.dedup();
        assert_eq!(g.len(), n, "two rows read the same GGUF arch");
        for a in gguf_arches() {
            assert_eq!(by_gguf_arch(a).unwrap().gguf_arch, Some(a));
        }
        assert_eq!(by_gguf_arch("gemma3").unwrap().model_type, "gemma3_text");
        assert_eq!(by_model_type("mixtral").unwrap().gguf_arch, Some("llama"));
    }

    #[test]
    fn heal_fold_follows_the_norm_after_the_mlp() {
        // A norm on the MLP's output (sandwich or post norms) means a map folded into
        // `down_proj` is not a map of what reaches the residual stream.
        for r in ARCHES {
            assert_eq!(
                r.heal_fold == HealFold::PostNorm,
                matches!(r.norms, Norms::Sandwich | Norms::Post),
                "{}",
                r.model_type
            );
        }
    }
}
