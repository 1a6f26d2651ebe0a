//! Reading GGUF files: what valid files yield, and one test per broken rule, each asserting on
//! the error text (which names the file).

mod gguf_support;

use depthprune::checkpoint::gguf::{GgmlType, GgufModel, Value};
use gguf_support::*;
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Opens `bytes` as a model and returns the error text, which must name the file.
fn open_err(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "bad.gguf", bytes);
    let e = GgufModel::open(&p)
        .expect_err("the file should be refused")
        .to_string();
    assert!(e.contains("bad.gguf"), "error does not name the file: {e}");
    e
}

fn assert_has(e: &str, needle: &str) {
    assert!(e.contains(needle), "expected `{needle}` in: {e}");
}

#[test]
fn reads_metadata_and_tensors_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let b = toy_model(3);
    let p = dir.path().join("m.gguf");
    let layout = b.write(&p);
    let bytes = std::fs::read(&p).unwrap();
    let m = GgufModel::open(&p).unwrap();
    assert_eq!(m.version(), 3);
    assert_eq!(m.alignment(), 32);
    let keys: Vec<&str> = m.metadata().iter().map(|(k, _)| k).collect();
    let expected: Vec<&str> = b.kvs.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(keys, expected);
    let names: Vec<&str> = m.tensors().iter().map(|t| t.name()).collect();
    let expected: Vec<&str> = b.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, expected);
    assert_eq!(m.block_count().unwrap(), 3);
    assert_eq!(m.architecture().unwrap(), "llama");
    for (t, src) in m.tensors().iter().zip(&b.tensors) {
        assert_eq!(t.ggml_type().id(), src.ty);
        assert_eq!(t.dims(), &src.dims[..]);
        assert_eq!(
            slice(&bytes, t.file_offset(), t.n_bytes()),
            &src.data[..],
            "{}",
            t.name()
        );
        assert!(t.file_offset() >= layout.data_start);
    }
    let k = m
        .tensors()
        .iter()
        .find(|t| t.name() == "blk.1.attn_k.weight")
        .unwrap();
    assert_eq!(k.ggml_type(), GgmlType::IQ2_XXS);
    assert_eq!(
        m.per_layer_keys(3),
        vec!["llama.attention.head_count_kv".to_string()]
    );
}

#[test]
fn reads_version_2() {
    let mut b = toy_model(2);
    b.version = 2;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v2.gguf");
    b.write(&p);
    let m = GgufModel::open(&p).unwrap();
    assert_eq!(m.version(), 2);
    assert_eq!(m.tensors().len(), b.tensors.len());
}

#[test]
fn honours_general_alignment() {
    let b = Builder::new()
        .alignment(64)
        .tensor("a", &[3], F32)
        .tensor("b", &[5], F32);
    let (bytes, layout) = b.build();
    assert_eq!(layout.data_start % 64, 0);
    let dir = tempfile::tempdir().unwrap();
    let m = GgufModel::open(&write(dir.path(), "a.gguf", &bytes)).unwrap();
    assert_eq!(m.alignment(), 64);
    assert_eq!(m.tensors()[1].file_offset(), layout.data_start + 64);
    // The same file read with the default alignment would misplace `b`: the 32-aligned offset
    // 32 is refused as misaligned under 64.
    let b = Builder::new().alignment(64).tensor_at("a", &[3], F32, 32);
    assert_has(
        &open_err(&b.build().0),
        "not a multiple of the alignment 64",
    );
}

#[test]
fn refuses_bad_alignment_values() {
    let b = Builder::new().u32("general.alignment", 48);
    assert_has(
        &open_err(&b.build().0),
        "`general.alignment` is 48, which is not a power of two",
    );
    let b = Builder::new().u32("general.alignment", 0);
    assert_has(&open_err(&b.build().0), "not a power of two");
    let b = Builder::new().str("general.alignment", "32");
    assert_has(&open_err(&b.build().0), "has type string, not u32");
}

