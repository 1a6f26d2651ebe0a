//! Checks every ggml decoder against gguf-py (and ggml's Q8_K formula) on the fixtures made by
//! `scripts/make_quant_fixtures.py`, bit for bit, and checks the quantizers reproduce gguf-py's
//! bytes exactly from the same f32 input.

use depthprune::quant::{self, QuantFormat, DEQUANTIZABLE};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant")
}

struct Fixture {
    name: String,
    type_id: u32,
    n_elements: usize,
    data: Vec<u8>,
    reference: Vec<f32>,
    input: Option<Vec<f32>>,
}

fn read(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    assert_eq!(bytes.len() % 4, 0);
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn fixtures() -> Vec<Fixture> {
    let manifest: Value = serde_json::from_slice(&read("manifest.json")).unwrap();
    manifest["fixtures"]
        .as_array()
        .expect("manifest lists fixtures")
        .iter()
        .map(|f| Fixture {
            name: f["name"].as_str().unwrap().to_string(),
            type_id: f["type_id"].as_u64().unwrap() as u32,
            n_elements: f["n_elements"].as_u64().unwrap() as usize,
            data: read(f["data"].as_str().unwrap()),
            reference: f32s(&read(f["reference"].as_str().unwrap())),
            input: f["input"].as_str().map(|p| f32s(&read(p))),
        })
        .collect()
}

#[test]
fn every_decodable_format_has_a_fixture() {
    let names: Vec<String> = fixtures().into_iter().map(|f| f.name).collect();
    for f in DEQUANTIZABLE {
        assert!(names.iter().any(|n| n == f.name()), "no fixture for {f}");
    }
}

#[test]
fn dequantize_matches_reference_bit_for_bit() {
    for fx in fixtures() {
        assert_eq!(fx.reference.len(), fx.n_elements, "{}", fx.name);
        let mut out = Vec::new();
        quant::dequantize(fx.type_id, &fx.data, fx.n_elements, &mut out)
            .unwrap_or_else(|e| panic!("{}: {e}", fx.name));
        assert_eq!(out.len(), fx.n_elements);
        let mut mismatches = 0;
        for (i, (got, want)) in out.iter().zip(&fx.reference).enumerate() {
            // Bits, not values: NaN must stay NaN and -0.0 must stay -0.0.
            if got.to_bits() != want.to_bits() {
                if mismatches < 5 {
                    eprintln!("{} element {i}: got {got:e}, want {want:e}", fx.name);
                }
                mismatches += 1;
            }
        }
        assert_eq!(mismatches, 0, "{}: {mismatches} elements differ", fx.name);
    }
}

#[test]
fn dequantize_row_by_row_matches_reference() {
    for fx in fixtures() {
        let format = QuantFormat::from_type_id(fx.type_id).unwrap();
        let row = format.block_size().max(32);
        let row_bytes = format.byte_size(row).unwrap();
        let mut y = vec![0.0f32; row];
        for (r, chunk) in fx.data.chunks(row_bytes).enumerate() {
            quant::dequantize_into(format, chunk, &mut y).unwrap();
            for (k, (got, want)) in y.iter().zip(&fx.reference[r * row..]).enumerate() {
                assert_eq!(got.to_bits(), want.to_bits(), "{} row {r} col {k}", fx.name);
            }
        }
    }
}

#[test]
fn quantize_reproduces_gguf_py_bytes() {
    let mut checked = 0;
    for fx in fixtures() {
        let Some(input) = &fx.input else { continue };
        let format = QuantFormat::from_type_id(fx.type_id).unwrap();
        let mut bytes = Vec::new();
        quant::quantize(format, input, &mut bytes).unwrap();
        assert_eq!(bytes.len(), fx.data.len(), "{}", fx.name);
        let first_diff = bytes.iter().zip(&fx.data).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "{}: first differing byte", fx.name);
        checked += 1;
    }
    // F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
    assert_eq!(checked, 8);
}

#[test]
fn slice_conversions_match_gguf_py() {
    for fx in fixtures() {
        let Some(input) = &fx.input else { continue };
        let bytes = match fx.name.as_str() {
            "F16" => quant::f32_to_f16_bytes(input),
            "BF16" => quant::f32_to_bf16_bytes(input),
            _ => continue,
        };
        assert_eq!(bytes, fx.data, "{}", fx.name);
    }
}
