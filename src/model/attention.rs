//! Blocked causal attention on the CPU: scaled dot products, the causal (and sliding-window)
//! mask and the softmax for one block of queries at a time, so the `(seq × keys)` score matrix
//! is never materialised and the keys a block cannot see are never multiplied (issue 14).
//!
//! Work is split into (sequence, head, query block) tasks on the rayon pool; each task runs two
//! single-threaded `gemm` products over the keys its block can see and writes its rows of the
//! output directly in the `(batch, seq, heads × head_dim)` layout the output projection reads.

use super::fastmath::softmax_unnormalised;
use super::half_gemm::gemm_f32;
use super::ops::first_visible;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use rayon::prelude::*;
use std::cell::RefCell;

/// Queries per task: big enough for `gemm` to reach its speed, small enough that the masked
/// corner of the diagonal block (half of `BLOCK²`) stays a small share of the work.
const BLOCK: usize = 64;

/// `softmax(scale · q kᵀ + mask) v` for `q (batch, heads, seq, head_dim)` and
/// `k`, `v (batch, kv_heads, keys, head_dim)` (contiguous f32), giving
/// `(batch, seq, heads × head_dim)`. The queries sit at positions `offset..offset + seq`, and
/// `keys == offset + seq`. With `pad`, sequence `b`'s first `pad[b]` positions are left padding:
/// no query sees them, and a padding position's own output is zero.
pub(crate) struct CausalAttention {
    pub offset: usize,
    pub window: Option<usize>,
    /// Left padding per sequence (empty: none).
    pub pad: Vec<usize>,
    pub scale: f32,
    /// Gemma 2: scaled scores become `tanh(s / c) · c` before the softmax.
    pub softcap: Option<f32>,
}

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A raw output pointer shared by tasks that write disjoint rows.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a disjoint set of elements (its own queries × its own head).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("attention reads f32 {what}")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("attention needs contiguous {what}")
    };
    Ok(&data[a..b])
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (q, k, v) = (
            f32_slice(qs, ql, "queries")?,
            f32_slice(ks, kl, "keys")?,
            f32_slice(vs, vl, "values")?,
        );
        let (b, heads, t, d) = ql.shape().dims4()?;
        let (kb, kv_heads, s, kd) = kl.shape().dims4()?;
        if kb != b || kd != d || vl.shape() != kl.shape() || kv_heads == 0 {
            candle_core::bail!(
                "attention shapes: queries {:?}, keys {:?}, values {:?}",
                ql.dims(),
                kl.dims(),
                vl.dims()
            )
        }
        if !self.pad.is_empty() && self.pad.len() != b {
            candle_core::bail!(
                "attention: padding for {} sequences, {b} in the batch",
                self.pad.len()
            )
        }
        if !heads.is_multiple_of(kv_heads) || s != self.offset + t {
            candle_core::bail!(
                "attention: {heads} query heads over {kv_heads} kv heads, {s} keys for queries at {}..{}",
                self.offset,
                self.offset + t
            )
        }
        let rep = heads / kv_heads;
        let width = heads * d;
        let mut out = vec![0f32; b * t * width];
        let ptr = OutPtr(out.as_mut_ptr());
        let blocks = t.div_ceil(BLOCK);
        (0..b * heads * blocks).into_par_iter().for_each(|task| {
            let (seq, rest) = (task / (heads * blocks), task % (heads * blocks));
            let (head, block) = (rest / blocks, rest % blocks);
            let i0 = block * BLOCK;
            let rows = BLOCK.min(t - i0);
            let kv = (seq * kv_heads + head / rep) * s * d;
            let q = &q[((seq * heads + head) * t + i0) * d..][..rows * d];
            // Keys the block can see: from the first visible to its first query's position, up
            // to its last query's, never the sequence's left padding.
            let pad = self.pad.get(seq).copied().unwrap_or(0);
            let hi = self.offset + i0 + rows;
            let lo = first_visible(self.offset + i0, self.window)
                .max(pad)
                .min(hi);
            if lo == hi {
                // Every query of the block is padding: its rows of `out` stay zero.
                return;
            }
            let keys = &k[kv + lo * d..kv + hi * d];
            let values = &v[kv + lo * d..kv + hi * d];
            let n = hi - lo;
            SCORES.with_borrow_mut(|scores| {
                scores.clear();
                scores.resize(rows * n, 0.0);
                // SAFETY: the slices hold exactly the rows × columns the strides describe.
                unsafe {
                    gemm_f32(
                        (rows, n, d),
                        (scores.as_mut_ptr(), n),
                        (q.as_ptr(), d),
                        (keys.as_ptr(), d, 1),
                    );
                }
                let mut inv = [0f32; BLOCK];
                for (r, row) in scores.chunks_exact_mut(n).enumerate() {
                    let pos = self.offset + i0 + r;
                    if pos < pad {
                        // A padding position: nothing to see, its output stays zero.
                        row.fill(0.0);
                        inv[r] = 0.0;
                        continue;
                    }
                    let first = first_visible(pos, self.window).max(pad) - lo;
                    let last = pos - lo;
                    let visible = &mut row[first..=last];
                    let sum = match self.softcap {
                        None => softmax_unnormalised(visible, self.scale),
                        Some(c) => {
                            let k = self.scale / c;
                            visible.iter_mut().for_each(|x| *x = (*x * k).tanh() * c);
                            softmax_unnormalised(visible, 1.0)
                        }
                    };
                    row[..first].fill(0.0);
                    row[last + 1..].fill(0.0);
                    inv[r] = 1.0 / sum;
                }
                let dst = ptr;
                // SAFETY: rows `i0..i0 + rows` of sequence `seq`, columns of head `head`: this
                // task's own elements of `out`, which outlives the parallel loop.
                unsafe {
                    let dst = dst.0.add((seq * t + i0) * width + head * d);
                    gemm_f32(
                        (rows, d, n),
                        (dst, width),
                        (scores.as_ptr(), n),
                        (values.as_ptr(), 1, d),
                    );
                    for (r, &f) in inv[..rows].iter().enumerate() {
                        let row = std::slice::from_raw_parts_mut(dst.add(r * width), d);
                        row.iter_mut().for_each(|x| *x *= f);
                    }
                }
            });
        });
        Ok((CpuStorage::F32(out), Shape::from((b, t, width))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The textbook computation: full scores, -inf above the diagonal and outside the window.
    fn naive(q: &Tensor, k: &Tensor, v: &Tensor, offset: usize, window: Option<usize>) -> Tensor {
        let (b, h, t, d) = q.dims4().unwrap();
        let (_, kvh, s, _) = k.dims4().unwrap();
        let rep = h / kvh;
        // Head `g * rep + r` reads kv head `g`.
        let k = k
            .repeat((1, 1, rep, 1))
            .unwrap()
            .reshape((b, h, s, d))
            .unwrap();
        // Head `g * rep + r` reads kv head `g`.
        let v = v
            .repeat((1, 1, rep, 1))
            .unwrap()
            .reshape((b, h, s, d))
            .unwrap();
        let att = (q.matmul(&k.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| {
                (0..s).map(move |j| {
                    let p = offset + i;
                    if j <= p && j >= first_visible(p, window) {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, s), &Device::Cpu).unwrap();
        let att = att.broadcast_add(&mask).unwrap();
        let att = candle_nn::ops::softmax_last_dim(&att).unwrap();
        att.matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, h * d))
            .unwrap()
    }

    #[test]
    fn matches_the_textbook_with_cache_offsets_and_windows() {
        let dev = Device::Cpu;
        for (t, offset, window) in [
            (150, 0, None),
            (70, 5, Some(20)),
            (1, 9, None),
            (3, 0, Some(1)),
        ] {
            let s = offset + t;
            let q = Tensor::randn(0f32, 1.0, (2, 6, t, 8), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (2, 2, s, 8), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (2, 2, s, 8), &dev).unwrap();
            let op = CausalAttention {
                offset,
                window,
                pad: Vec::new(),
                scale: 1.0 / (8f32).sqrt(),
                softcap: None,
            };
            let got = q.apply_op3_no_bwd(&k, &v, &op).unwrap();
            let want = naive(&q, &k, &v, offset, window);
            let err = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(err < 1e-5, "t {t} offset {offset} window {window:?}: {err}");
        }
    }

    /// A left-padded sequence gives, at its real positions, what it gives alone; its padding
    /// positions give zeros; the unpadded sequence beside it is unchanged.
    #[test]
    fn left_padding_is_invisible() {
        let dev = Device::Cpu;
        for (t, offset, pad, window) in [(9, 0, 4, None), (1, 12, 5, None), (70, 0, 66, Some(3))] {
            let s = offset + t;
            let q = Tensor::randn(0f32, 1.0, (2, 4, t, 8), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (2, 2, s, 8), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (2, 2, s, 8), &dev).unwrap();
            let op = |offset, pad| CausalAttention {
                offset,
                window,
                pad,
                scale: 0.3,
                softcap: None,
            };
            let got = q
                .apply_op3_no_bwd(&k, &v, &op(offset, vec![0, pad]))
                .unwrap();
            let plain = q.apply_op3_no_bwd(&k, &v, &op(offset, Vec::new())).unwrap();
            let diff = |a: &Tensor, b: &Tensor| {
                (a - b)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            assert_eq!(diff(&got.get(0).unwrap(), &plain.get(0).unwrap()), 0.0);
            // The padded sequence alone: its keys from `pad` on, its queries shifted.
            let real = s - pad;
            let new = real.min(t);
            // Sequence 1 of `x`, positions `from..from + len`, as a batch of one.
            let one = |x: &Tensor, from, len| {
                (x.get(1)
                    .unwrap()
                    .narrow(1, from, len)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap())
                .contiguous()
                .unwrap()
            };
            let (alone, ka, va) = (
                one(&q, t - new, new),
                one(&k, pad, real),
                one(&v, pad, real),
            );
            let want = alone
                .apply_op3_no_bwd(&ka, &va, &op(real - new, Vec::new()))
                .unwrap();
            let row = got.get(1).unwrap();
            let tail = row.narrow(0, t - new, new).unwrap();
            assert!(diff(&tail, &want.get(0).unwrap()) < 1e-5, "t {t} pad {pad}");
            if t > new {
                let head = row.narrow(0, 0, t - new).unwrap();
                assert_eq!(
                    head.abs()
                        .unwrap()
                        .max_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap(),
                    0.0
                );
            }
        }
    }
}
