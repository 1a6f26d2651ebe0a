//! The cosine objective ([`super::Objective::Cosine`]): the map is refined, from its
//! least-squares solution, to minimise the mean cosine distance `1 − cos(mₜ·T, zₜ)` over the fit
//! tokens, the second variant of ReplaceMe (Shopkhoev et al., 2025). Direction matters more than
//! magnitude to the RMSNorm that every later layer applies, and the cosine ignores each token's
//! scale, so a few massive tokens do not dominate it.
//!
//! Adam on minibatches of cached rows (the fold layer's MLP outputs and the targets of the fit
//! windows, held for the one site being fitted), with candle's autograd; the result is folded
//! like any other map.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};

/// Adam steps of the refinement.
pub const STEPS: usize = 200;
/// Adam's learning rate.
pub const LR: f64 = 1e-4;
/// Rows per step.
pub const BATCH: usize = 2048;

/// The mean cosine distance between the rows of `m·t` and `z` (`rows × h` tensors).
fn distance(m: &Tensor, t: &Tensor, z: &Tensor) -> Result<Tensor> {
    let p = m.matmul(t)?;
    let dot = (&p * z)?.sum(D::Minus1)?;
    let norms = ((p.sqr()?.sum(D::Minus1)? * z.sqr()?.sum(D::Minus1)?)? + 1e-12)?.sqrt()?;
    Ok((1.0 - (dot / norms)?.mean_all()?)?)
}

/// The mean cosine distance of `t` (row-major `h × h`) on the rows `m`, `z` (row-major
/// `rows × h`).
pub fn mean_distance(m: &[f32], z: &[f32], h: usize, t: &[f64]) -> Result<f64> {
    let rows = check(m, z, h, t)?;
    let m = Tensor::from_slice(m, (rows, h), &Device::Cpu)?;
    let z = Tensor::from_slice(z, (rows, h), &Device::Cpu)?;
    let t = Tensor::from_slice(t, (h, h), &Device::Cpu)?.to_dtype(DType::F32)?;
    Ok(distance(&m, &t, &z)?.to_scalar::<f32>()? as f64)
}

fn check(m: &[f32], z: &[f32], h: usize, t: &[f64]) -> Result<usize> {
    if h == 0 || m.len() != z.len() || !m.len().is_multiple_of(h) || t.len() != h * h {
        return Err(Error::Invalid(format!(
            "cosine refinement: {} and {} row values and a map of {} values for hidden size {h}",
            m.len(),
            z.len(),
            t.len()
        )));
    }
    if m.is_empty() {
        return Err(Error::Invalid(
            "no calibration rows to refine the healing map on".into(),
        ));
    }
    Ok(m.len() / h)
}

/// Refines `t0` (row-major `h × h`) by `steps` Adam steps at rate `lr` on the rows `m`, `z`,
/// `BATCH` rows a step in order, wrapping around.
pub fn refine(
    m: &[f32],
    z: &[f32],
    h: usize,
    t0: &[f64],
    steps: usize,
    lr: f64,
) -> Result<Vec<f64>> {
    let rows = check(m, z, h, t0)?;
    let t = Var::from_tensor(&Tensor::from_slice(t0, (h, h), &Device::Cpu)?.to_dtype(DType::F32)?)?;
    let mut adam = AdamW::new(
        vec![t.clone()],
        ParamsAdamW {
            lr,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?;
    let batch = BATCH.min(rows);
    let mut at = 0;
    for _ in 0..steps {
        let n = batch.min(rows - at);
        let mb = Tensor::from_slice(&m[at * h..(at + n) * h], (n, h), &Device::Cpu)?;
        let zb = Tensor::from_slice(&z[at * h..(at + n) * h], (n, h), &Device::Cpu)?;
        let loss = distance(&mb, t.as_tensor(), &zb)?;
        adam.step(&loss.backward()?)?;
        at = if at + n >= rows { 0 } else { at + n };
    }
    let out: Vec<f32> = t.as_tensor().flatten_all()?.to_vec1()?;
    Ok(out.into_iter().map(f64::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// `z = m·T*` exactly: the least-squares start is already the optimum, so refining keeps it
    /// (distance 0); from a perturbed start, refining recovers `T*`'s directions.
    #[test]
    fn an_exact_map_is_recovered() {
        let (h, n) = (6, 400);
        let m = rows(1, n * h);
        let star: Vec<f64> = rows(2, h * h).iter().map(|&v| v as f64).collect();
        let mut z = vec![0f32; n * h];
        for r in 0..n {
            for j in 0..h {
                z[r * h + j] = (0..h)
                    .map(|k| m[r * h + k] as f64 * star[k * h + j])
                    .sum::<f64>() as f32;
            }
        }
        assert!(mean_distance(&m, &z, h, &star).unwrap() < 1e-6);
        let kept = refine(&m, &z, h, &star, 20, LR).unwrap();
        assert!(mean_distance(&m, &z, h, &kept).unwrap() < 1e-4);
        let off: Vec<f64> = star
            .iter()
            .zip(rows(3, h * h))
            .map(|(s, e)| s + 0.3 * e as f64)
            .collect();
        let before = mean_distance(&m, &z, h, &off).unwrap();
        let fixed = refine(&m, &z, h, &off, 500, 1e-2).unwrap();
        let after = mean_distance(&m, &z, h, &fixed).unwrap();
        assert!(before > 1e-2, "{before}");
        assert!(after < 0.05 * before, "{before} → {after}");
    }

    #[test]
    fn mismatched_rows_are_refused() {
        let e = refine(&[0.0; 6], &[0.0; 4], 2, &[1.0, 0.0, 0.0, 1.0], 1, LR)
            .unwrap_err()
            .to_string();
        assert!(e.contains("hidden size 2"), "{e}");
    }
}
