//! The distillation gradient against finite differences, and the KL's own gradient.

use super::*;
use crate::model::open_checkpoint;
use candle_core::Device;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub(super) fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/llama")
}

/// A deterministic pseudo-random matrix with entries in `[-scale, scale)`.
pub(super) fn noise(seed: u64, rows: usize, cols: usize, scale: f32) -> Tensor {
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

pub(super) fn family(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden/families")
        .join(arch)
}

/// The squared norm of `t`.
fn norm2(t: &Tensor) -> f64 {
    t.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64
}

/// Which part of a site's map a direction moves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    U,
    Gain,
}

/// The map gradients of the model at `dir` with layer 2 removed and maps at layers 1 (its
/// block's fold layer) and 3 (per-layer), against central finite differences, along a random
/// direction and along the gradient itself, for `U` and (post-norm families) the gain.
fn check_map_gradients(model_dir: &std::path::Path, spread: f32) {
    let (cfg, source) = open_checkpoint(model_dir).unwrap();
    let dense = Model::from_source(cfg.clone(), source.clone(), &|_| true).unwrap();
    let h = cfg.arch.hidden_size;
    let removed = [2usize];
    let student = Student::new(
        healed_model(cfg, source, &BTreeMap::new(), &removed).unwrap(),
        &removed,
        &[1, 3],
    )
    .unwrap();
    let post = student.post_norm().is_some();
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
    // The identity maps leave the healed model as it is.
    let identity: Maps<Tensor> = student
        .identity_maps(&[1, 3])
        .unwrap()
        .iter()
        .map(|(&l, m)| (l, m.snapshot().unwrap()))
        .collect();
    let plain = student
        .loss(&xs, &ctx, &teacher, &BTreeMap::new(), &Layers::new())
        .unwrap();
    let at_identity = student
        .loss(&xs, &ctx, &teacher, &identity, &Layers::new())
        .unwrap();
    assert!(
        (plain - at_identity).abs() < 1e-6 * plain.max(1.0),
        "{model_dir:?}: identity maps move the KL: {plain} vs {at_identity}"
    );
    let eye = Tensor::eye(h, candle_core::DType::F32, &Device::Cpu).unwrap();
    let ones = Tensor::ones(h, candle_core::DType::F32, &Device::Cpu).unwrap();
    let start: Maps<Tensor> = [1usize, 3]
        .iter()
        .map(|&l| {
            let u = (&eye + noise(l as u64, h, h, spread)).unwrap();
            let gain = post
                .then(|| (&ones + noise(50 + l as u64, 1, h, 0.2).reshape(h).unwrap()).unwrap());
            (l, SiteMap { u, gain })
        })
        .collect();
    let vars: Maps<Var> = start
        .iter()
        .map(|(&l, m)| {
            (
                l,
                SiteMap {
                    u: Var::from_tensor(&m.u).unwrap(),
                    gain: m.gain.as_ref().map(|g| Var::from_tensor(g).unwrap()),
                },
            )
        })
        .collect();
    let (kl, grads) = student
        .loss_and_grads(&xs, &ctx, &teacher, &vars, &Layers::new())
        .unwrap();
    let kl0 = student
        .loss(&xs, &ctx, &teacher, &start, &Layers::new())
        .unwrap();
    assert!((kl - kl0).abs() < 1e-6 * kl0.max(1.0), "{kl} vs {kl0}");
    eprintln!("{model_dir:?}: KL {kl}");
    assert!(
        kl > 1e-4,
        "removing a layer must move the distribution: KL {kl}"
    );
    let mut checked = 0;
    for (&l, m) in &vars {
        let parts = std::iter::once((Part::U, &m.u)).chain(m.gain.iter().map(|g| (Part::Gain, g)));
        for (part, var) in parts {
            let g = grads
                .get(var.as_tensor())
                .expect("a gradient for every map");
            let random = noise(100 + l as u64, h, h, 1.0);
            let random = match part {
                Part::U => random,
                Part::Gain => random.narrow(0, 0, 1).unwrap().reshape(h).unwrap(),
            };
            for (k, dir) in [random, g.clone()].iter().enumerate() {
                let eps = 1e-2 / norm2(dir).sqrt();
                let moved = |sign: f64| {
                    let mut maps = start.clone();
                    let site = maps.get_mut(&l).unwrap();
                    let t = match part {
                        Part::U => &mut site.u,
                        Part::Gain => site.gain.as_mut().unwrap(),
                    };
                    *t = (&*t + (dir * (sign * eps)).unwrap()).unwrap();
                    student
                        .loss(&xs, &ctx, &teacher, &maps, &Layers::new())
                        .unwrap()
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
                    "{model_dir:?}: {part:?} at layer {l}, direction {k}: finite difference {fd} vs autograd {analytic}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, if post { 8 } else { 4 }, "{model_dir:?}");
}

#[test]
fn map_gradients_match_finite_differences() {
    check_map_gradients(&fixture(), 0.05);
}

/// Gemma 2 (soft-capped head), Gemma 3 and OLMo 2: `U` before the post-MLP norm and the norm's
/// gain. Granite: the residual multiplier on the mapped branch and the head's divisor.
#[test]
fn map_gradients_match_finite_differences_in_every_family_with_a_twist() {
    // Granite's divided logits move little unless the maps do.
    for (arch, spread) in [
        ("gemma2", 0.5),
        ("gemma3", 0.5),
        ("olmo2", 0.5),
        ("granite", 3.0),
    ] {
        check_map_gradients(&family(arch), spread);
    }
}

#[test]
fn low_rank_gradients_match_finite_differences() {
    use crate::heal::lowrank::Adapters;
    let (cfg, source) = open_checkpoint(&fixture()).unwrap();
    let dense = Model::from_source(cfg.clone(), source.clone(), &|_| true).unwrap();
    let removed = [2usize];
    let student = Student::new(
        healed_model(cfg.clone(), source, &BTreeMap::new(), &removed).unwrap(),
        &removed,
        &[1],
    )
    .unwrap();
    assert_eq!(student.tail(), vec![1, 3]);
    let adapters = Adapters::new(&cfg, student.model.source().clone(), &[1, 3], 3, 7).unwrap();
    // Move B off zero so that A's gradient is not zero too.
    for (k, v) in adapters.vars().iter().enumerate() {
        if v.dims()[1] == 3 {
            let (r, c) = v.dims2().unwrap();
            v.set(&noise(200 + k as u64, r, c, 0.05)).unwrap();
        }
    }
    let tokens: Vec<u32> = (0..24).map(|i| (i * 53 + 7) % 300).collect();
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
    let h = cfg.arch.hidden_size;
    let eye = Tensor::eye(h, candle_core::DType::F32, &Device::Cpu).unwrap();
    let maps: Maps<Var> = [(
        1usize,
        SiteMap {
            u: Var::from_tensor(&eye).unwrap(),
            gain: None,
        },
    )]
    .into();
    let plain: Maps<Tensor> = [(
        1usize,
        SiteMap {
            u: eye.clone(),
            gain: None,
        },
    )]
    .into();
    let layers = adapters.layers(None).unwrap();
    let (kl, grads) = student
        .loss_and_grads(&xs, &ctx, &teacher, &maps, &layers)
        .unwrap();
    drop(layers);
    let base = adapters.snapshot().unwrap();
    let kl0 = student
        .loss(
            &xs,
            &ctx,
            &teacher,
            &plain,
            &adapters.layers(Some(&base)).unwrap(),
        )
        .unwrap();
    assert!((kl - kl0).abs() < 1e-6 * kl0.max(1.0), "{kl} vs {kl0}");
    let mut checked = 0;
    for (name, (a, b)) in &base {
        // Check every weight of layer 3 and the attention of layer 1 (the rest is the same code).
        if !(name.contains("layers.3.") || name.contains("self_attn")) {
            continue;
        }
        for (which, t) in [("A", a), ("B", b)] {
            let (va, vb) = adapters.factors_of(name).unwrap();
            let var = if which == "A" { va } else { vb };
            let g = grads
                .get(var.as_tensor())
                .expect("a gradient for every factor");
            let (r, c) = t.dims2().unwrap();
            let dir = noise(300 + checked as u64, r, c, 1.0);
            let norm = dir
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let eps = 1e-2 / (norm as f64).sqrt();
            let moved = |sign: f64| {
                let mut f = base.clone();
                let t2 = (t + (&dir * (sign * eps)).unwrap()).unwrap();
                let e = f.get_mut(name).unwrap();
                if which == "A" {
                    e.0 = t2;
                } else {
                    e.1 = t2;
                }
                let layers = adapters.layers(Some(&f)).unwrap();
                student.loss(&xs, &ctx, &teacher, &plain, &layers).unwrap()
            };
            let fd = (moved(1.0) - moved(-1.0)) / (2.0 * eps);
            let analytic = (g * &dir)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            let tol = 3e-2 * analytic.abs().max(1e-3);
            assert!(
                (fd - analytic).abs() < tol,
                "{which} of `{name}`: finite difference {fd} vs autograd {analytic}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * (7 + 4));
}
