//! Low-rank distillation (issue 23): rank-`r` updates `W ← W + B·A` on the linear weights of the
//! kept layers from the first fold site on, trained by [`super::kd`] together with its maps on
//! the same KL to the dense model, and merged into the weights at the end, so the output stays a
//! stock checkpoint whose changed tensors are listed in provenance.
//!
//! - **What trains.** Each adapted weight `W` (`(out, in)`, as stored) gets `A` `(r, in)`,
//!   small and pseudo-random, and `B` `(out, r)`, zero: step 0 is exactly the start. The layers
//!   of a step are rebuilt from a weight source serving `W + B·A` (the rest from the healed
//!   model), so the layer code is the model's own and the product records its graph;
//!   [`crate::model::Linear`] differentiates through a weight that records one.
//! - **Which weights.** Every `q/k/v/o_proj` and `gate/up/down_proj` of a dense layer at or after
//!   the first fold layer that is kept: the layers before it see the dense model's stream, so
//!   they need no correction and their outputs are computed once per window.
//! - **Schedule.** The low-rank factors take their own Adam with a linear warm-up over
//!   [`WARMUP_FRACTION`] of the steps and a cosine decay to a tenth of the peak at the last step
//!   ([`lr_at`]).
//!
//! Sources, in our words: low-rank updates of frozen weights are LoRA (Hu et al., 2021, "LoRA:
//! Low-Rank Adaptation of Large Language Models"); using them to recover a depth-pruned model
//! follows LLM-Pruner (Ma et al., 2023) and Shortened LLaMA (Kim et al., 2024), which retrain
//! with LoRA on language-model loss. Training them on the dense model's next-token distribution,
//! together with the closed-form maps, under held-out early stopping with the start as a
//! fallback, and merging the result so the checkpoint stays stock, are this project's choices.

