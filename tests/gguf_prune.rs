//! Pruning GGUF files: kept tensors byte-identical under their new names, removed ones gone,
//! metadata sliced and in order, alignment honoured, split outputs, and no output on error.

mod gguf_support;

use depthprune::checkpoint::atomic::Overwrite;
use depthprune::checkpoint::gguf::{self, Array, GgufModel, PruneOptions, Value};
use depthprune::progress::Silent;
use depthprune::select::{LayerSpec, Removal};
use gguf_support::*;
use std::collections::HashMap;
use std::path::Path;

const OPTS: PruneOptions = PruneOptions {
    overwrite: Overwrite::Refuse,
    split_max_bytes: None,
};

fn drop(spec: &str, n: usize) -> Removal {
    Removal::drop(&LayerSpec::parse(spec).unwrap(), n).unwrap()
}

/// Every tensor's bytes, by name, read through the model's own offsets.
fn tensor_bytes(m: &GgufModel) -> HashMap<String, Vec<u8>> {
    let files: Vec<Vec<u8>> = m
        .parts()
        .iter()
        .map(|p| std::fs::read(&p.path).unwrap())
        .collect();
    m.tensors()
        .iter()
        .map(|t| {
            let bytes = slice(&files[t.part()], t.file_offset(), t.n_bytes()).to_vec();
            (t.name().to_string(), bytes)
        })
        .collect()
}

fn setup(n_layers: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("toy.gguf");
    toy_model(n_layers).write(&p);
    (dir, p)
}

#[test]
fn kept_tensors_are_byte_identical_under_new_names() {
    let (dir, src) = setup(6);
    let out = dir.path().join("out.gguf");
    let model = GgufModel::open(&src).unwrap();
    let removal = drop("1..3,4", 6);
    let report = gguf::prune(&model, &removal, &out, &OPTS, &Silent).unwrap();
    assert_eq!(report.outputs, vec![out.clone()]);

    let pruned = GgufModel::open(&out).unwrap();
    assert_eq!(pruned.version(), 3);
    assert_eq!(pruned.block_count().unwrap(), 3);
    let before = tensor_bytes(&model);
    let after = tensor_bytes(&pruned);
    // Old layers 0, 3, 5 become 0, 1, 2.
    for (old, new) in [(0, 0), (3, 1), (5, 2)] {
        for part in ["attn_norm", "attn_q", "attn_k", "ffn_down"] {
            let (o, n) = (
                format!("blk.{old}.{part}.weight"),
                format!("blk.{new}.{part}.weight"),
            );
            assert_eq!(after[&n], before[&o], "{n} should hold the bytes of {o}");
        }
    }
    for name in ["token_embd.weight", "output_norm.weight", "output.weight"] {
        assert_eq!(after[name], before[name]);
    }
    assert_eq!(after.len(), 3 + 3 * 4);
    assert!(!after.contains_key("blk.3.attn_q.weight"));

    // Tensor order kept: the source order with the removed layers left out.
    let expected: Vec<String> = model
        .tensors()
        .iter()
        .filter_map(|t| match depthprune::arch::naming::gguf_layer(t.name()) {
            Some(l) => removal.new_index(l.layer).map(|n| l.renumbered(n)),
            None => Some(t.name().to_string()),
        })
        .collect();
    let got: Vec<&str> = pruned.tensors().iter().map(|t| t.name()).collect();
    assert_eq!(got, expected);
    assert_eq!(report.tensors_after, got.len());
    assert_eq!(report.bytes_written, std::fs::metadata(&out).unwrap().len());
    assert_eq!(dir_names(dir.path()), vec!["out.gguf", "toy.gguf"]);
}

#[test]
fn metadata_is_sliced_renamed_and_kept_in_order() {
    let (dir, src) = setup(6);
    let out = dir.path().join("out.gguf");
    let model = GgufModel::open(&src).unwrap();
    let report = gguf::prune(&model, &drop("1..3,4", 6), &out, &OPTS, &Silent).unwrap();
    assert_eq!(report.per_layer_keys, vec!["llama.attention.head_count_kv"]);
    let md = GgufModel::open(&out).unwrap().metadata().clone();

    let keys: Vec<&str> = md.iter().map(|(k, _)| k).collect();
    let source_keys: Vec<&str> = model.metadata().iter().map(|(k, _)| k).collect();
    assert_eq!(
        &keys[..source_keys.len()],
        &source_keys[..],
        "source keys keep their order"
    );
    assert!(keys[source_keys.len()..]
        .iter()
        .all(|k| k.starts_with("depthprune.")));

    assert_eq!(md.get("llama.block_count"), Some(&Value::U32(3)));
    let heads = head_counts(6);
    assert_eq!(
        md.get("llama.attention.head_count_kv"),
        Some(&Value::Array(Array::U32(vec![
            heads[0], heads[3], heads[5]
        ])))
    );
    // The vocabulary and the tags have 6 entries, as many as layers, and must not be sliced.
    assert_eq!(
        md.get("general.tags")
            .and_then(Value::as_array)
            .map(Array::len),
        Some(6)
    );
    assert_eq!(
        md.get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .map(Array::len),
        Some(6)
    );
    assert_eq!(md.get("llama.feed_forward_length"), Some(&Value::U32(256)));
    assert_eq!(md.get_str("general.name"), Some("Toy (pruned 6→3L)"));
    assert_eq!(md.get_str("depthprune.version"), Some(depthprune::VERSION));
    assert_eq!(md.get_str("depthprune.source"), Some("toy.gguf"));
    assert_eq!(md.get_str("depthprune.removed_ranges"), Some("1..3, 4..5"));
    assert_eq!(md.get("depthprune.layers_before"), Some(&Value::U32(6)));
    assert_eq!(
        md.get("depthprune.removed_layers"),
        Some(&Value::Array(Array::U32(vec![1, 2, 4])))
    );
    assert_eq!(
        md.get("depthprune.kept_layers"),
        Some(&Value::Array(Array::U32(vec![0, 3, 5])))
    );
}

