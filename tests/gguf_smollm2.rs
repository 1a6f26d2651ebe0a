//! The demo model: SmolLM2-135M-Instruct, Q4_1, 30 layers, llama architecture. Runs when
//! `DEPTHPRUNE_SMOLLM2_GGUF` names the file (CI sets it); otherwise it says on stderr that it
//! was skipped.

use depthprune::checkpoint::atomic::Overwrite;
use depthprune::checkpoint::gguf::{
    self, GgmlType, GgufInfo, GgufModel, PruneOptions, TensorInfo, Value,
};
use depthprune::progress::Silent;
use depthprune::select::{LayerSpec, Removal};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

const VAR: &str = "DEPTHPRUNE_SMOLLM2_GGUF";

fn model_path() -> Option<PathBuf> {
    match std::env::var_os(VAR) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!("SKIPPED: set {VAR} to the SmolLM2-135M-Instruct Q4_1 GGUF to run this test");
            None
        }
    }
}

fn read_tensor(file: &mut File, t: &TensorInfo) -> Vec<u8> {
    let mut buf = vec![0; t.n_bytes() as usize];
    file.seek(SeekFrom::Start(t.file_offset())).unwrap();
    file.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn smollm2_inspect_and_prune_20_28() {
    let Some(src) = model_path() else { return };
    let model = GgufModel::open(&src).unwrap();
    let info = GgufInfo::of(&model);
    assert_eq!(info.architecture.as_deref(), Some("llama"));
    assert_eq!(info.block_count, Some(30));
    assert_eq!(info.n_tensors, 272);
    assert_eq!(info.params.layers.len(), 30);
    assert!(info.per_layer_keys.is_empty(), "{:?}", info.per_layer_keys);
    let types: Vec<GgmlType> = info.tensor_types.iter().map(|t| t.ggml_type).collect();
    assert_eq!(types, vec![GgmlType::F32, GgmlType::Q4_1, GgmlType::Q8_0]);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("smol-22L.gguf");
    let removal = Removal::drop(&LayerSpec::parse("20..28").unwrap(), 30).unwrap();
    let opts = PruneOptions {
        overwrite: Overwrite::Refuse,
        split_max_bytes: None,
    };
    let report = gguf::prune(&model, &removal, &out, &opts, &Silent).unwrap();
    assert_eq!(report.tensors_after, 272 - 8 * 9);

    let pruned = GgufModel::open(&out).unwrap();
    assert_eq!(pruned.block_count().unwrap(), 22);
    assert_eq!(
        pruned.metadata().get("llama.block_count"),
        Some(&Value::U32(22))
    );
    assert!(pruned
        .metadata()
        .get_str("general.name")
        .unwrap()
        .ends_with(" (pruned 30→22L)"));
    assert_eq!(
        pruned.metadata().get_str("depthprune.removed_ranges"),
        Some("20..28")
    );

    let mut a = File::open(&src).unwrap();
    let mut b = File::open(&out).unwrap();
    let mut checked = 0;
    for t in pruned.tensors() {
        let old_name = match depthprune::arch::naming::gguf_layer(t.name()) {
            Some(l) if l.layer >= 20 => l.renumbered(l.layer + 8),
            _ => t.name().to_string(),
        };
        let o = model
            .tensors()
            .iter()
            .find(|x| x.name() == old_name)
            .unwrap();
        assert_eq!(
            (o.dims(), o.ggml_type()),
            (t.dims(), t.ggml_type()),
            "{}",
            t.name()
        );
        assert!(
            read_tensor(&mut a, o) == read_tensor(&mut b, t),
            "{} differs from {old_name}",
            t.name()
        );
        checked += 1;
    }
    assert_eq!(checked, 200);
}
