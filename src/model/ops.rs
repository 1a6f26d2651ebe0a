//! Fused CPU kernels for elementwise steps: SwiGLU's `silu(gate) * up` over the fused gate/up
//! projection (one pass instead of three candle ops and their temporaries), and the window rule
//! the attention kernel ([`super::attention`]) masks by.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

/// The first key position visible to query position `i` (keys `first..=i` are visible): all of
/// them without a window, the last `window` with one (transformers: `i - j < window`).
pub(crate) fn first_visible(i: usize, window: Option<usize>) -> usize {
    window.map_or(0, |w| (i + 1).saturating_sub(w))
}

/// `silu(a) * b` where each row of the input is `[a | b]` (the fused gate and up projections),
/// giving rows half as wide.
pub(crate) struct SiluMul;

impl CustomOp1 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("silu-mul reads f32")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("silu-mul needs a contiguous input")
        };
        let mut dims = layout.dims().to_vec();
        let width = dims.last().copied().unwrap_or(0);
        if width == 0 || width % 2 != 0 {
            candle_core::bail!("silu-mul needs an even last dimension, got {width}")
        }
        let half = width / 2;
        let src = &data[start..end];
        let mut out = vec![0f32; src.len() / 2];
        out.par_chunks_mut(half)
            .zip(src.par_chunks(width))
            .for_each(|(o, row)| {
                let (a, b) = row.split_at(half);
                super::fastmath::silu_mul(a, b, o);
            });
        if let Some(last) = dims.last_mut() {
            *last = half;
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn windows_start_where_transformers_does() {
        assert_eq!(first_visible(5, None), 0);
        assert_eq!(first_visible(5, Some(2)), 4);
        assert_eq!(first_visible(0, Some(8)), 0);
    }

    #[test]
    fn silu_mul_pairs_halves() {
        let xs = Tensor::new(&[[1f32, -2.0, 3.0, 0.5]], &Device::Cpu).unwrap();
        let ys = xs
            .apply_op1_no_bwd(&SiluMul)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let silu = |x: f32| x / (1.0 + (-x).exp());
        assert!((ys[0][0] - silu(1.0) * 3.0).abs() < 1e-6);
        assert!((ys[0][1] - silu(-2.0) * 0.5).abs() < 1e-6);
    }
}
