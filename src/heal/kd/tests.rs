//! The distillation gradient against finite differences, and the KL's own gradient.

use super::*;
use crate::model::open_checkpoint;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/llama")
}

/// A deterministic pseudo-random matrix with entries in `[-scale, scale)`.
fn noise(seed: u64, rows: usize, cols: usize, scale: f32) -> Tensor {
    let mut s = seed;
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
}

#[test]
fn kl_gradient_is_q_minus_p_over_rows() {
    let teacher = [1.0f32, 2.0, 0.5, -1.0, 0.0, 3.0];
    let student = [0.5f32, 2.5, 0.0, 0.0, 0.0, 2.0];
    let (kl, g) = kl_and_grad(&teacher, &student, 3).unwrap();
    let eps = 1e-3f32;
    for j in 0..6 {
        let (mut up, mut down) = (student, student);
        up[j] += eps;
        down[j] -= eps;
        let fd = (kl_and_grad(&teacher, &up, 3).unwrap().0
            - kl_and_grad(&teacher, &down, 3).unwrap().0)
            / (2.0 * eps as f64);
        assert!(
            (fd - g[j] as f64).abs() < 1e-4,
            "logit {j}: {fd} vs {}",
            g[j]
        );
    }
    assert!(kl > 0.0);
    let (same, g0) = kl_and_grad(&teacher, &teacher, 3).unwrap();
    assert!(same.abs() < 1e-12 && g0.iter().all(|g| g.abs() < 1e-7));
}

#[test]
fn map_gradients_match_finite_differences() {
    let (cfg, source) = open_checkpoint(&fixture()).unwrap();
    let dense = Model::from_source(cfg.clone(), source.clone(), &|_| true).unwrap();
    let h = cfg.arch.hidden_size;
    // Remove layer 2; maps at layer 1 (its block's fold layer) and at layer 3 (per-layer).
    let removed = [2usize];
    let student = Student::new(
        healed_model(cfg, source, &BTreeMap::new(), &removed).unwrap(),
        &removed,
        &[1, 3],
    )
    .unwrap();
    let tokens: Vec<u32> = (0..24).map(|i| (i * 37 + 11) % 300).collect();
    let ctx = dense.attn_ctx(0, tokens.len()).unwrap();
    let mut entering = None;
    let dense_final = dense
        .forward_hidden(&dense.tokens(&[&tokens]).unwrap(), &[], None, &mut |tap| {
            if tap.layer == 1 {
                entering = Some(tap.input.clone());
            }
            Ok(())
        })
        .unwrap();
    let xs = entering.unwrap();
    let teacher: Vec<f32> = dense
        .logits(&dense_final)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let eye = Tensor::eye(h, candle_core::DType::F32, &Device::Cpu).unwrap();
    let start: BTreeMap<usize, Tensor> = [1usize, 3]
        .iter()
        .map(|&l| (l, (&eye + noise(l as u64, h, h, 0.05)).unwrap()))
        .collect();
    let vars: BTreeMap<usize, Var> = start
        .iter()
        .map(|(&l, t)| (l, Var::from_tensor(t).unwrap()))
        .collect();
    let (kl, grads) = student.loss_and_grads(&xs, &ctx, &teacher, &vars).unwrap();
    let kl0 = student.loss(&xs, &ctx, &teacher, &start).unwrap();
    assert!((kl - kl0).abs() < 1e-6 * kl0.max(1.0), "{kl} vs {kl0}");
    assert!(
        kl > 1e-4,
        "removing a layer must move the distribution: KL {kl}"
    );
    for (&l, var) in &vars {
        let g = grads
            .get(var.as_tensor())
            .expect("a gradient for every map");
        // The directional derivative along a random direction, and along the gradient itself.
        for (k, dir) in [noise(100 + l as u64, h, h, 1.0), g.clone()]
            .iter()
            .enumerate()
        {
            let eps = 1e-2
                / dir
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    .sqrt() as f64;
            let moved = |sign: f64| {
                let mut maps = start.clone();
                let u = (&start[&l] + (dir * (sign * eps)).unwrap()).unwrap();
                maps.insert(l, u);
                student.loss(&xs, &ctx, &teacher, &maps).unwrap()
            };
            let fd = (moved(1.0) - moved(-1.0)) / (2.0 * eps);
            let analytic = (g * dir)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            let tol = 2e-2 * analytic.abs().max(1e-3);
            assert!(
                (fd - analytic).abs() < tol,
                "map at layer {l}, direction {k}: finite difference {fd} vs autograd {analytic}"
            );
        }
    }
}
