//! What the forward pass needs from `config.json`: the [`ArchConfig`] fields plus the RoPE variant
//! and each layer's attention window, checked against the families the forward pass implements.

use super::family::FamilyOpts;
use crate::arch::ArchConfig;
use crate::error::{Error, Result};
use std::cell::Cell;
use std::path::Path;

pub use crate::arch::rope::{LongRope, RopeScaling};

/// The precision the matrix products run in, once resolved for a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compute {
    /// Weights widened to f32 on load; every product in f32 (for fidelity).
    #[default]
    F32,
    /// Matrix weights and the embedding kept in 16 bits (bf16 and f16 as stored, anything else
    /// rounded to bf16), products accumulated in f32; norms, attention and the residual stream
    /// stay f32. Half the weight memory, and native bf16 dot products where the CPU has them.
    Bf16,
    /// A quantized GGUF's matrix weights kept as the file's ggml blocks and multiplied with
    /// quantized kernels (f32 activations); the rest as under [`Compute::F32`].
    Quant,
}

/// The precision a caller asks for (`compute`, the CLI's `--compute`): [`ComputeChoice::Auto`]
/// resolves per checkpoint to the precision it is stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeChoice {
    /// 16-bit checkpoints in 16 bits, quantized GGUF quantized, f32 in f32.
    #[default]
    Auto,
    /// Every product in f32 (weights widened on load), for fidelity.
    F32,
    /// Matrix weights in 16 bits with f32 accumulation, whatever the checkpoint stores.
    Bf16,
}

impl ComputeChoice {
    /// The name as the option takes it.
    pub fn name(self) -> &'static str {
        match self {
            ComputeChoice::Auto => "auto",
            ComputeChoice::F32 => "f32",
            ComputeChoice::Bf16 => "bf16",
        }
    }
}

impl Compute {
    /// The name as results report it.
    pub fn name(self) -> &'static str {
        match self {
            Compute::F32 => "f32",
            Compute::Bf16 => "bf16",
            Compute::Quant => "quant",
        }
    }
}

thread_local! {
    /// The choice of the call running on this thread ([`with_compute`]); outside one, f32.
    static CHOICE: Cell<ComputeChoice> = const { Cell::new(ComputeChoice::F32) };
}

