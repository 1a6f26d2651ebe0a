//! `verify` passes on a fresh prune and fails on any tampering.

mod common;

use common::*;
use depthprune::checkpoint::safetensors::{Dtype, SafetensorsFile};

#[test]
fn verify_passes_then_catches_tampering() {
    let (_tmp, src, out) = tiny_checkpoint("qwen2", Dtype::BF16, 5_000_000_000);
    let o = prune(&src, &["--drop", "2..4"], &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let verify = || run(&["verify", s(&out), "--source", s(&src)]);
    let o = verify();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("byte-identical"));

    // Flip one byte inside a kept tensor's data.
    let shard = out.join("model.safetensors");
    let st = SafetensorsFile::open(&shard).unwrap();
    let t = st.tensor("model.layers.2.mlp.up_proj.weight").unwrap();
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[t.file_offset as usize + 3] ^= 0x40;
    std::fs::write(&shard, &bytes).unwrap();
    let o = verify();
    assert_eq!(o.status.code(), Some(1));
    let s = stdout(&o);
    assert!(s.contains("FAIL file `model.safetensors`"), "{s}");
    assert!(s.contains("`model.layers.2.mlp.up_proj.weight` differs from source `model.layers.4.mlp.up_proj.weight`"), "{s}");
}

#[test]
fn verify_needs_provenance() {
    let (_tmp, src, _) = tiny_checkpoint("llama", Dtype::F32, 5_000_000_000);
    let o = run(&["verify", s(&src)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("pruning.json"), "{}", stderr(&o));
}
