//! Unit tests: one per error variant, hand-made blocks that pin the bit layouts, round trips
//! through the quantizers, and streaming-versus-whole equivalence. The comparison with gguf-py
//! lives in `tests/quant_golden.rs`.

use super::kquants::scale_min_k4;
use super::*;
use crate::Error;
use proptest::prelude::*;

fn quant_err<T: std::fmt::Debug>(r: crate::Result<T>) -> QuantError {
    match r {
        Err(Error::Quant(e)) => e,
        other => panic!("expected a quant error, got {other:?}"),
    }
}

/// The error [`dequantize`] gives for `n_elements` of type `id` in `data`.
fn refused(id: u32, data: &[u8], n_elements: usize) -> QuantError {
    quant_err(dequantize(id, data, n_elements, &mut Vec::new()))
}

fn f16_bytes(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_bits().to_le_bytes()
}

#[test]
fn unknown_type_id_is_refused_by_number() {
    // 4 was Q4_2, removed from ggml; 99 never existed.
    for id in [4, 5, 31, 99, u32::MAX] {
        let e = refused(id, &[0; 18], 32);
        assert_eq!(e, QuantError::UnknownType { id });
        let msg = e.to_string();
        assert!(msg.contains(&format!("`{id}`")), "{msg}");
        assert!(msg.contains("Q4_K") && msg.contains("BF16"), "{msg}");
    }
}

#[test]
fn known_but_undecodable_type_is_named() {
    let e = refused(16, &[0; 66], 256);
    assert_eq!(
        e,
        QuantError::CannotDequantize {
            id: 16,
            name: "IQ2_XXS"
        }
    );
    assert!(e.to_string().contains("`IQ2_XXS`"));
    let e = refused(9, &[0; 36], 32);
    assert!(matches!(
        e,
        QuantError::CannotDequantize { name: "Q8_1", .. }
    ));
}

#[test]
fn partial_block_is_refused() {
    let e = refused(2, &[0; 18], 33);
    assert_eq!(
        e,
        QuantError::PartialBlock {
            format: QuantFormat::Q4_0,
            n_elements: 33,
            block: 32
        }
    );
    let e = refused(12, &[0; 144], 128);
    assert!(matches!(e, QuantError::PartialBlock { block: 256, .. }));
}

#[test]
fn wrong_byte_length_is_refused() {
    let mut out = vec![1.0; 3];
    let e = quant_err(dequantize(2, &[0; 17], 32, &mut out));
    assert_eq!(
        e,
        QuantError::LengthMismatch {
            format: QuantFormat::Q4_0,
            n_elements: 32,
            expected: 18,
            actual: 17
        }
    );
    // A failed call leaves the output alone.
    assert_eq!(out, vec![1.0; 3]);
    let mut row = [0.0f32; 256];
    let e = quant_err(dequantize_into(QuantFormat::Q6_K, &[0; 211], &mut row));
    assert!(matches!(
        e,
        QuantError::LengthMismatch {
            expected: 210,
            actual: 211,
            ..
        }
    ));
}

#[test]
fn overflowing_size_is_refused() {
    let e = QuantFormat::F32.byte_size(usize::MAX).unwrap_err();
    assert_eq!(
        e,
        QuantError::TooLarge {
            format: QuantFormat::F32,
            n_elements: usize::MAX
        }
    );
}

#[test]
fn q8_k_cannot_be_quantized() {
    let mut out = Vec::new();
    let e = quant_err(quantize(QuantFormat::Q8_K, &[0.0; 256], &mut out));
    assert_eq!(
        e,
        QuantError::CannotQuantize {
            format: QuantFormat::Q8_K
        }
    );
    assert!(e.to_string().contains("Q4_K"), "{e}");
    let e = quant_err(quantize(QuantFormat::Q8_0, &[0.0; 33], &mut out));
    assert!(matches!(e, QuantError::PartialBlock { .. }));
    let e = quant_err(quantize(QuantFormat::Q4_K, &[0.0; 300], &mut out));
    assert!(matches!(e, QuantError::PartialBlock { .. }));
}

/// The k-quants encode (candle's quantizers) into blocks our decoders read back within each
/// type's rounding, over several parallel slabs, and a slab split does not change the bytes.
#[test]
fn k_quants_round_trip_within_their_bits() {
    let n = 5 * (1 << 20) / 4 + 3 * QK_K; // four slabs and a part
    let xs: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1021) as f32 - 510.0) / 510.0 * (1.0 + (i % 5) as f32))
        .collect();
    // RMS error relative to the values' RMS, a bit above what each type's bits give.
    for (format, bound) in [
        (QuantFormat::Q2_K, 0.40),
        (QuantFormat::Q3_K, 0.20),
        (QuantFormat::Q4_K, 0.10),
        (QuantFormat::Q5_K, 0.05),
        (QuantFormat::Q6_K, 0.025),
    ] {
        let (mut bytes, mut back) = (Vec::new(), Vec::new());
        quantize(format, &xs, &mut bytes).unwrap();
        assert_eq!(bytes.len(), format.byte_size(n).unwrap());
        dequantize(format.type_id(), &bytes, n, &mut back).unwrap();
        let (e, r) = xs.iter().zip(&back).fold((0f64, 0f64), |(e, r), (&x, &y)| {
            (e + ((x - y) as f64).powi(2), r + (x as f64).powi(2))
        });
        let rel = (e / r).sqrt();
        assert!(rel < bound, "{format}: relative RMS error {rel}");
        assert!(
            rel > bound / 50.0,
            "{format}: error {rel} is too small to be {format}"
        );
        // The last block alone encodes to the last block's bytes.
        let mut tail = Vec::new();
        quantize(format, &xs[n - QK_K..], &mut tail).unwrap();
        assert_eq!(
            tail[..],
            bytes[bytes.len() - format.type_size()..],
            "{format}"
        );
    }
}