#[test]
fn truncated_at_every_section_boundary() {
    let (bytes, l) = toy_model(2).build();
    let mut cuts = vec![0, 2, 4, 6, 8, 16, l.counts_end - 1, l.counts_end];
    for &s in l.kv_starts.iter().chain(&l.info_starts) {
        cuts.extend([s, s + 1, s + 9, s + 12]);
    }
    cuts.extend([
        l.infos_end - 1,
        l.infos_end,
        l.data_start,
        l.data_start + 1,
        l.len - 1,
    ]);
    for cut in cuts {
        let e = open_err(&bytes[..cut as usize]);
        assert!(
            e.contains("truncated")
                || e.contains("past the end of the file")
                || e.contains("room for"),
            "cut at {cut}: {e}"
        );
    }
}

#[test]
fn refuses_bad_magic_v1_future_and_big_endian() {
    let (mut bytes, _) = toy_model(1).build();
    bytes[..4].copy_from_slice(b"GGML");
    assert_has(&open_err(&bytes), "not a GGUF file: it starts with `GGML`");
    for (version, msg) in [
        (1u32, "GGUF version 1 is not supported"),
        (4, "GGUF version 4 is not supported"),
        (3u32.swap_bytes(), "big-endian GGUF files are not supported"),
        (2u32.swap_bytes(), "big-endian"),
    ] {
        let mut b = toy_model(1);
        b.version = version;
        assert_has(&open_err(&b.build().0), msg);
    }
}

#[test]
fn refuses_absurd_counts() {
    // (declared tensor count, declared key count, the refusal)
    for (n_tensors, n_kv, msg) in [
        (
            Some(u64::MAX),
            None,
            "declares 18446744073709551615 tensors, but depthprune accepts at most",
        ),
        (
            Some(100_000),
            None,
            "declares 100000 tensors, but the rest of the file has room for at most",
        ),
        (
            None,
            Some(1 << 40),
            "metadata keys, but depthprune accepts at most",
        ),
        (
            None,
            Some(500_000),
            "metadata keys, but the rest of the file has room for at most",
        ),
    ] {
        let mut b = toy_model(1);
        b.n_tensors = n_tensors;
        b.n_kv = n_kv;
        assert_has(&open_err(&b.build().0), msg);
    }
}

