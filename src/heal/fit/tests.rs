use super::*;

/// A small deterministic generator (xorshift), values in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// `a (n×k) · b (k×m)` in f64, row-major, returned as f32.
fn mul(a: &[f32], b: &[f32], n: usize, k: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * m];
    for i in 0..n {
        for j in 0..m {
            let s: f64 = (0..k)
                .map(|p| f64::from(a[i * k + p]) * f64::from(b[p * m + j]))
                .sum();
            out[i * m + j] = s as f32;
        }
    }
    out
}

fn transpose(a: &[f32], n: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * m];
    for i in 0..n {
        for j in 0..m {
            out[j * n + i] = a[i * m + j];
        }
    }
    out
}

#[test]
fn exact_linear_block_is_recovered_and_the_fold_reproduces_its_output() {
    let (n, h, inter) = (300, 6, 10);
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let acts = rng.vec(n * inter); // intermediate activations, n × inter
    let w = rng.vec(h * inter); // down_proj.weight, hidden × inter (HF layout)
    let m = mul(&acts, &transpose(&w, h, inter), n, inter, h); // m = a·Wᵀ
    let x = rng.vec(n * h);
    let t_star = rng.vec(h * h);
    let mt = mul(&m, &t_star, n, h, h);
    // The dense block's output: the fold layer's output with its MLP output replaced by M·T*.
    let y: Vec<f32> = (0..n * h).map(|i| x[i] - m[i] + mt[i]).collect();
    let z: Vec<f32> = (0..n * h).map(|i| y[i] - x[i] + m[i]).collect();

    let mut g = Gram::new(h);
    for c in 0..3 {
        let r = c * 100 * h..(c + 1) * 100 * h;
        g.add(&m[r.clone()], &z[r]).unwrap();
    }
    assert_eq!(g.rows(), n);
    let fit = g.solve(0.0, Prior::Identity).unwrap();
    for i in 0..h {
        for j in 0..h {
            let d = (fit.t[i * h + j] - f64::from(t_star[i * h + j])).abs();
            assert!(d < 1e-4, "T[{i}][{j}] off by {d}");
        }
    }
    assert!(fit.relative_residual < 1e-5, "{}", fit.relative_residual);
    assert!(fit.relative_residual_identity > 0.1);

    let w2 = fold_down_proj(&fit.t, &w, h).unwrap();
    let m2 = mul(&acts, &transpose(&w2, h, inter), n, inter, h);
    for i in 0..n * h {
        let healed = x[i] - m[i] + m2[i];
        assert!(
            (healed - y[i]).abs() < 1e-4,
            "row value {i}: {healed} vs {}",
            y[i]
        );
    }
}

#[test]
fn streamed_gram_solve_matches_a_direct_least_squares_solve() {
    let (n, h) = (120, 5);
    let mut rng = Rng(42);
    let m = rng.vec(n * h);
    let z = rng.vec(n * h);
    let alpha = 0.05;
    for prior in [Prior::Identity, Prior::Zero] {
        let mut g = Gram::new(h);
        for c in 0..4 {
            let r = c * 30 * h..(c + 1) * 30 * h;
            g.add(&m[r.clone()], &z[r]).unwrap();
        }
        let fit = g.solve(alpha, prior).unwrap();
        assert_eq!(fit.solver, Solver::Cholesky);

        // Direct: the ridge as extra rows, [M; √r·I]·T = [Z; √r·P], normal equations formed
        // with plain loops on the full matrix and solved by the eigen route.
        let trace: f64 = (0..n * h).map(|i| f64::from(m[i]) * f64::from(m[i])).sum();
        let r = alpha * trace / h as f64;
        let sr = r.sqrt();
        let p = if prior == Prior::Identity { sr } else { 0.0 };
        let rows = n + h;
        // Row `i`, column `j` of `[x; diag·I]`.
        let stacked = |x: &[f32], diag: f64, i: usize, j: usize| {
            if i < n {
                f64::from(x[i * h + j])
            } else if i - n == j {
                diag
            } else {
                0.0
            }
        };
        let a_at = |i: usize, j: usize| stacked(&m, sr, i, j);
        let b_at = |i: usize, j: usize| stacked(&z, p, i, j);
        let mut ata = vec![0.0; h * h];
        let mut atb = vec![0.0; h * h];
        for i in 0..h {
            for j in 0..h {
                ata[i * h + j] = (0..rows).map(|k| a_at(k, i) * a_at(k, j)).sum();
                atb[i * h + j] = (0..rows).map(|k| a_at(k, i) * b_at(k, j)).sum();
            }
        }
        let t = eigen_solve(&ata, &atb, h).unwrap();
        for i in 0..h {
            for j in 0..h {
                let d = (fit.t[i * h + j] - t[i * h + j]).abs();
                assert!(d < 1e-8, "{prior:?}: T[{i}][{j}] off by {d}");
            }
        }
        assert!((fit.ridge - r).abs() < 1e-9 * r.max(1.0));
    }
}