#[test]
fn custom_alignment_is_honoured_in_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a.gguf");
    let mut b = toy_model(3).alignment(128);
    b.alignment = 128;
    b.write(&src);
    let out = dir.path().join("out.gguf");
    let model = GgufModel::open(&src).unwrap();
    assert_eq!(model.alignment(), 128);
    gguf::prune(&model, &drop("0", 3), &out, &OPTS, &Silent).unwrap();
    let pruned = GgufModel::open(&out).unwrap();
    assert_eq!(pruned.alignment(), 128);
    for t in pruned.tensors() {
        assert_eq!(t.file_offset() % 128, 0, "{}", t.name());
    }
    assert_eq!(std::fs::metadata(&out).unwrap().len() % 128, 0);
}

#[test]
fn version_2_input_gives_version_3_output() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("v2.gguf");
    let mut b = toy_model(4);
    b.version = 2;
    b.write(&src);
    let out = dir.path().join("out.gguf");
    let model = GgufModel::open(&src).unwrap();
    gguf::prune(&model, &drop("last:1", 4), &out, &OPTS, &Silent).unwrap();
    let pruned = GgufModel::open(&out).unwrap();
    assert_eq!(pruned.version(), 3);
    assert_eq!(
        tensor_bytes(&pruned)["blk.2.attn_k.weight"],
        tensor_bytes(&model)["blk.2.attn_k.weight"]
    );
}

#[test]
fn split_output_round_trips() {
    let (dir, src) = setup(8);
    let model = GgufModel::open(&src).unwrap();
    let removal = drop("2..5", 8);
    let single = dir.path().join("single.gguf");
    gguf::prune(&model, &removal, &single, &OPTS, &Silent).unwrap();

    let out = dir.path().join("split.gguf");
    let opts = PruneOptions {
        split_max_bytes: Some(2048),
        ..OPTS
    };
    let report = gguf::prune(&model, &removal, &out, &opts, &Silent).unwrap();
    let n = report.outputs.len();
    assert!(n >= 3, "expected several parts, got {n}");
    for (i, p) in report.outputs.iter().enumerate() {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, format!("split-{:05}-of-{n:05}.gguf", i + 1));
    }
    assert!(!out.exists());

    let joined = GgufModel::open(&report.outputs[0]).unwrap();
    let whole = GgufModel::open(&single).unwrap();
    assert_eq!(joined.parts().len(), n);
    assert_eq!(
        joined.metadata(),
        whole.metadata(),
        "split keys are not part of the model's metadata"
    );
    let names = |m: &GgufModel| {
        m.tensors()
            .iter()
            .map(|t| t.name().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&joined), names(&whole));
    assert_eq!(tensor_bytes(&joined), tensor_bytes(&whole));

    // Each part but the first holds only the split keys; sizes respect the limit unless a
    // part holds a single tensor larger than it.
    for (i, part) in joined.parts().iter().enumerate() {
        let file = gguf::GgufFile::read(&part.path, i).unwrap();
        assert_eq!(file.metadata.get("split.no"), Some(&Value::U16(i as u16)));
        assert_eq!(
            file.metadata.get("split.count"),
            Some(&Value::U16(n as u16))
        );
        assert_eq!(
            file.metadata.get("split.tensors.count"),
            Some(&Value::I32(whole.tensors().len() as i32))
        );
        if i > 0 {
            assert_eq!(file.metadata.len(), 3);
        }
        assert!(
            part.file_len <= 2048 || part.n_tensors == 1,
            "part {i} is {} bytes",
            part.file_len
        );
    }

    // Opening a later part points at the first; a missing part is named.
    let e = GgufModel::open(&report.outputs[1]).unwrap_err().to_string();
    assert!(
        e.contains("is part 2 of") && e.contains("split-00001-of-"),
        "{e}"
    );
    std::fs::remove_file(&report.outputs[n - 1]).unwrap();
    let e = GgufModel::open(&report.outputs[0]).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "split part `{}` is missing",
            report.outputs[n - 1].display()
        )),
        "{e}"
    );
}