#[test]
fn refuses_string_lengths_beyond_the_file() {
    // A key whose length prefix is huge.
    let mut bytes = Builder::new().str("general.name", "x").build().0;
    bytes[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert_has(
        &open_err(&bytes),
        "metadata key #0: key declares a string of 1099511627776 bytes",
    );
    // A string value longer than what is left.
    let b = Builder::new().kv("general.name", 8, {
        let mut p = 1000u64.to_le_bytes().to_vec();
        p.extend_from_slice(b"short");
        p
    });
    assert_has(&open_err(&b.build().0), "metadata key `general.name`: string value declares a string of 1000 bytes, but the rest of the file has room for at most 8");
    // A tensor name longer than what is left.
    let (mut bytes, l) = Builder::new().tensor("t", &[4], F32).build();
    let at = l.info_starts[0] as usize;
    bytes[at..at + 8].copy_from_slice(&u32::MAX.to_le_bytes().repeat(2));
    assert_has(
        &open_err(&bytes),
        "tensor info #0: name declares a string of",
    );
}

#[test]
fn refuses_array_lengths_beyond_the_file() {
    let mut p = 4u32.to_le_bytes().to_vec();
    p.extend_from_slice(&(1u64 << 20).to_le_bytes());
    p.extend_from_slice(&[0; 16]);
    let b = Builder::new().kv("llama.x", 9, p);
    assert_has(&open_err(&b.build().0), "metadata key `llama.x`: array declares an array of 1048576 elements, but the rest of the file has room for at most 10");
    let mut p = 8u32.to_le_bytes().to_vec();
    p.extend_from_slice(&(1u64 << 62).to_le_bytes());
    let b = Builder::new().kv("tokenizer.ggml.tokens", 9, p);
    assert_has(
        &open_err(&b.build().0),
        "elements, but depthprune accepts at most",
    );
}

#[test]
fn refuses_unknown_value_types_and_bad_bools() {
    let b = Builder::new().kv("k", 13, vec![0; 8]);
    assert_has(
        &open_err(&b.build().0),
        "metadata key `k`: value has unknown value type 13",
    );
    let b = Builder::new().kv("k", 7, vec![5]);
    assert_has(&open_err(&b.build().0), "is a bool stored as 5");
}

#[test]
fn refuses_duplicate_keys_and_tensor_names() {
    let b = Builder::new().u32("a", 1).u32("a", 2);
    assert_has(&open_err(&b.build().0), "metadata key `a` appears twice");
    let b = Builder::new().tensor("t", &[4], F32).tensor("t", &[4], F32);
    assert_has(&open_err(&b.build().0), "tensor `t` appears twice");
}

#[test]
fn refuses_unknown_types_and_bad_shapes() {
    let b = Builder::new().tensor("t", &[4], F32);
    let (mut bytes, l) = b.build();
    // Type id sits after name (8 + 1), n_dims (4) and one dim (8).
    let at = (l.info_starts[0] + 9 + 4 + 8) as usize;
    bytes[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    assert_has(&open_err(&bytes), "tensor `t` has unknown ggml type id 99");
    bytes[at..at + 4].copy_from_slice(&4u32.to_le_bytes());
    assert_has(&open_err(&bytes), "unknown ggml type id 4");

    let mut b = Builder::new().tensor("t", &[4], F32);
    b.tensors[0].dims = vec![1, 1, 1, 1, 4];
    assert_has(
        &open_err(&b.build().0),
        "tensor `t` has 5 dimensions; GGUF allows at most 4",
    );
    b.tensors[0].dims = vec![4, 0];
    assert_has(
        &open_err(&b.build().0),
        "tensor `t` with shape [4, 0]: dimension 1 is zero",
    );
    b.tensors[0].dims = vec![u64::MAX, 4];
    assert_has(&open_err(&b.build().0), "its size overflows 64 bits");
    let mut b = Builder::new().tensor("q", &[256, 1], Q4_K);
    b.tensors[0].dims = vec![100, 1];
    assert_has(
        &open_err(&b.build().0),
        "row length 100 is not a multiple of Q4_K's block size 256",
    );
}

#[test]
fn refuses_data_out_of_bounds() {
    let b = Builder::new().tensor("a", &[8], F32);
    let (bytes, l) = b.build();
    // Drop the last data bytes: the tensor now reaches past the end.
    let e = open_err(&bytes[..(l.data_start + 16) as usize]);
    assert_has(&e, "tensor `a` spans bytes");
    assert_has(&e, "past the end of the file");
    let b = Builder::new().tensor_at("a", &[8], F32, 1 << 40);
    let mut bytes = b.build().0;
    bytes.truncate(4096);
    assert_has(&open_err(&bytes), "past the end of the file");
    let b = Builder::new().tensor_at("a", &[8], F32, u64::MAX - 31);
    let mut bytes = b.build().0;
    bytes.truncate(4096);
    assert_has(&open_err(&bytes), "past the end of the file");
}

#[test]
fn refuses_misaligned_and_overlapping_tensors() {
    let b = Builder::new()
        .tensor("a", &[8], F32)
        .tensor_at("b", &[8], F32, 16);
    assert_has(
        &open_err(&b.build().0),
        "tensor `b` starts at data offset 16, which is not a multiple of the alignment 32",
    );
    let b = Builder::new()
        .tensor("a", &[16], F32)
        .tensor_at("b", &[8], F32, 32);
    assert_has(&open_err(&b.build().0), "tensors `a` and `b` overlap");
    // Out of order on disk but not overlapping is fine.
    let b = Builder::new()
        .tensor_at("a", &[8], F32, 64)
        .tensor_at("b", &[8], F32, 0);
    let dir = tempfile::tempdir().unwrap();
    let m = GgufModel::open(&write(dir.path(), "ok.gguf", &b.build().0)).unwrap();
    assert_eq!(m.tensors()[0].name(), "a");
}

#[test]
fn refuses_empty_and_non_utf8_names() {
    let b = Builder::new().u32("", 1);
    assert_has(&open_err(&b.build().0), "metadata key #0: key is empty");
    let (mut bytes, l) = Builder::new().tensor("t", &[4], F32).build();
    bytes[(l.info_starts[0] + 8) as usize] = 0xff;
    assert_has(&open_err(&bytes), "tensor info #0: name is not valid UTF-8");
}

#[test]
fn missing_block_count_and_contradicting_tensors_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let b = Builder::new()
        .str("general.architecture", "llama")
        .tensor("blk.0.x.weight", &[4], F32);
    let m = GgufModel::open(&write(dir.path(), "m.gguf", &b.build().0)).unwrap();
    let e = m.block_count().unwrap_err().to_string();
    assert_has(&e, "`llama.block_count` is missing");
    assert_has(&e, "m.gguf");
    let b = toy_model(2).tensor("blk.2.attn_q.weight", &[32, 1], Q4_1);
    let m = GgufModel::open(&write(dir.path(), "c.gguf", &b.build().0)).unwrap();
    assert_has(
        &m.block_count().unwrap_err().to_string(),
        "tensor `blk.2.attn_q.weight` belongs to layer 2, but `llama.block_count` is 2",
    );
    let b = Builder::new().u32("llama.block_count", 2);
    let m = GgufModel::open(&write(dir.path(), "n.gguf", &b.build().0)).unwrap();
    assert_has(
        &m.block_count().unwrap_err().to_string(),
        "`general.architecture` is missing",
    );
}

#[test]
fn strings_need_not_be_utf8_and_survive() {
    let dir = tempfile::tempdir().unwrap();
    let b = Builder::new().kv("tokenizer.x", 8, {
        let mut p = 2u64.to_le_bytes().to_vec();
        p.extend_from_slice(&[0xff, 0x00]);
        p
    });
    let m = GgufModel::open(&write(dir.path(), "s.gguf", &b.build().0)).unwrap();
    assert_eq!(
        m.metadata().get("tokenizer.x"),
        Some(&Value::String(vec![0xff, 0]))
    );
}

/// Files written by gguf-py's `GGUFWriter` (0.19), kept in `tests/fixtures/gguf/`: every value
/// type, a nested array, Q8_0 blocks, and (in the second) a custom alignment of 64.
#[test]
fn reads_files_written_by_gguf_py() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf");
    let m = GgufModel::open(&dir.join("pyref_q8_0.gguf")).unwrap();
    let md = m.metadata();
    assert_eq!(md.get_str("general.name"), Some("pyref"));
    assert_eq!(md.get("t.u8"), Some(&Value::U8(7)));
    assert_eq!(md.get("t.i16"), Some(&Value::I16(-300)));
    assert_eq!(md.get("t.u64"), Some(&Value::U64(1 << 63)));
    assert_eq!(md.get("t.f32"), Some(&Value::F32(1e-5)));
    assert_eq!(md.get("t.bool"), Some(&Value::Bool(true)));
    use depthprune::checkpoint::gguf::Array;
    assert_eq!(
        md.get("t.nested"),
        Some(&Value::Array(Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::I32(vec![3])
        ])))
    );
    assert_eq!(m.block_count().unwrap(), 2);
    let q = m
        .tensors()
        .iter()
        .find(|t| t.name() == "blk.1.attn_q.weight")
        .unwrap();
    assert_eq!(
        (q.ggml_type(), q.dims(), q.n_bytes()),
        (GgmlType::Q8_0, &[32u64, 2][..], 68)
    );
    let bytes = std::fs::read(&m.parts()[0].path).unwrap();
    let expected: Vec<u8> = (0..68).map(|j| ((7 + j) % 256) as u8).collect();
    assert_eq!(slice(&bytes, q.file_offset(), q.n_bytes()), &expected[..]);

    let m = GgufModel::open(&dir.join("pyref_align64.gguf")).unwrap();
    assert_eq!((m.alignment(), m.block_count().unwrap()), (64, 3));
    assert!(m.tensors().iter().all(|t| t.file_offset() % 64 == 0));
    // The rule is length equality: `t.strs` has 3 entries, as many as layers, so it counts too.
    assert_eq!(
        m.per_layer_keys(3),
        vec!["llama.attention.head_count_kv", "t.strs"]
    );
}
