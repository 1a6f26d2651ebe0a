//! `depthprune verify OUT.gguf [--source SRC.gguf]`: a pruned GGUF passes; a flipped byte, a
//! wrong source, inconsistent provenance or a file not written by `prune` fails with exit 1.

mod common;
mod gguf_support;

use common::{prune, run, stderr, stdout};
use depthprune::checkpoint::gguf::GgufFile;
use gguf_support::toy_model;
use std::path::{Path, PathBuf};

fn pruned(dir: &Path, drop: &str) -> (PathBuf, PathBuf) {
    let src = dir.join("toy.gguf");
    toy_model(5).write(&src);
    let out = dir.join("out.gguf");
    let o = prune(&src, &["--drop", drop], &out);
    assert!(o.status.success(), "{}", stderr(&o));
    (src, out)
}

fn verify(args: &[&Path]) -> std::process::Output {
    let mut a = vec!["verify", args[0].to_str().unwrap()];
    if let Some(s) = args.get(1) {
        a.extend(["--source", s.to_str().unwrap()]);
    }
    run(&a)
}

fn fails_with(o: &std::process::Output, want: &[&str]) {
    let all = format!("{}{}", stdout(o), stderr(o));
    assert_eq!(o.status.code(), Some(1), "{all}");
    assert!(!all.contains("panicked"), "{all}");
    for w in want {
        assert!(all.contains(w), "expected `{w}` in `{all}`");
    }
}

/// Flips one byte inside tensor `name` of the file at `path`.
fn flip(path: &Path, name: &str) {
    let f = GgufFile::read(path, 0).unwrap();
    let t = f.tensors.iter().find(|t| t.name() == name).unwrap();
    let mut b = std::fs::read(path).unwrap();
    b[t.file_offset() as usize + 1] ^= 0x55;
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_pruned_file_verifies_alone_and_against_its_source() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = pruned(tmp.path(), "1..3");
    let o = verify(&[&out]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = verify(&[&out, &src]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("byte-identical under the old→new layer mapping"),
        "{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");
}

#[test]
fn a_changed_tensor_or_wrong_source_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = pruned(tmp.path(), "1..3");
    // Kept layer 3 became layer 1; a flipped byte there is caught against the source only.
    flip(&out, "blk.1.attn_q.weight");
    let o = verify(&[&out]);
    assert!(o.status.success(), "{}", stderr(&o));
    fails_with(
        &verify(&[&out, &src]),
        &[
            "`blk.1.attn_q.weight` differs from source `blk.3.attn_q.weight`",
            "checks failed",
        ],
    );

    // A source with another layer count is not where the file came from.
    let six = tmp.path().join("six.gguf");
    toy_model(6).write(&six);
    fails_with(
        &verify(&[&out, &six]),
        &["source has 6 layers, depthprune.layers_before says 5"],
    );
}

#[test]
fn a_file_not_written_by_prune_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("plain.gguf");
    toy_model(3).write(&p);
    fails_with(
        &verify(&[&p]),
        &["plain.gguf", "not written by `depthprune prune`"],
    );
}

#[test]
fn inconsistent_provenance_and_broken_files_fail() {
    let tmp = tempfile::tempdir().unwrap();
    // Provenance that disagrees with the block count.
    let p = tmp.path().join("lies.gguf");
    toy_model(3)
        .str("depthprune.version", "0")
        .u32s("depthprune.kept_layers", &[0, 1])
        .u32s("depthprune.removed_layers", &[2])
        .u32("depthprune.layers_before", 3)
        .u32("depthprune.layers_after", 2)
        .write(&p);
    fails_with(&verify(&[&p]), &["FAIL layer count", "block count 3"]);
    // A truncated pruned file.
    let (_, out) = pruned(tmp.path(), "4");
    let b = std::fs::read(&out).unwrap();
    std::fs::write(&out, &b[..b.len() - 40]).unwrap();
    fails_with(&verify(&[&out]), &["FAIL file structure", "out.gguf"]);
}