#[test]
fn split_input_prunes_like_a_single_file() {
    let (dir, src) = setup(5);
    let model = GgufModel::open(&src).unwrap();
    // First make a split copy of the model by pruning one layer, then prune the split copy.
    let parts_out = dir.path().join("parts.gguf");
    let opts = PruneOptions {
        split_max_bytes: Some(1500),
        ..OPTS
    };
    let r = gguf::prune(&model, &drop("4", 5), &parts_out, &opts, &Silent).unwrap();
    let split_model = GgufModel::open(&r.outputs[0]).unwrap();
    assert!(split_model.parts().len() > 1);
    let out = dir.path().join("again.gguf");
    gguf::prune(&split_model, &drop("0", 4), &out, &OPTS, &Silent).unwrap();
    let again = GgufModel::open(&out).unwrap();
    assert_eq!(again.block_count().unwrap(), 3);
    assert_eq!(
        tensor_bytes(&again)["blk.0.ffn_down.weight"],
        tensor_bytes(&model)["blk.1.ffn_down.weight"]
    );
    assert_eq!(
        again.metadata().get_str("general.name"),
        Some("Toy (pruned 5→4L) (pruned 4→3L)")
    );
}

#[test]
fn layer_counts_at_the_ends_of_the_stack_are_adjusted() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.gguf");
    toy_model(6)
        .u32("llama.leading_dense_block_count", 3)
        .u32("llama.nextn_predict_layers", 1)
        .write(&src);
    let out = dir.path().join("out.gguf");
    let model = GgufModel::open(&src).unwrap();
    let r = gguf::prune(&model, &drop("1,2", 6), &out, &OPTS, &Silent).unwrap();
    assert_eq!(r.adjusted_keys.len(), 2);
    let md = GgufModel::open(&out).unwrap().metadata().clone();
    assert_eq!(
        md.get("llama.leading_dense_block_count"),
        Some(&Value::U32(1))
    );
    assert_eq!(md.get("llama.nextn_predict_layers"), Some(&Value::U32(1)));
}

/// The error of pruning `model` by `removal` into `out`, as text.
fn prune_err(model: &GgufModel, removal: &Removal, out: &Path, opts: &PruneOptions) -> String {
    gguf::prune(model, removal, out, opts, &Silent)
        .unwrap_err()
        .to_string()
}

fn assert_no_output(dir: &Path, expected: &[&str]) {
    assert_eq!(
        dir_names(dir),
        expected,
        "no output or temporary file may be left"
    );
}

#[test]
fn missing_block_count_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.gguf");
    let mut b = toy_model(3);
    b.kvs.retain(|(k, _, _)| k != "llama.block_count");
    b.write(&src);
    let model = GgufModel::open(&src).unwrap();
    let e = prune_err(
        &model,
        &Removal::from_layers(3, [0]).unwrap(),
        &dir.path().join("o.gguf"),
        &OPTS,
    );
    assert!(
        e.contains("`llama.block_count` is missing") && e.contains("m.gguf"),
        "{e}"
    );
    assert_no_output(dir.path(), &["m.gguf"]);
}

#[test]
fn contradicting_tensors_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.gguf");
    toy_model(3)
        .tensor("blk.7.attn_q.weight", &[32, 1], Q4_1)
        .write(&src);
    let model = GgufModel::open(&src).unwrap();
    let e = prune_err(&model, &drop("0", 3), &dir.path().join("o.gguf"), &OPTS);
    assert!(
        e.contains("tensor `blk.7.attn_q.weight` belongs to layer 7"),
        "{e}"
    );
    assert_no_output(dir.path(), &["m.gguf"]);
}

#[test]
fn mismatched_removal_and_existing_output_are_refused() {
    let (dir, src) = setup(3);
    let model = GgufModel::open(&src).unwrap();
    let out = dir.path().join("o.gguf");
    let e = prune_err(&model, &drop("0", 4), &out, &OPTS);
    assert!(e.contains("the removal plan is for 4 layers"), "{e}");
    assert_no_output(dir.path(), &["toy.gguf"]);

    std::fs::write(&out, b"keep me").unwrap();
    let e = prune_err(&model, &drop("0", 3), &out, &OPTS);
    assert!(e.contains("`force`"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let force = PruneOptions {
        overwrite: Overwrite::Force,
        ..OPTS
    };
    gguf::prune(&model, &drop("0", 3), &out, &force, &Silent).unwrap();
    assert_eq!(GgufModel::open(&out).unwrap().block_count().unwrap(), 2);

    let e = prune_err(&model, &drop("0", 3), &src, &force);
    assert!(e.contains("is the input"), "{e}");
    assert_no_output(dir.path(), &["o.gguf", "toy.gguf"]);
}

#[test]
fn a_source_that_changes_during_the_copy_leaves_no_output() {
    let (dir, src) = setup(3);
    let model = GgufModel::open(&src).unwrap();
    // Shrink the file after it was read: the last tensors' data is gone.
    let len = std::fs::metadata(&src).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
    f.set_len(len / 2).unwrap();
    let e = prune_err(&model, &drop("0", 3), &dir.path().join("o.gguf"), &OPTS);
    assert!(
        e.contains("ended after") && e.contains("did the file change"),
        "{e}"
    );
    assert_no_output(dir.path(), &["toy.gguf"]);
}
