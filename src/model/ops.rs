//! Fused CPU kernels for elementwise steps: SwiGLU's `silu(gate) * up` and GeGLU's
//! `gelu_tanh(gate) * up` over the fused gate/up projection (one pass instead of three candle ops and their temporaries), and the window rule
//! the attention kernel ([`super::attention`]) masks by.
//!
//! Training (map-only distillation, `heal::kd`) runs the same layer code with a recorded graph,
//! so SwiGLU has a backward pass here, and so do the two ops only training uses: a masked softmax
//! over a materialised score matrix and a linear map whose frozen weight gets no gradient.
//! Inference never records a graph (no input is a variable), so none of it costs inference
//! anything.

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor, D};
use rayon::prelude::*;

/// The first key position visible to query position `i` (keys `first..=i` are visible): all of
/// them without a window, the last `window` with one (transformers: `i - j < window`).
pub(crate) fn first_visible(i: usize, window: Option<usize>) -> usize {
    window.map_or(0, |w| (i + 1).saturating_sub(w))
}

/// `softmax(scale * scores)` over the keys each query may see; the rest become 0.
/// Works on contiguous `(..., rows, keys)` scores whose rows cycle through `seq_len` queries at
/// positions `offset..offset + seq_len` (query heads sharing a kv head are stacked as rows).
pub(crate) struct MaskedSoftmax {
    pub offset: usize,
    pub seq_len: usize,
    pub window: Option<usize>,
    pub scale: f32,
}

impl MaskedSoftmax {
    /// Checks the layout and returns the contiguous span and the number of keys.
    fn span(&self, layout: &Layout) -> candle_core::Result<(usize, usize, usize)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("masked softmax needs contiguous scores")
        };
        let keys = layout.dims().last().copied().unwrap_or(0);
        if keys == 0 || self.seq_len == 0 || self.offset + self.seq_len > keys {
            candle_core::bail!(
                "masked softmax: {keys} keys for queries at {}..{}",
                self.offset,
                self.offset + self.seq_len
            )
        }
        Ok((start, end, keys))
    }

    /// The softmax of every row of `data` (rows of `keys` scores), in place.
    fn rows(&self, data: &mut [f32], keys: usize) {
        data.par_chunks_mut(keys).enumerate().for_each(|(r, row)| {
            let i = self.offset + r % self.seq_len;
            let lo = first_visible(i, self.window);
            let visible = &mut row[lo..=i];
            let max = visible.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut sum = 0f32;
            for v in visible.iter_mut() {
                *v = ((*v - max) * self.scale).exp();
                sum += *v;
            }
            let inv = 1.0 / sum;
            visible.iter_mut().for_each(|v| *v *= inv);
            row[..lo].fill(0.0);
            row[i + 1..].fill(0.0);
        });
    }
}

/// The backward pass: with `p` the probabilities and `g` the
/// gradient reaching them, the scores get `scale · p ⊙ (g − Σⱼ gⱼpⱼ)`; masked keys (p = 0) get 0.
impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("masked softmax reads f32 scores")
        };
        let (start, end, keys) = self.span(layout)?;
        let mut out = data[start..end].to_vec();
        self.rows(&mut out, keys);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let dot = (grad * res)?.sum_keepdim(D::Minus1)?;
        let g = (res * grad.broadcast_sub(&dot)?)?;
        Ok(Some((g * self.scale as f64)?))
    }
}

/// The f32 elements `op` reads from a contiguous input.
fn contiguous_f32<'a>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op} reads f32")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} needs a contiguous input")
    };
    Ok(&data[start..end])
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
        gated("silu-mul", storage, layout, super::fastmath::silu_mul)
    }

    /// With `x = [a | b]` and `g` the gradient of `silu(a)·b`: `a` gets `g·b·σ(a)(1 + a(1 − σ(a)))`
    /// and `b` gets `g·silu(a)`.
    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let half = arg.dim(D::Minus1)? / 2;
        let a = arg.narrow(D::Minus1, 0, half)?;
        let b = arg.narrow(D::Minus1, half, half)?;
        let sig = (a.neg()?.exp()? + 1.0)?.recip()?;
        let silu = (&a * &sig)?;
        let dsilu = (&sig + (&silu * (1.0 - &sig)?)?)?;
        let ga = (grad * &b)?.mul(&dsilu)?;
        let gb = (grad * &silu)?;
        Ok(Some(Tensor::cat(&[&ga, &gb], D::Minus1)?))
    }
}

/// `gelu_tanh(a) * b` where each row of the input is `[a | b]`, GeGLU's gate (Gemma), giving rows
/// half as wide; inference only (training composes candle's `gelu`, which has a backward pass).
pub(crate) struct GeluMul;

impl CustomOp1 for GeluMul {
    fn name(&self) -> &'static str {
        "gelu-mul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        gated("gelu-mul", storage, layout, super::fastmath::gelu_tanh_mul)
    }
}

