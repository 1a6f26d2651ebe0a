//! Slab scoring against full log-softmax rows computed naively in f64.

use super::*;
use candle_core::quantized::GgmlDType;
use candle_core::Device;

/// A reproducible value in [-scale, scale).
fn noise(i: usize, seed: u64, scale: f32) -> f32 {
    let mut x = (i as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    ((x % 20_000) as f32 / 10_000.0 - 1.0) * scale
}

/// Full logit rows in f64 with the side's bias, scaling and soft-capping.
fn naive_logits(side: &HeadSide<'_>, w: &[f32], vocab: usize) -> Vec<Vec<f64>> {
    let h = side.h;
    (0..side.xs.len() / h)
        .map(|r| {
            (0..vocab)
                .map(|v| {
                    let dot: f64 = (0..h)
                        .map(|k| side.xs[r * h + k] as f64 * w[v * h + k] as f64)
                        .sum();
                    let mut x = dot + side.bias.map_or(0.0, |b| b[v] as f64);
                    if let Some(d) = side.divisor {
                        x /= d as f64;
                    }
                    if let Some(c) = side.softcap {
                        x = (x / c as f64).tanh() * c as f64;
                    }
                    x
                })
                .collect()
        })
        .collect()
}

fn log_softmax(row: &[f64]) -> Vec<f64> {
    let max = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    let lse = row.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max;
    row.iter().map(|v| v - lse).collect()
}

fn argmax(row: &[f64]) -> usize {
    let max = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    row.iter().position(|&v| v == max).unwrap_or(0)
}

/// Checks slab scoring against full log-softmax rows: odd sizes, a vocabulary that is not a
/// multiple of the slab, rows that are not a multiple of the block, targets in the last slab.
fn check(side: HeadSide<'_>, w: &[f32], reference: Option<(HeadSide<'_>, &[f32])>) {
    let (vocab, h) = (w.len() / side.h, side.h);
    let n = side.xs.len() / h;
    let targets: Vec<u32> = (0..n)
        .map(|r| match r % 3 {
            0 => vocab as u32 - 1,
            1 => (r * 7 % vocab) as u32,
            _ => 0,
        })
        .collect();
    let mine = naive_logits(&side, w, vocab);
    let theirs = reference.map(|(s, rw)| naive_logits(&s, rw, vocab));
    for tiles in [(SLAB, ROW_BLOCK), (16, 5), (vocab, 1), (7, n + 3)] {
        let got = score_with(side, reference.map(|r| r.0), &targets, vocab, tiles).unwrap();
        assert_eq!(got.len(), n);
        for (r, g) in got.iter().enumerate() {
            let t = targets[r] as usize;
            let lm = log_softmax(&mine[r]);
            let close = |a: f64, b: f64| (a - b).abs() < 2e-5 * (1.0 + b.abs());
            assert!(
                close(g.nll, -lm[t]),
                "{tiles:?} row {r}: {} vs {}",
                g.nll,
                -lm[t]
            );
            if let Some(theirs) = &theirs {
                let lr = log_softmax(&theirs[r]);
                let kl: f64 = lr.iter().zip(&lm).map(|(a, b)| a.exp() * (a - b)).sum();
                assert!(close(g.ref_nll, -lr[t]), "{tiles:?} row {r}");
                assert!(close(g.kl, kl), "{tiles:?} row {r}: {} vs {kl}", g.kl);
                assert_eq!(g.agree, argmax(&mine[r]) == argmax(&theirs[r]));
            }
        }
    }
}

#[test]
fn slabs_match_full_log_softmax_rows() {
    let (vocab, h, n) = (203, 37, 29);
    let xs: Vec<f32> = (0..n * h).map(|i| noise(i, 1, 1.0)).collect();
    let w: Vec<f32> = (0..vocab * h).map(|i| noise(i, 2, 0.6)).collect();
    let side = HeadSide {
        xs: &xs,
        h,
        weight: HeadWeight::F32(&w),
        bias: None,
        divisor: None,
        softcap: None,
    };
    check(side, &w, None);
    // Against a reference with its own head, bias, scaling and soft-capping.
    let rxs: Vec<f32> = (0..n * h).map(|i| noise(i, 3, 1.0)).collect();
    let rw: Vec<f32> = (0..vocab * h).map(|i| noise(i, 4, 0.6)).collect();
    let bias: Vec<f32> = (0..vocab).map(|i| noise(i, 5, 0.5)).collect();
    let reference = HeadSide {
        xs: &rxs,
        h,
        weight: HeadWeight::F32(&rw),
        bias: Some(&bias),
        divisor: Some(1.5),
        softcap: Some(3.0),
    };
    check(side, &w, Some((reference, &rw)));
    // Agreement: a model scored against itself agrees everywhere and diverges by nothing.
    let same = score_with(side, Some(side), &[5; 29], vocab, (16, 5)).unwrap();
    assert!(same.iter().all(|s| s.agree && s.kl.abs() < 1e-9));
}

#[test]
fn half_and_quantized_heads_are_widened_a_slab_at_a_time() {
    let (vocab, h, n) = (75, 64, 11);
    let xs: Vec<f32> = (0..n * h).map(|i| noise(i, 6, 1.0)).collect();
    let w: Vec<f32> = (0..vocab * h).map(|i| noise(i, 7, 0.5)).collect();
    let half: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
    let widened: Vec<f32> = half.iter().map(|v| v.to_f32()).collect();
    let side = |weight| HeadSide {
        xs: &xs,
        h,
        weight,
        bias: None,
        divisor: None,
        softcap: None,
    };
    check(
        side(HeadWeight::Half(HalfWeight::Bf16(&half))),
        &widened,
        None,
    );
    // Two quantized parts stacked along the vocabulary, cut by the slabs.
    // Each part from its own buffer: candle's quantizer reads a tensor's storage from its start,
    // so a narrowed view would quantize the wrong rows (and fails a debug assertion).
    let q = |a: usize, len: usize| {
        let rows = w[a * h..(a + len) * h].to_vec();
        let part = Tensor::from_vec(rows, (len, h), &Device::Cpu).unwrap();
        Arc::new(QTensor::quantize(&part, GgmlDType::Q8_0).unwrap())
    };
    let parts = vec![q(0, 40), q(40, 35)];
    let deq: Vec<f32> = (parts.iter())
        .flat_map(|p| {
            let d = p.dequantize(&Device::Cpu).unwrap();
            d.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        })
        .collect();
    check(side(HeadWeight::Quant(&parts)), &deq, None);
}

#[test]
fn bad_shapes_and_targets_are_refused() {
    let (xs, w) = (vec![0.5f32; 6], vec![0.25f32; 12]);
    let side = HeadSide {
        xs: &xs,
        h: 3,
        weight: HeadWeight::F32(&w),
        bias: None,
        divisor: None,
        softcap: None,
    };
    let err = score_with(side, None, &[4, 0], 4, (2, 2)).unwrap_err();
    assert!(err.to_string().contains("token id 4"), "{err}");
    assert!(score_with(side, None, &[3], 4, (2, 2)).is_err());
    assert!(score_with(side, None, &[3, 3], 5, (2, 2)).is_err());
    assert_eq!(score_with(side, None, &[3, 0], 4, (2, 2)).unwrap().len(), 2);
}
