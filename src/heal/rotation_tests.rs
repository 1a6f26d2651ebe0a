use super::*;
use crate::heal::fit::identity;

fn rng(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed;
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

fn random_orthogonal(h: usize, seed: u64) -> Vec<f64> {
    let mut r = rng(seed);
    let x: Vec<f64> = (0..h * h).map(|_| r()).collect();
    polar(&x, h).unwrap()
}

/// `n` rows of an anisotropic design: column `j` scaled by `1 + j`, plus a shared direction.
fn design(n: usize, h: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n)
        .flat_map(|_| {
            let common = r();
            (0..h)
                .map(|j| ((r() + 0.3 * common) * (1 + j) as f64) as f32)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn times(n: &[f32], t: &[f64], h: usize) -> Vec<f32> {
    n.chunks(h)
        .flat_map(|row| {
            (0..h)
                .map(|j| {
                    (0..h)
                        .map(|i| f64::from(row[i]) * t[i * h + j])
                        .sum::<f64>() as f32
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn inverse_and_polar_are_what_they_claim() {
    let h = 7;
    let mut r = rng(3);
    let x: Vec<f64> = (0..h * h).map(|_| r()).collect();
    let inv = inverse(&x, h).unwrap();
    assert!(max_diff(&mm(&x, &inv, h), &identity(h)) < 1e-10);
    let q = polar(&x, h).unwrap();
    // Orthogonal, and Qᵀ·X is symmetric positive definite (X = Q·P).
    assert!(max_diff(&mm(&transpose(&q, h), &q, h), &identity(h)) < 1e-12);
    let p = mm(&transpose(&q, h), &x, h);
    assert!(max_diff(&p, &transpose(&p, h)) < 1e-12);
    assert!((0..h).all(|i| p[i * h + i] > 0.0));
    assert!(inverse(&vec![0.0; h * h], h).is_none());
}

/// Rows whose Gram matrix is a multiple of the identity (stacked random orthogonal blocks), the
/// case in which the Procrustes step is exact.
fn whitened(blocks: usize, h: usize) -> Vec<f32> {
    (0..blocks)
        .flat_map(|b| random_orthogonal(h, 100 + b as u64))
        .map(|v| (3.0 * v) as f32)
        .collect()
}

#[test]
fn recovers_a_rotation_and_scale_exactly() {
    let h = 6;
    let rows = whitened(5, h);
    let q0 = random_orthogonal(h, 5);
    let s0 = [1.5, -0.7, 2.0, 0.9, 3.0, 1.1];
    let truth = Rotation {
        q: q0,
        s: s0.to_vec(),
    }
    .map();
    let z = times(&rows, &truth, h);
    let mut g = Gram::new(h);
    g.add(&rows, &z).unwrap();
    let fit = fit(&g, &[1.0; 6], ITERS).unwrap();
    let q = &fit.q;
    assert!(max_diff(&mm(&transpose(q, h), q, h), &identity(h)) < 1e-10);
    let err = max_diff(&fit.map(), &truth);
    assert!(err < 1e-6, "map off by {err}");
    assert!(g.relative_residual(&fit.map()) < 1e-6);
}

#[test]
fn the_rotation_never_fits_worse_than_the_scale_alone() {
    let (n, h) = (300, 8);
    let rows = design(n, h, 2);
    let mut r = rng(9);
    let z: Vec<f32> = rows.iter().map(|&v| v * 0.5 + r() as f32).collect();
    let mut g = Gram::new(h);
    g.add(&rows, &z).unwrap();
    let gain = fit_gain(&g, &[1.0; 8]).unwrap();
    let rot = fit(&g, &[1.0; 8], ITERS).unwrap();
    let (rg, rr) = (
        g.relative_residual(&gain.map()),
        g.relative_residual(&rot.map()),
    );
    assert!(rr <= rg + 1e-12, "rotation {rr} vs scale {rg}");
    assert!(rg < g.relative_residual(&identity(h)));
}

#[test]
fn merged_grams_fit_as_the_rows_together() {
    let (n, h) = (120, 5);
    let rows = design(n, h, 4);
    let q0 = random_orthogonal(h, 8);
    let truth = Rotation {
        q: q0,
        s: vec![2.0, 0.5, -1.0, 3.0, 1.5],
    }
    .map();
    let mut r = rng(11);
    let z: Vec<f32> = times(&rows, &truth, h)
        .iter()
        .map(|&v| v + 0.05 * r() as f32)
        .collect();
    let cut = 70 * h;
    let (mut a, mut b, mut all) = (Gram::new(h), Gram::new(h), Gram::new(h));
    a.add(&rows[..cut], &z[..cut]).unwrap();
    b.add(&rows[cut..], &z[cut..]).unwrap();
    all.add(&rows, &z).unwrap();
    let m = a.merged(&b).unwrap();
    assert_eq!(m.rows(), n);
    let (fm, fa) = (
        fit(&m, &[1.0; 5], ITERS).unwrap(),
        fit(&all, &[1.0; 5], ITERS).unwrap(),
    );
    assert!(max_diff(&fm.map(), &fa.map()) < 1e-9);
    // More rows than either part: the merged fit is no worse on them than a part's fit.
    let fp = fit(&a, &[1.0; 5], ITERS).unwrap();
    assert!(all.relative_residual(&fm.map()) <= all.relative_residual(&fp.map()) + 1e-12);
    assert!(a.merged(&Gram::new(h + 1)).is_none());
}
