//! Vectorised `exp`, softmax rows, log-sum-exp and the gated activations (SwiGLU, GeGLU), the elementwise work that remains once the
//! matrix products are fast: the attention softmax and the 49k-entry rows of the LM head, whose
//! scalar libm `expf` calls were a tenth of an eval's time (issue 14).
//!
//! The loops work on 16-lane arrays so that the compiler turns them into AVX-512 (or AVX2)
//! instructions; each public function picks the widest path the CPU has at run time. `exp` is Cephes'
//! degree-6 polynomial after range reduction, within 2 ulp of libm for inputs in [-87, 88];
//! smaller inputs give `exp(-87)` ≈ 1.6e-38 instead of a subnormal, which no sum here can see.

const LANES: usize = 16;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two so that `n * LN2_HI` is exact for the `n` that occur (|n| < 128).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 × 2^23: adding it rounds to an integer and leaves that integer in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;
const LO: f32 = -87.0;
const HI: f32 = 88.0;

/// `exp(x)` for one lane; written without branches or casts so whole arrays vectorise.
#[inline(always)]
fn exp1(x: f32) -> f32 {
    let x = if x < LO { LO } else { x };
    let x = if x > HI { HI } else { x };
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let k = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    // Cephes' minimax polynomial for exp(r) - 1 - r on [-ln2/2, ln2/2].
    let p = 1.987_569_2e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let p = p * r * r + r + 1.0;
    p * f32::from_bits(((k + 127) << 23) as u32)
}

/// Largest value and the first index holding it.
#[inline(always)]
fn max_first(xs: &[f32]) -> (f32, usize) {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let mut max = lanes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for &v in chunks.remainder() {
        max = max.max(v);
    }
    // NaN rows have no position equal to their max; report index 0 as the scalar code did.
    let at = xs.iter().position(|&v| v == max).unwrap_or(0);
    (max, at)
}

/// `xs[i] = exp((xs[i] - max) * scale)` and the sum of the results (in f64, per 1024 terms).
#[inline(always)]
fn exp_shift_sum(xs: &mut [f32], max: f32, scale: f32) -> f64 {
    let mut total = 0f64;
    for block in xs.chunks_mut(1024) {
        let mut lanes = [0f32; LANES];
        let mut chunks = block.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for (s, v) in lanes.iter_mut().zip(c.iter_mut()) {
                *v = exp1((*v - max) * scale);
                *s += *v;
            }
        }
        let mut sum: f32 = lanes.iter().sum();
        for v in chunks.into_remainder() {
            *v = exp1((*v - max) * scale);
            sum += *v;
        }
        total += sum as f64;
    }
    total
}

/// The sum of `exp(xs[i] - max)` without writing anything.
#[inline(always)]
fn sum_exp_shift(xs: &[f32], max: f32) -> f64 {
    let mut total = 0f64;
    for block in xs.chunks(1024) {
        let mut lanes = [0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for c in &mut chunks {
            for (s, &v) in lanes.iter_mut().zip(c) {
                *s += exp1(v - max);
            }
        }
        let mut sum: f32 = lanes.iter().sum();
        for &v in chunks.remainder() {
            sum += exp1(v - max);
        }
        total += sum as f64;
    }
    total
}

#[inline(always)]
fn lse_generic(row: &[f32]) -> (f64, usize) {
    let (max, at) = max_first(row);
    (sum_exp_shift(row, max).ln() + max as f64, at)
}

#[inline(always)]
fn softmax_generic(row: &mut [f32], scale: f32) -> f32 {
    let (max, _) = max_first(row);
    exp_shift_sum(row, max, scale) as f32
}

/// `out[i] = silu(a[i]) * b[i]`, SwiGLU's gate.
#[inline(always)]
fn silu_mul_generic(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = a / (1.0 + exp1(-a)) * b;
    }
}