#[test]
fn block_sizes_match_ggml_static_asserts() {
    let expect = [
        (QuantFormat::F32, 1, 4),
        (QuantFormat::F16, 1, 2),
        (QuantFormat::BF16, 1, 2),
        (QuantFormat::Q4_0, 32, 18),
        (QuantFormat::Q4_1, 32, 20),
        (QuantFormat::Q5_0, 32, 22),
        (QuantFormat::Q5_1, 32, 24),
        (QuantFormat::Q8_0, 32, 34),
        (QuantFormat::Q2_K, 256, 84),
        (QuantFormat::Q3_K, 256, 110),
        (QuantFormat::Q4_K, 256, 144),
        (QuantFormat::Q5_K, 256, 176),
        (QuantFormat::Q6_K, 256, 210),
        (QuantFormat::Q8_K, 256, 292),
    ];
    assert_eq!(expect.len(), DEQUANTIZABLE.len());
    for (f, block, bytes) in expect {
        assert_eq!((f.block_size(), f.type_size()), (block, bytes), "{f}");
        assert_eq!(QuantFormat::from_type_id(f.type_id()), Ok(f));
    }
    assert_eq!(QuantFormat::BF16.type_id(), 30);
    assert_eq!(QuantFormat::Q2_K.type_id(), 10);
    // The kernels' block layouts agree with the GGUF size table the formats read their sizes from.
    let kernels = [
        (QuantFormat::Q4_0, legacy::Q4_0_BYTES),
        (QuantFormat::Q4_1, legacy::Q4_1_BYTES),
        (QuantFormat::Q5_0, legacy::Q5_0_BYTES),
        (QuantFormat::Q5_1, legacy::Q5_1_BYTES),
        (QuantFormat::Q8_0, legacy::Q8_0_BYTES),
        (QuantFormat::Q2_K, kquants::Q2_K_BYTES),
        (QuantFormat::Q3_K, kquants::Q3_K_BYTES),
        (QuantFormat::Q4_K, kquants::Q4_K_BYTES),
        (QuantFormat::Q5_K, kquants::Q5_K_BYTES),
        (QuantFormat::Q6_K, kquants::Q6_K_BYTES),
        (QuantFormat::Q8_K, kquants::Q8_K_BYTES),
    ];
    for (f, bytes) in kernels {
        assert_eq!(f.type_size(), bytes, "{f}");
        assert_eq!(f.ggml_type().id(), f.type_id(), "{f}");
    }
}

#[test]
fn q4_0_low_nibbles_hold_the_first_half() {
    let mut block = vec![0u8; 18];
    block[..2].copy_from_slice(&f16_bytes(0.5));
    for j in 0..16 {
        block[2 + j] = (j as u8) | ((15 - j as u8) << 4);
    }
    let mut out = Vec::new();
    dequantize(2, &block, 32, &mut out).unwrap();
    for j in 0..16 {
        assert_eq!(out[j], 0.5 * (j as f32 - 8.0));
        assert_eq!(out[j + 16], 0.5 * (7.0 - j as f32));
    }
}

#[test]
fn q5_0_fifth_bit_belongs_to_its_element() {
    let mut block = vec![0u8; 22];
    block[..2].copy_from_slice(&f16_bytes(1.0));
    block[2..6].copy_from_slice(&((1u32 << 3) | (1 << 20)).to_le_bytes());
    let mut out = Vec::new();
    dequantize(6, &block, 32, &mut out).unwrap();
    for (i, v) in out.iter().enumerate() {
        let expect = if i == 3 || i == 20 { 0.0 } else { -16.0 };
        assert_eq!(*v, expect, "element {i}");
    }
}

#[test]
fn q8_k_scale_is_an_f32() {
    let mut block = vec![0u8; 292];
    block[..4].copy_from_slice(&0.1f32.to_le_bytes());
    block[4] = 0x81; // -127
    block[5] = 3;
    let mut out = Vec::new();
    dequantize(15, &block, 256, &mut out).unwrap();
    assert_eq!(out[0], 0.1f32 * -127.0);
    assert_eq!(out[1], 0.1f32 * 3.0);
    assert!(out[2..].iter().all(|v| *v == 0.0));
}