/// Runs `f` with `choice` as the precision that checkpoints opened on this thread resolve
/// (one call's option, restored after it; nothing process-wide).
pub fn with_compute<R>(choice: ComputeChoice, f: impl FnOnce() -> R) -> R {
    let before = CHOICE.with(|c| c.replace(choice));
    struct Restore(ComputeChoice);
    impl Drop for Restore {
        fn drop(&mut self) {
            CHOICE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

/// The precision the running call asked for ([`with_compute`]; f32 outside one).
pub fn compute_choice() -> ComputeChoice {
    CHOICE.with(Cell::get)
}

thread_local! {
    /// Whether the call running on this thread keeps its models' layers off ([`with_offload`]).
    static OFFLOAD: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every model built on this thread ([`super::Model::from_source`]) keeping no
/// layer resident when `offload` is set: each is read from the mapped file when a forward needs
/// it. For callers that build models deep inside (healing, distillation); restored after.
pub fn with_offload<R>(offload: bool, f: impl FnOnce() -> R) -> R {
    let before = OFFLOAD.with(|c| c.replace(offload));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            OFFLOAD.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

/// Whether the running call asked for offloaded models ([`with_offload`]).
pub fn offload_choice() -> bool {
    OFFLOAD.with(Cell::get)
}

/// Configuration of the forward pass.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: ArchConfig,
    /// The precision of the matrix products (resolved when the checkpoint is opened).
    pub compute: Compute,
    pub rope_scaling: RopeScaling,
    /// The attention window of each layer (`None` for full causal attention), by original index.
    pub windows: Vec<Option<usize>>,
    /// What the family does differently ([`FamilyOpts`]).
    pub family: FamilyOpts,
    /// MoE routing: whether the top-k weights are renormalised to sum to 1 (always for Mixtral;
    /// qwen's `norm_topk_prob`, false when absent).
    pub norm_topk_prob: bool,
}

impl ModelConfig {
    /// Reads `config.json` and checks that the forward pass implements its architecture.
    pub fn from_file(path: &Path) -> Result<Self> {
        let (arch, _) = ArchConfig::from_file(path)?;
        Self::new(arch).map_err(|msg| Error::config(path, msg))
    }

    /// Builds the configuration from a checked config; the error is a message without the file
    /// name.
    pub fn new(arch: ArchConfig) -> std::result::Result<Self, String> {
        if !arch.is_supported() {
            return Err(format!(
                "architecture `{}` is not supported by the forward pass (supported: {})",
                arch.model_type,
                crate::arch::registry::model_types().join(", ")
            ));
        }
        // Checked here rather than on reading: transformers' default top-k (8 for qwen3_moe)
        // may exceed a small model's experts, which only matters for routing.
        if let Some(m) = &arch.moe {
            if m.num_experts_per_tok > m.num_experts {
                return Err(format!(
                    "`num_experts_per_tok` ({}) must be between 1 and the number of experts ({})",
                    m.num_experts_per_tok, m.num_experts
                ));
            }
        }
        let norm_topk_prob = arch.model_type == "mixtral" || arch.family.norm_topk_prob;
        if arch.mlp_bias {
            return Err("`mlp_bias` is not supported by the forward pass".into());
        }
        if !arch.head_dim.is_multiple_of(2) {
            return Err(format!(
                "`head_dim` ({}) must be even for RoPE",
                arch.head_dim
            ));
        }
        let rope_scaling = arch.rope_scaling.clone();
        let family = FamilyOpts::new(&arch)?;
        let windows = match crate::arch::families::sliding_layers(&arch) {
            Some(sliding) => sliding
                .iter()
                .map(|&s| if s { arch.sliding_window } else { None })
                .collect(),
            None => (0..arch.num_hidden_layers)
                .map(|i| layer_window(&arch, i))
                .collect(),
        };
        Ok(ModelConfig {
            arch,
            compute: Compute::F32,
            rope_scaling,
            windows,
            family,
            norm_topk_prob,
        })
    }

    /// The number of layers in the checkpoint.
    pub fn n_layers(&self) -> usize {
        self.arch.num_hidden_layers
    }
}

/// The attention window of layer `i`, following transformers: mistral windows every layer when
/// `sliding_window` is set; qwen2/3 only with `use_sliding_window`, from `max_window_layers` on;
/// an explicit `layer_types` list wins.
fn layer_window(arch: &ArchConfig, i: usize) -> Option<usize> {
    let window = arch.sliding_window?;
    if !arch.use_sliding_window && arch.model_type != "phi3" {
        return None;
    }
    if let Some(types) = &arch.layer_types {
        return (types.get(i).map(String::as_str) == Some("sliding_attention")).then_some(window);
    }
    match arch.model_type.as_str() {
        "mistral" | "phi3" => Some(window),
        _ => (i >= arch.max_window_layers.unwrap_or(0)).then_some(window),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn cfg(extra: Value) -> std::result::Result<ModelConfig, String> {
        let mut v = json!({"model_type":"llama","num_hidden_layers":4,"hidden_size":8,"num_attention_heads":2,
            "intermediate_size":16,"vocab_size":10});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        ModelConfig::new(ArchConfig::from_value(&v)?)
    }

    #[test]
    fn lists_supported_architectures() {
        let err = cfg(json!({"model_type":"gpt2"})).unwrap_err();
        assert!(
            err.contains("`gpt2`") && err.contains("llama, mistral, qwen2, qwen3"),
            "{err}"
        );
    }

    #[test]
    fn reads_llama3_scaling_in_both_forms() {
        let p = json!({"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
            "original_max_position_embeddings":8192,"rope_theta":500000.0});
        let a = cfg(json!({"rope_parameters": p.clone()})).unwrap();
        let b = cfg(json!({"rope_scaling": p})).unwrap();
        assert_eq!(a.rope_scaling, b.rope_scaling);
        assert!(matches!(a.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
        let err = cfg(json!({"rope_scaling": {"type":"yarn","factor":4.0}})).unwrap_err();
        assert!(err.contains("`yarn`"), "{err}");
    }

    #[test]
    fn windows_follow_transformers() {
        let m = cfg(json!({"model_type":"mistral","sliding_window":8})).unwrap();
        assert_eq!(m.windows, vec![Some(8); 4]);
        let q =
            cfg(json!({"model_type":"qwen2","sliding_window":8,"max_window_layers":2})).unwrap();
        assert_eq!(q.windows, vec![None; 4]);
        let q = cfg(json!({"model_type":"qwen2","sliding_window":8,"use_sliding_window":true,"max_window_layers":2})).unwrap();
        assert_eq!(q.windows, vec![None, None, Some(8), Some(8)]);
        let l = cfg(json!({"model_type":"mistral","sliding_window":8,
            "layer_types":["full_attention","sliding_attention","full_attention","sliding_attention"]})).unwrap();
        assert_eq!(l.windows, vec![None, Some(8), None, Some(8)]);
    }
}
