//! A linear map `xs @ weight.T + bias` over the weights a layer holds: f32, 16-bit (multiplied by
//! [`super::half_gemm`]) or ggml blocks (candle's quantized kernels), with a recorded-graph path
//! for training; and the stacking of maps that share an input into one product (q, k and v).

use super::config::Compute;
use super::half_gemm::HalfMatmul;
use super::layer::{check_shape, load, load_in};
use super::ops::{F32Matmul, FrozenLinear};
use super::weights::WeightSource;
use crate::error::{Error, Result};
use candle_core::quantized::QTensor;
use candle_core::{DType, Tensor};
use std::sync::Arc;

/// A linear map `xs @ weight.T + bias`, with `weight` stored `(out, in)` as in the checkpoint.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

/// A linear map's weight: floats (f32, or bf16/f16 under [`Compute::Bf16`]), or under
/// [`Compute::Quant`] ggml blocks, in parts stacked along the output (gate and up may be stored
/// in different block types).
#[derive(Debug, Clone)]
pub(crate) enum Weight {
    Dense(Tensor),
    Quant(Vec<Arc<QTensor>>),
}

/// A [`Linear`]'s weight as stored: floats, or quantized parts stacked along the output.
pub(crate) enum WeightRef<'a> {
    Dense(&'a Tensor),
    Quant(&'a [Arc<QTensor>]),
}

impl Linear {
    /// Loads `{prefix}.weight` (and `{prefix}.bias`), the weight kept in the precision `compute`
    /// says (biases stay f32).
    pub(crate) fn new_in(
        src: &dyn WeightSource,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        compute: Compute,
    ) -> Result<Self> {
        let weight = load_weight(src, &format!("{prefix}.weight"), &[d_out, d_in], compute)?;
        let bias = if bias {
            Some(load(src, &format!("{prefix}.bias"), &[d_out])?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// Wraps an existing `(out, in)` weight, such as tied embeddings.
    pub fn from_weight(weight: Tensor) -> Self {
        Linear {
            weight: Weight::Dense(weight),
            bias: None,
        }
    }

    /// Wraps quantized `(out, in)` parts stacked along the output.
    pub(crate) fn from_quant(parts: Vec<Arc<QTensor>>) -> Self {
        Linear {
            weight: Weight::Quant(parts),
            bias: None,
        }
    }

    /// The `(out, in)` weight: f32, or bf16/f16 under [`Compute::Bf16`]; a quantized weight is
    /// dequantized to f32 for the caller.
    pub fn weight(&self) -> Result<Tensor> {
        match &self.weight {
            Weight::Dense(w) => Ok(w.clone()),
            Weight::Quant(parts) => {
                let dense = (parts.iter())
                    .map(|q| q.dequantize(&candle_core::Device::Cpu))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Ok(Tensor::cat(&dense, 0)?)
            }
        }
    }

    /// Maps of the same input stacked along the output, so they run as one product (q, k and
    /// v); `None` when they cannot be (different precisions, quantized beside dense, or only some
    /// with a bias).
    pub(crate) fn stack(parts: &[Linear]) -> Result<Option<Linear>> {
        let biases: Vec<&Tensor> = parts.iter().filter_map(|l| l.bias.as_ref()).collect();
        if !biases.is_empty() && biases.len() != parts.len() {
            return Ok(None);
        }
        let bias = if biases.is_empty() {
            None
        } else {
            Some(Tensor::cat(&biases, 0)?)
        };
        let dense: Vec<&Tensor> = (parts.iter())
            .filter_map(|l| match &l.weight {
                Weight::Dense(w) => Some(w),
                Weight::Quant(_) => None,
            })
            .collect();
        let weight = if dense.len() == parts.len() {
            if dense.iter().any(|w| w.dtype() != dense[0].dtype()) {
                return Ok(None);
            }
            Weight::Dense(Tensor::cat(&dense, 0)?)
        } else if dense.is_empty() {
            let quant = (parts.iter())
                .flat_map(|l| match &l.weight {
                    Weight::Quant(q) => q.clone(),
                    Weight::Dense(_) => Vec::new(),
                })
                .collect();
            Weight::Quant(quant)
        } else {
            return Ok(None);
        };
        Ok(Some(Linear { weight, bias }))
    }

    /// The weight as stored, for callers that read it in pieces (the scoring head).
    pub(crate) fn weight_ref(&self) -> WeightRef<'_> {
        match &self.weight {
            Weight::Dense(w) => WeightRef::Dense(w),
            Weight::Quant(parts) => WeightRef::Quant(parts),
        }
    }

    /// The bias, if any.
    pub(crate) fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Outputs of the map.
    fn d_out(&self) -> Result<usize> {
        Ok(match &self.weight {
            Weight::Dense(w) => w.dim(0)?,
            Weight::Quant(parts) => parts.iter().map(|q| q.shape().dims()[0]).sum(),
        })
    }

    /// Applies the map to `(..., in)`, giving `(..., out)`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dims = xs.dims();
        let d_in = *dims
            .last()
            .ok_or_else(|| Error::Compute("linear input has no dimensions".into()))?;
        let rows = xs.elem_count() / d_in.max(1);
        let flat = xs.contiguous()?.reshape((rows, d_in))?;
        let mut ys = match &self.weight {
            // Low-rank healing: a weight built from trained factors takes its gradient.
            Weight::Dense(w) if w.track_op() => flat.matmul(&w.t()?)?,
            Weight::Quant(_) if flat.track_op() => {
                return Err(Error::Invalid(
                    "training through the layers needs f32 weights (`compute` f32)".into(),
                ))
            }
            Weight::Quant(parts) => {
                let outs = (parts.iter())
                    .map(|q| super::quantized::matmul(&flat, q))
                    .collect::<Result<Vec<_>>>()?;
                if outs.len() == 1 {
                    outs.into_iter().next().unwrap_or(flat)
                } else {
                    Tensor::cat(&outs, 1)?
                }
            }
            Weight::Dense(w) if flat.track_op() => {
                // Training (a recorded graph) needs only the input's gradient, never the weight's.
                if w.dtype() != DType::F32 {
                    return Err(Error::Invalid(
                        "training through the layers needs f32 weights (`compute` f32)".into(),
                    ));
                }
                flat.apply_op1(FrozenLinear(w.clone()))?
            }
            Weight::Dense(w) if w.dtype() == DType::F32 && w.is_contiguous() => {
                flat.apply_op2_no_bwd(w, &F32Matmul)?
            }
            Weight::Dense(w) if w.dtype() == DType::F32 => flat.matmul(&w.t()?)?,
            Weight::Dense(w) => flat.apply_op2_no_bwd(w, &HalfMatmul)?,
        };
        if let Some(b) = &self.bias {
            ys = ys.broadcast_add(b)?;
        }
        let mut out_dims = dims.to_vec();
        let last = out_dims.len() - 1;
        out_dims[last] = self.d_out()?;
        Ok(ys.reshape(out_dims)?)
    }
}

/// A matrix weight in the precision `compute` keeps it in: ggml blocks under [`Compute::Quant`]
/// where the source stores them so, else as [`load_in`] reads it.
pub(crate) fn load_weight(
    src: &dyn WeightSource,
    name: &str,
    shape: &[usize],
    compute: Compute,
) -> Result<Weight> {
    if compute == Compute::Quant {
        check_shape(src, name, shape)?;
        if let Some(q) = src.quantized(name)? {
            return Ok(Weight::Quant(vec![q]));
        }
    }
    Ok(Weight::Dense(load_in(src, name, shape, compute)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;
    use candle_core::Device;

    fn dense(out: usize, seed: usize, bias: bool) -> Linear {
        let w: Vec<f32> = (0..out * 32)
            .map(|i| (((i + seed) * 37 % 23) as f32 - 11.0) / 9.0)
            .collect();
        let w = Tensor::from_vec(w, (out, 32), &Device::Cpu).unwrap();
        let bias = bias.then(|| Tensor::arange(0f32, out as f32, &Device::Cpu).unwrap());
        Linear {
            weight: Weight::Dense(w),
            bias,
        }
    }

    #[test]
    fn stacked_maps_give_their_outputs_side_by_side() {
        let xs: Vec<f32> = (0..5 * 32)
            .map(|i| ((i * 11 % 17) as f32 - 8.0) / 7.0)
            .collect();
        let xs = Tensor::from_vec(xs, (5, 32), &Device::Cpu).unwrap();
        let parts = [dense(8, 1, true), dense(3, 2, true), dense(3, 3, true)];
        let fused = Linear::stack(&parts).unwrap().unwrap();
        let outs: Vec<Tensor> = parts.iter().map(|p| p.forward(&xs).unwrap()).collect();
        let want = Tensor::cat(&outs, 1).unwrap();
        let got = fused.forward(&xs).unwrap();
        assert_eq!(got.dims(), &[5, 14]);
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        // Only some with a bias, or quantized beside dense: kept apart.
        assert!(Linear::stack(&[dense(8, 1, true), dense(3, 2, false)])
            .unwrap()
            .is_none());
        let w = Tensor::ones((4, 32), DType::F32, &Device::Cpu).unwrap();
        let q = Linear::from_quant(vec![Arc::new(
            QTensor::quantize(&w, GgmlDType::Q8_0).unwrap(),
        )]);
        assert!(Linear::stack(&[dense(8, 1, false), q.clone()])
            .unwrap()
            .is_none());
        let both = Linear::stack(&[q.clone(), q]).unwrap().unwrap();
        assert_eq!(both.forward(&xs).unwrap().dims(), &[5, 8]);
    }
}
