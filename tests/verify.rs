//! `verify` passes on a fresh prune and fails on any tampering.

mod common;

use common::*;
use depthprune::checkpoint::safetensors::{Dtype, SafetensorsFile};

#[test]
fn verify_passes_then_catches_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    make_checkpoint(&src, &tiny_config("qwen2"), Dtype::BF16, 5_000_000_000);
    let o = run(&[
        "prune",
        src.to_str().unwrap(),
        "--drop",
        "2..4",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "verify",
        out.to_str().unwrap(),
        "--source",
        src.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("byte-identical"));

    // Flip one byte inside a kept tensor's data.
    let shard = out.join("model.safetensors");
    let st = SafetensorsFile::open(&shard).unwrap();
    let t = st.tensor("model.layers.2.mlp.up_proj.weight").unwrap();
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[t.file_offset as usize + 3] ^= 0x40;
    std::fs::write(&shard, &bytes).unwrap();
    let o = run(&[
        "verify",
        out.to_str().unwrap(),
        "--source",
        src.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let s = stdout(&o);
    assert!(s.contains("FAIL file `model.safetensors`"), "{s}");
    assert!(s.contains("`model.layers.2.mlp.up_proj.weight` differs from source `model.layers.4.mlp.up_proj.weight`"), "{s}");
}

#[test]
fn verify_needs_provenance() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_checkpoint(&src, &tiny_config("llama"), Dtype::F32, 5_000_000_000);
    let o = run(&["verify", src.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("pruning.json"), "{}", stderr(&o));
}