#[test]
fn q4_k_packed_scales_unpack_like_ggml() {
    // Bytes 0..4: scales 0..4 (low 6 bits) and the top bits of scales 4..8; bytes 4..8 the same
    // for mins; bytes 8..12 the low nibbles of scales (low) and mins (high) 4..8.
    let q = [
        0b1100_0001,
        0b0100_0010,
        3,
        4,
        0b1000_0101,
        6,
        7,
        0b1100_1000,
        0x9A,
        0x21,
        0x43,
        0x65,
    ];
    assert_eq!(scale_min_k4(0, &q), (1, 5));
    assert_eq!(scale_min_k4(3, &q), (4, 8));
    assert_eq!(scale_min_k4(4, &q), (0xA | (3 << 4), 0x9 | (2 << 4)));
    assert_eq!(scale_min_k4(5, &q), (0x1 | (1 << 4), 0x2));
    assert_eq!(scale_min_k4(7, &q), (0x5, 0x6 | (3 << 4)));
}

/// A tiny deterministic generator, so the tests need no RNG crate.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

#[test]
fn streaming_by_rows_equals_whole_tensor() {
    for (k, f) in DEQUANTIZABLE.iter().enumerate() {
        let row = 2 * f.block_size().max(32);
        let rows = 3;
        let data = bytes(k as u64 + 1, f.byte_size(row * rows).unwrap());
        let mut whole = Vec::new();
        dequantize(f.type_id(), &data, row * rows, &mut whole).unwrap();
        let row_bytes = f.byte_size(row).unwrap();
        let mut y = vec![0.0f32; row];
        for (r, chunk) in data.chunks(row_bytes).enumerate() {
            dequantize_into(*f, chunk, &mut y).unwrap();
            let a: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
            let b: Vec<u32> = whole[r * row..][..row]
                .iter()
                .map(|v| v.to_bits())
                .collect();
            assert_eq!(a, b, "{f} row {r}");
        }
    }
}

#[test]
fn f16_and_bf16_slices_round_as_ieee() {
    let xs = [
        0.0f32,
        -0.0,
        1.0,
        65504.0,
        65520.0,
        1e-8,
        1.0 + 1.0 / 2048.0,
        f32::INFINITY,
    ];
    let h = f32_to_f16_bytes(&xs);
    let back: Vec<f32> = h
        .chunks_exact(2)
        .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
        .collect();
    // 65520 rounds up past the largest half; 1 + 2^-11 is a tie that rounds to even (1.0).
    assert_eq!(
        back,
        [
            0.0,
            -0.0,
            1.0,
            65504.0,
            f32::INFINITY,
            0.0,
            1.0,
            f32::INFINITY
        ]
    );
    assert!(back[1].is_sign_negative());

    let b = f32_to_bf16_bytes(&[1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, f32::NAN]);
    let bits: Vec<u16> = b
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    // Ties to even: 1 + 2^-8 → 1.0 (0x3F80); 1 + 3·2^-8 → 1 + 2^-6 (0x3F82); NaN stays NaN.
    assert_eq!(&bits[..2], &[0x3F80, 0x3F82]);
    assert!(f32::from_bits((bits[2] as u32) << 16).is_nan());
}

/// The largest error a correct quantizer may leave on a block: one quantization step, plus the
/// f16 rounding of the scale and minimum.
fn step(format: QuantFormat, x: &[f32]) -> f32 {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let (lo, hi) = x
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let s = match format {
        QuantFormat::Q4_0 => amax / 8.0,
        QuantFormat::Q5_0 => amax / 16.0,
        QuantFormat::Q8_0 => amax / 127.0,
        QuantFormat::Q4_1 => (hi - lo) / 15.0,
        QuantFormat::Q5_1 => (hi - lo) / 31.0,
        QuantFormat::F16 => amax / 1024.0,
        QuantFormat::BF16 => amax / 128.0,
        _ => 0.0,
    };
    s + amax * 2e-3
}

proptest! {
    #[test]
    fn quantizers_round_trip_within_one_step(
        xs in (1usize..4).prop_flat_map(|k| prop::collection::vec(-100.0f32..100.0, 32 * k))
    ) {
        // (The k-quants' 256-value blocks: `k_quants_round_trip_within_their_bits`.)
        for f in QUANTIZABLE.into_iter().filter(|f| f.block_size() <= 32) {
            let mut q = Vec::new();
            quantize(f, &xs, &mut q).unwrap();
            prop_assert_eq!(q.len(), f.byte_size(xs.len()).unwrap());
            let mut y = Vec::new();
            dequantize(f.type_id(), &q, xs.len(), &mut y).unwrap();
            for (bx, by) in xs.chunks(32).zip(y.chunks(32)) {
                let tol = step(f, bx);
                for (a, b) in bx.iter().zip(by) {
                    prop_assert!((a - b).abs() <= tol, "{} {} -> {} (tol {})", f, a, b, tol);
                }
            }
        }
    }

    #[test]
    fn arbitrary_requests_never_panic(
        id in 0u32..48,
        len in 0usize..700,
        n in 0usize..1100,
        seed in any::<u64>(),
    ) {
        let data = bytes(seed, len);
        let mut out = Vec::new();
        let r = dequantize(id, &data, n, &mut out);
        if r.is_ok() {
            prop_assert_eq!(out.len(), n);
        }
    }
}