/// `out[i] = gelu_tanh(a[i]) * b[i]`, GeGLU's gate with the tanh approximation, written as
/// `x · σ(2y)` since `½(1 + tanh y) = σ(2y)`, with `y = √(2/π)·x·(1 + 0.044715·x²)`.
#[inline(always)]
fn gelu_tanh_mul_generic(a: &[f32], b: &[f32], out: &mut [f32]) {
    const TWO_SQRT_2_OVER_PI: f32 = 2.0 * 0.797_884_6;
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        let y2 = TWO_SQRT_2_OVER_PI * a * (1.0 + 0.044715 * a * a);
        *o = a / (1.0 + exp1(-y2)) * b;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn silu_mul(a: &[f32], b: &[f32], out: &mut [f32]) {
        super::silu_mul_generic(a, b, out)
    }

    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn gelu_tanh_mul(a: &[f32], b: &[f32], out: &mut [f32]) {
        super::gelu_tanh_mul_generic(a, b, out)
    }

    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn lse(row: &[f32]) -> (f64, usize) {
        super::lse_generic(row)
    }

    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn softmax(row: &mut [f32], scale: f32) -> f32 {
        super::softmax_generic(row, scale)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn lse_avx2(row: &[f32]) -> (f64, usize) {
        super::lse_generic(row)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax_avx2(row: &mut [f32], scale: f32) -> f32 {
        super::softmax_generic(row, scale)
    }

    pub(super) fn has_avx512() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
    }

    pub(super) fn has_avx2() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
}

/// The log of the softmax denominator of `row` (`ln Σ exp(row)`, in f64) and the row's argmax
/// (the first, on ties).
pub fn log_sum_exp(row: &[f32]) -> (f64, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if x86::has_avx512() {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { x86::lse(row) };
        }
        if x86::has_avx2() {
            // SAFETY: as above.
            return unsafe { x86::lse_avx2(row) };
        }
    }
    lse_generic(row)
}

/// `out[i] = silu(a[i]) * b[i]` over the shortest of the three.
pub fn silu_mul(a: &[f32], b: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::has_avx512() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { x86::silu_mul(a, b, out) };
    }
    silu_mul_generic(a, b, out)
}

/// `out[i] = gelu_tanh(a[i]) * b[i]` (transformers' `gelu_pytorch_tanh`) over the shortest of
/// the three.
pub fn gelu_tanh_mul(a: &[f32], b: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::has_avx512() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { x86::gelu_tanh_mul(a, b, out) };
    }
    gelu_tanh_mul_generic(a, b, out)
}

/// Replaces `row` with `exp((row - max) * scale)` and returns the sum: an unnormalised softmax of
/// `scale * row` (for `scale > 0`), for the caller to divide by the sum where it is cheapest.
pub fn softmax_unnormalised(row: &mut [f32], scale: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if x86::has_avx512() {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { x86::softmax(row, scale) };
        }
        if x86::has_avx2() {
            // SAFETY: as above.
            return unsafe { x86::softmax_avx2(row, scale) };
        }
    }
    softmax_generic(row, scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp1(x), x.exp());
            let ulp = (got.to_bits() as i64 - want.to_bits() as i64).abs();
            assert!(ulp <= 2, "exp({x}) = {got}, libm {want} ({ulp} ulp)");
            x += 0.0137;
        }
        assert!(exp1(-1000.0) < 1e-37 && exp1(-1000.0) > 0.0);
    }

    #[test]
    fn log_sum_exp_matches_f64_and_finds_the_first_max() {
        let row: Vec<f32> = (0..49_157)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.03 - 12.0)
            .collect();
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let want = row
            .iter()
            .map(|&v| (v as f64 - max as f64).exp())
            .sum::<f64>()
            .ln()
            + max as f64;
        let (got, at) = log_sum_exp(&row);
        assert!((got - want).abs() < 1e-6 * want.abs(), "{got} vs {want}");
        assert_eq!(at, row.iter().position(|&v| v == max).unwrap());
        assert_eq!(log_sum_exp(&[1.0, 3.0, 3.0]).1, 1);
    }

    #[test]
    fn gelu_tanh_follows_the_tanh_formula() {
        let a: Vec<f32> = (0..301).map(|i| (i as f32 - 150.0) * 0.07).collect();
        let b: Vec<f32> = (0..301).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let mut out = vec![0f32; a.len()];
        gelu_tanh_mul(&a, &b, &mut out);
        for ((&x, &y), &got) in a.iter().zip(&b).zip(&out) {
            let (x, y) = (x as f64, y as f64);
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let want = 0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh()) * y;
            assert!(
                (got as f64 - want).abs() < 1e-6 * (1.0 + want.abs()),
                "{x}: {got} vs {want}"
            );
        }
        let mut big = [0f32; 2];
        gelu_tanh_mul(&[-200.0, 200.0], &[1.0, 1.0], &mut big);
        assert!(big[0].abs() < 1e-30 && big[1] == 200.0, "{big:?}");
    }

    #[test]
    fn softmax_sums_what_it_writes() {
        let mut row: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let sum = softmax_unnormalised(&mut row, 0.25);
        assert!((row.iter().sum::<f32>() - sum).abs() < 1e-5);
        assert!((row[36] - 1.0).abs() < 1e-7);
        assert!((row[32] - (-0.5f32).exp()).abs() < 1e-7);
    }
}