/// `f(a, b)` over the halves `[a | b]` of each row of a contiguous f32 input.
fn gated(
    op: &str,
    storage: &CpuStorage,
    layout: &Layout,
    f: fn(&[f32], &[f32], &mut [f32]),
) -> candle_core::Result<(CpuStorage, Shape)> {
    let src = contiguous_f32(op, storage, layout)?;
    let mut dims = layout.dims().to_vec();
    let width = dims.last().copied().unwrap_or(0);
    if width == 0 || width % 2 != 0 {
        candle_core::bail!("{op} needs an even last dimension, got {width}")
    }
    let half = width / 2;
    let mut out = vec![0f32; src.len() / 2];
    out.par_chunks_mut(half)
        .zip(src.par_chunks(width))
        .for_each(|(o, row)| {
            let (a, b) = row.split_at(half);
            f(a, b, o);
        });
    if let Some(last) = dims.last_mut() {
        *last = half;
    }
    Ok((CpuStorage::F32(out), Shape::from(dims)))
}

/// `x·Wᵀ` for rows `x (rows, in)` and an f32 weight `W (out, in)`, both contiguous, on the
/// current pool's threads: candle's product zero-fills its output before `gemm` overwrites it,
/// a pass over every activation that this skips. Inference only.
pub(crate) struct F32Matmul;

impl candle_core::CustomOp2 for F32Matmul {
    fn name(&self) -> &'static str {
        "f32-matmul"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32("f32-matmul", xs, xl)?;
        let w = contiguous_f32("f32-matmul", ws, wl)?;
        let (m, k) = xl.shape().dims2()?;
        let (n, wk) = wl.shape().dims2()?;
        if wk != k || x.len() != m * k || w.len() != n * k {
            candle_core::bail!("f32-matmul: ({m}, {k}) @ ({n}, {wk})ᵀ")
        }
        let mut out: Vec<f32> = Vec::with_capacity(m * n);
        // SAFETY: `out` has room for `m × n` elements, written row-major (row stride `n`);
        // `x` is `m × k` (row stride `k`) and `w` is `n × k`, read as the `k × n` matrix `wᵀ`
        // (column stride `k`, row stride 1). gemm writes every element and only writes, so the
        // length can be set after.
        unsafe {
            super::half_gemm::gemm_f32_with(
                super::half_gemm::pool_parallelism(),
                (m, n, k),
                (out.as_mut_ptr(), n),
                (x.as_ptr(), k),
                (w.as_ptr(), k, 1),
            );
            out.set_len(m * n);
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// `x·Wᵀ` for rows `x (rows, in)` and a frozen weight `W (out, in)`. Its backward gives only the
/// input's gradient, `g·W`: a plain matmul would also compute the weight's gradient, a product
/// as large as the forward, which training the fold maps never uses.
pub(crate) struct FrozenLinear(pub Tensor);

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = contiguous_f32("frozen-linear", storage, layout)?;
        let (rows, d_in) = layout.shape().dims2()?;
        let x = Tensor::from_slice(src, (rows, d_in), &Device::Cpu)?;
        let y = x.matmul(&self.0.t()?)?;
        let d_out = y.dim(1)?;
        Ok((
            CpuStorage::F32(y.flatten_all()?.to_vec1()?),
            Shape::from((rows, d_out)),
        ))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.0)?))
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
    fn softmax_is_causal_windowed_and_scaled() {
        // Two stacked heads × 3 queries after 1 cached key: 4 keys, window 2.
        let scores = Tensor::arange(0f32, 24.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 6, 4))
            .unwrap();
        let probs = scores
            .apply_op1(MaskedSoftmax {
                offset: 1,
                seq_len: 3,
                window: Some(2),
                scale: 0.5,
            })
            .unwrap();
        let rows = probs.reshape((6, 4)).unwrap().to_vec2::<f32>().unwrap();
        let p = 1.0 / (1.0 + (-0.5f32).exp());
        for (r, row) in rows.iter().enumerate() {
            let i = 1 + r % 3;
            for (j, &v) in row.iter().enumerate() {
                let want = if j == i {
                    p
                } else if j + 1 == i {
                    1.0 - p
                } else {
                    0.0
                };
                assert!((v - want).abs() < 1e-6, "row {r} key {j}: {v} vs {want}");
            }
        }
    }

    #[test]
    fn gelu_mul_pairs_halves_as_candle_does() {
        let xs = Tensor::new(
            &[[1f32, -2.0, 3.0, 0.5], [0.1, 4.0, -1.0, 2.0]],
            &Device::Cpu,
        )
        .unwrap();
        let got = xs.apply_op1_no_bwd(&GeluMul).unwrap();
        let gate = xs.narrow(1, 0, 2).unwrap();
        let up = xs.narrow(1, 2, 2).unwrap();
        let want = (gate.gelu().unwrap() * up).unwrap();
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
    }

    #[test]
    fn f32_matmul_is_candles_product() {
        let x = Tensor::arange(0f32, 3.0 * 70.0, &Device::Cpu)
            .unwrap()
            .reshape((3, 70))
            .unwrap();
        let w = (Tensor::arange(0f32, 5.0 * 70.0, &Device::Cpu).unwrap() * 0.01)
            .unwrap()
            .reshape((5, 70))
            .unwrap();
        let got = x.apply_op2_no_bwd(&w, &F32Matmul).unwrap();
        let want = x.matmul(&w.t().unwrap()).unwrap();
        assert_eq!(got.dims(), &[3, 5]);
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-3);
        assert!(x.apply_op2_no_bwd(&x, &F32Matmul).is_ok());
        assert!(x.apply_op2_no_bwd(&w.t().unwrap(), &F32Matmul).is_err());
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