use crate::error::{Error, Result};
use crate::model::{DecoderLayer, ModelConfig, WeightSource};
use candle_core::{DType, Device, Tensor, Var};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The linear weights of a layer that take an update, by their name after `model.layers.{i}.`.
pub const TARGETS: &[&str] = &[
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// The fraction of the steps over which the low-rank learning rate warms up linearly.
pub const WARMUP_FRACTION: f64 = 0.1;

/// The learning rate for a peak of `peak` when the fraction `done` (in `[0, 1]`) of training
/// is behind: a linear warm-up from `peak / 10` over the first [`WARMUP_FRACTION`], then a
/// cosine decay to `peak / 10` at the end. A fraction, not a step, so a time budget can drive it.
pub fn lr_at(peak: f64, done: f64) -> f64 {
    let floor = peak / 10.0;
    let done = done.clamp(0.0, 1.0);
    if done < WARMUP_FRACTION {
        return floor + (peak - floor) * done / WARMUP_FRACTION;
    }
    let t = (done - WARMUP_FRACTION) / (1.0 - WARMUP_FRACTION);
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// The factors of one weight's update: `A` `(r, in)` and `B` `(out, r)`.
pub(crate) type Factors = BTreeMap<String, (Tensor, Tensor)>;

/// The trainable low-rank updates of a healed model.
pub(crate) struct Adapters {
    cfg: ModelConfig,
    /// The healed model's weights (maps folded), which the updates are added to.
    source: Arc<dyn WeightSource>,
    /// The layers adapted, in order.
    layers: Vec<usize>,
    /// Per adapted weight: its base value and its `(A, B)` variables.
    weights: BTreeMap<String, (Tensor, Var, Var)>,
}

impl Adapters {
    /// Rank-`rank` updates on every [`TARGETS`] weight of `layers` found in `source`; `seed`
    /// makes the initial `A`s.
    pub fn new(
        cfg: &ModelConfig,
        source: Arc<dyn WeightSource>,
        layers: &[usize],
        rank: usize,
        seed: u64,
    ) -> Result<Self> {
        if rank == 0 {
            return Err(Error::Invalid(
                "a low-rank update needs a rank of at least 1 (`rank`)".into(),
            ));
        }
        if layers.iter().any(|&l| cfg.arch.layer_is_sparse(l)) || cfg.family.family.fused() {
            return Err(Error::Unsupported(format!(
                "low-rank healing covers dense models with separate projections, not this `{}` model; hint: use `rank` 0",
                cfg.arch.model_type
            )));
        }
        let mut weights = BTreeMap::new();
        let mut s = seed;
        for &l in layers {
            for t in TARGETS {
                let name = format!("model.layers.{l}.{t}.weight");
                if !source.contains(&name) {
                    continue;
                }
                let w = source.tensor(&name)?.to_dtype(DType::F32)?;
                let (out, d_in) = w.dims2()?;
                // Kaiming-uniform-like A, so B·A starts at zero but B's gradient does not.
                let bound = 1.0 / (d_in as f32).sqrt();
                let a: Vec<f32> = (0..rank * d_in)
                    .map(|_| {
                        s = s
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound
                    })
                    .collect();
                let a = Var::from_tensor(&Tensor::from_vec(a, (rank, d_in), &Device::Cpu)?)?;
                let b = Var::from_tensor(&Tensor::zeros((out, rank), DType::F32, &Device::Cpu)?)?;
                weights.insert(name, (w, a, b));
            }
        }
        if weights.is_empty() {
            return Err(Error::Invalid(
                "low-rank healing found no linear weight to adapt in the kept layers".into(),
            ));
        }
        Ok(Adapters {
            cfg: cfg.clone(),
            source,
            layers: layers.to_vec(),
            weights,
        })
    }

    /// Every trainable variable.
    pub fn vars(&self) -> Vec<Var> {
        self.weights
            .values()
            .flat_map(|(_, a, b)| [a.clone(), b.clone()])
            .collect()
    }

    /// The `(A, B)` variables of the weight `name`.
    #[cfg(test)]
    pub fn factors_of(&self, name: &str) -> Option<(&Var, &Var)> {
        self.weights.get(name).map(|(_, a, b)| (a, b))
    }

    /// The number of trainable values.
    pub fn parameters(&self) -> usize {
        self.weights
            .values()
            .map(|(_, a, b)| a.elem_count() + b.elem_count())
            .sum()
    }

    /// The current factors, as tensors that do not record a graph (copies).
    pub fn snapshot(&self) -> Result<Factors> {
        self.weights
            .iter()
            .map(|(n, (_, a, b))| {
                Ok((
                    n.clone(),
                    (
                        a.as_tensor().detach().copy()?,
                        b.as_tensor().detach().copy()?,
                    ),
                ))
            })
            .collect()
    }

    /// Sets the live factors to `factors` (a saved state, issue 33); a weight it lacks is an error.
    pub fn restore(&self, factors: &Factors) -> Result<()> {
        for (n, (_, a, b)) in &self.weights {
            let Some((fa, fb)) = factors.get(n) else {
                return Err(Error::Invalid(format!(
                    "the saved distillation has no low-rank factors for `{n}`"
                )));
            };
            a.set(fa)?;
            b.set(fb)?;
        }
        Ok(())
    }

    /// The adapted layers with `W + B·A` from the live variables (recording the graph that
    /// training differentiates) or, given `factors`, from those.
    pub fn layers(&self, factors: Option<&Factors>) -> Result<BTreeMap<usize, Arc<DecoderLayer>>> {
        let mut patched = HashMap::new();
        for (name, (w, a, b)) in &self.weights {
            let (a, b) = match factors {
                Some(f) => f
                    .get(name)
                    .map(|(a, b)| (a.clone(), b.clone()))
                    .ok_or_else(|| Error::Compute(format!("no factors for `{name}`")))?,
                None => (a.as_tensor().clone(), b.as_tensor().clone()),
            };
            patched.insert(name.clone(), (w + b.matmul(&a)?)?);
        }
        let src = super::overlay::Overlay::with_tensors(self.source.clone(), patched);
        self.layers
            .iter()
            .map(|&l| Ok((l, Arc::new(DecoderLayer::load(&src, &self.cfg, l)?))))
            .collect()
    }

    /// The merged weights `W + B·A` for `factors`, row-major f32 by name.
    pub fn merged(&self, factors: &Factors) -> Result<BTreeMap<String, Vec<f32>>> {
        let mut out = BTreeMap::new();
        for (name, (w, _, _)) in &self.weights {
            let (a, b) = factors
                .get(name)
                .ok_or_else(|| Error::Compute(format!("no factors for `{name}`")))?;
            let merged = (w + b.matmul(a)?)?;
            out.insert(name.clone(), merged.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::lr_at;

    #[test]
    fn schedule_warms_up_then_decays_to_a_tenth() {
        assert!((lr_at(1.0, 0.0) - 0.1).abs() < 1e-12);
        assert!((lr_at(1.0, 0.05) - 0.55).abs() < 1e-12);
        assert!((lr_at(1.0, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_at(1.0, 0.55) - 0.55).abs() < 1e-9);
        assert!((lr_at(1.0, 1.0) - 0.1).abs() < 1e-12);
        assert!((lr_at(1.0, 7.0) - 0.1).abs() < 1e-12);
        for i in 10..100 {
            let (a, b) = (i as f64 / 100.0, (i + 1) as f64 / 100.0);
            assert!(lr_at(1.0, b) <= lr_at(1.0, a));
        }
    }
}