#[test]
fn rank_deficient_rows_fall_back_to_the_eigen_solve() {
    let (n, h) = (50, 4);
    let mut rng = Rng(7);
    // Column 3 repeats column 0, so MᵀM is singular.
    let mut m = rng.vec(n * h);
    for i in 0..n {
        m[i * h + 3] = m[i * h];
    }
    let t_star = rng.vec(h * h);
    let z = mul(&m, &t_star, n, h, h);
    let mut g = Gram::new(h);
    g.add(&m, &z).unwrap();
    let fit = g.solve(0.0, Prior::Zero).unwrap();
    assert_eq!(fit.solver, Solver::Eigen);
    assert!(fit.relative_residual < 1e-6, "{}", fit.relative_residual);
}

#[test]
fn mismatched_rows_and_bad_alpha_are_refused() {
    let mut g = Gram::new(3);
    assert!(matches!(
        g.add(&[1.0; 6], &[1.0; 3]),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        g.add(&[1.0; 4], &[1.0; 4]),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        g.solve(0.1, Prior::Identity),
        Err(Error::Invalid(_))
    ));
    g.add(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).unwrap();
    assert!(matches!(
        g.solve(-1.0, Prior::Identity),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        g.solve(f64::NAN, Prior::Identity),
        Err(Error::Invalid(_))
    ));
    let t = identity(2);
    assert!(matches!(
        fold_down_proj(&t, &[0.0; 6], 3),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn jacobi_eigen_solve_matches_cholesky_on_a_well_conditioned_system() {
    let h = 7;
    let mut rng = Rng(99);
    let r = rng.vec(h * h);
    // a = RᵀR + I is symmetric positive definite.
    let mut a = vec![0.0; h * h];
    for i in 0..h {
        for j in 0..h {
            a[i * h + j] = (0..h)
                .map(|k| f64::from(r[k * h + i]) * f64::from(r[k * h + j]))
                .sum::<f64>()
                + if i == j { 1.0 } else { 0.0 };
        }
    }
    let b: Vec<f64> = rng.vec(h * h).into_iter().map(f64::from).collect();
    let x1 = cholesky_solve(&a, &b, h).unwrap();
    let x2 = eigen_solve(&a, &b, h).unwrap();
    for (u, v) in x1.iter().zip(&x2) {
        assert!((u - v).abs() < 1e-9, "{u} vs {v}");
    }
}

#[test]
fn token_weighted_fit_recovers_an_exact_map_despite_outlier_tokens() {
    let (n, h) = (200, 5);
    let mut rng = Rng(0x2545f4914f6cdd1d);
    let mut m = rng.vec(n * h);
    // A few "attention sink" rows, a thousand times larger than the rest.
    for r in [0, 50, 150] {
        for v in &mut m[r * h..(r + 1) * h] {
            *v *= 1000.0;
        }
    }
    let t_star = rng.vec(h * h);
    let z = mul(&m, &t_star, n, h, h);
    let (wm, wz) = weigh_rows(&m, &z, h);
    let mut g = Gram::new(h);
    g.add(&wm, &wz).unwrap();
    let fit = g.solve(0.0, Prior::Identity).unwrap();
    for (i, (a, b)) in fit.t.iter().zip(&t_star).enumerate() {
        assert!((a - f64::from(*b)).abs() < 1e-3, "T[{i}]: {a} vs {b}");
    }
    assert!(fit.relative_residual < 1e-4, "{}", fit.relative_residual);
}

#[test]
fn token_weights_are_the_inverse_target_norm() {
    // Row 0's target has norm 4, so both rows scale by 4^(-1/2) = 0.5: weight 1/4 on the square.
    let (m, z) = weigh_rows(&[2.0, 2.0, 1.0, 1.0], &[0.0, 4.0, 0.0, 0.0], 2);
    assert_eq!(m, vec![1.0, 1.0, 0.0, 0.0]);
    assert_eq!(z, vec![0.0, 2.0, 0.0, 0.0]);
}

#[test]
fn scalar_map_recovers_a_pure_rescaling() {
    let (n, h) = (50, 4);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let m = rng.vec(n * h);
    let z: Vec<f32> = m.iter().map(|v| 0.7 * v).collect();
    let mut g = Gram::new(h);
    g.add(&m, &z).unwrap();
    let fit = g.solve_scale().unwrap();
    for i in 0..h {
        for j in 0..h {
            let want = if i == j { 0.7 } else { 0.0 };
            assert!(
                (fit.t[i * h + j] - want).abs() < 1e-6,
                "T[{i}][{j}] = {}",
                fit.t[i * h + j]
            );
        }
    }
    assert!(fit.relative_residual < 1e-6);
}
