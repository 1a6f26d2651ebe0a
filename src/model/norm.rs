//! RMSNorm with a learned scale, in the two conventions checkpoints use: `x̂ · w` (llama, qwen,
//! Phi-3, OLMo 2) and `x̂ · (1 + w)` (Gemma's HF checkpoints, whose weights are stored centred on
//! zero). The second is applied by adding one to the weight once, at load: the same f32 product
//! transformers computes.

use super::layer::load;
use super::weights::WeightSource;
use crate::error::Result;
use candle_core::Tensor;

/// RMSNorm with a learned scale.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    /// Loads `name`; with `plus_one` the scale is `1 + w` (Gemma).
    pub(crate) fn new_in(
        src: &dyn WeightSource,
        name: &str,
        dim: usize,
        eps: f64,
        plus_one: bool,
    ) -> Result<Self> {
        let mut weight = load(src, name, &[dim])?;
        if plus_one {
            weight = (weight + 1.0)?;
        }
        Ok(RmsNorm {
            weight,
            eps: eps as f32,
        })
    }

    /// Normalises over the last dimension. An input that records a graph (training) takes
    /// candle's composed form, which has a backward pass; the fused kernel has none.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if xs.track_op() {
            return Ok(candle_nn::ops::rms_norm_slow(xs, &self.weight, self.eps)?);
        }
        Ok(candle_nn::ops::rms_norm(
            &xs.contiguous()?,
            &self.weight,
            self.eps,
        )?)
    }
}
