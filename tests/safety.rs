//! Never lose the user's data (issue 33): an output that is an input, holds one (a parent
//! folder), reaches one through a symlink, or lies inside an input folder is refused by every
//! command that writes, `--force` or not, with one `error:` line naming both paths, and the
//! inputs' bytes are the same afterwards. Two runs racing for one `--out`: exactly one wins.

mod common;

use common::*;
use depthprune::checkpoint::safetensors::Dtype;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// SHA-256 of every file under `dir` (recursively, symlinks not followed), by relative path.
fn hashes(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let bytes = std::fs::read(e.path()).unwrap();
                let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, format!("{:x}", Sha256::digest(&bytes)));
            }
        }
    }
    out
}

/// `models/m` (a tiny llama with its side files), `models/notes.txt` beside it, and `calib.txt`.
struct Setup {
    tmp: tempfile::TempDir,
    models: PathBuf,
    m: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let m = models.join("m");
    make_checkpoint(&m, &tiny_config("llama"), Dtype::F32, 1 << 30);
    std::fs::write(models.join("notes.txt"), "keep me\n").unwrap();
    std::os::unix::fs::symlink(&m, tmp.path().join("link")).unwrap();
    std::os::unix::fs::symlink(&models, tmp.path().join("uplink")).unwrap();
    Setup { tmp, models, m }
}

/// Asserts that `o` was refused with one `error:` line naming `out` and the input `input`, and
/// that every file under the setup's models folder is as before.
fn refused(o: &Output, out: &Path, input: &Path, before: &BTreeMap<PathBuf, String>, root: &Path) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "must be refused: {err}");
    let line = one_error_line(&err);
    assert!(
        line.contains(s(out)),
        "the error must name the output: {err}"
    );
    assert!(
        line.contains(s(input)),
        "the error must name the input: {err}"
    );
    assert_eq!(&hashes(root), before, "an input changed: {err}");
}

#[test]
fn prune_never_writes_over_into_or_above_its_input() {
    let st = setup();
    let root = st.tmp.path();
    let before = hashes(root);
    let cases = [
        st.m.clone(),                 // out = input
        st.models.clone(),            // out = the input's parent
        root.join("link"),            // out = a symlink to the input
        root.join("uplink"),          // out = a symlink to its parent
        st.m.join("sub"),             // out inside the input
        root.join("uplink/m/sub"),    // inside, through a symlink
        st.models.join("other/../m"), // `..` through a folder not there yet
    ];
    for out in &cases {
        for force in [true, false] {
            let mut args = vec!["--drop", "1"];
            if force {
                args.push("--force");
            }
            let o = prune(&st.m, &args, out);
            refused(&o, out, &st.m, &before, root);
        }
    }
    // Through a symlinked input, the model named by its link.
    let o = prune(&root.join("link"), &["--drop", "1", "--force"], &st.m);
    refused(&o, &st.m, &root.join("link"), &before, root);
    // A new path, and `--force` over an earlier output, still work.
    let new = root.join("pruned");
    ok(&prune(&st.m, &["--drop", "1"], &new));
    let o = prune(&st.m, &["--drop", "0"], &new);
    assert!(
        one_error_line(&stderr(&o)).contains("--force"),
        "{}",
        stderr(&o)
    );
    ok(&prune(&st.m, &["--drop", "0", "--force"], &new));
    assert_eq!(&hashes(&st.models), &hashes_under(&before, "models"));
}

/// The entries of `all` under the folder `sub`, relative to it.
fn hashes_under(all: &BTreeMap<PathBuf, String>, sub: &str) -> BTreeMap<PathBuf, String> {
    all.iter()
        .filter_map(|(p, h)| Some((p.strip_prefix(sub).ok()?.to_path_buf(), h.clone())))
        .collect()
}

#[test]
fn convert_synth_heal_score_and_sweep_refuse_too() {
    let st = setup();
    let root = st.tmp.path();
    let calib = root.join("calib.txt");
    std::fs::write(
        &calib,
        "the quick brown fox jumps over the lazy dog ".repeat(200),
    )
    .unwrap();
    let before = hashes(root);
    let config = st.m.join("config.json");
    // convert: into the model folder, over its parent.
    for out in [st.m.join("m.gguf"), st.models.clone()] {
        let o = run(&[
            "convert",
            s(&st.m),
            "--to",
            "gguf",
            "--out",
            s(&out),
            "--force",
        ]);
        refused(&o, &out, &st.m, &before, root);
    }
    // synth: over the folder its config is read from.
    for out in [st.m.clone(), st.models.clone()] {
        let o = run(&["synth", "--config", s(&config), "--out", s(&out)]);
        refused(&o, &out, &config, &before, root);
    }
    // score --out: over the model's config.
    let o = run(&["score", s(&st.m), "--metric", "last", "--out", s(&config)]);
    refused(&o, &config, &st.m, &before, root);
    // heal: over the dense model it reads, and over the calibration text.
    let pruned = root.join("pruned");
    ok(&prune(&st.m, &["--drop", "1..2"], &pruned));
    let before = hashes(root);
    for (out, input) in [(&st.m, &st.m), (&calib, &calib), (&pruned, &pruned)] {
        let o = run(&[
            "heal",
            s(&pruned),
            "--from",
            s(&st.m),
            "--calib",
            s(&calib),
            "--out",
            s(out),
            "--force",
        ]);
        refused(&o, out, input, &before, root);
    }
    // sweep: into the model folder, or a study folder above it.
    for out in [st.m.join("study"), st.models.clone(), root.join("uplink")] {
        let o = run(&[
            "sweep",
            s(&st.m),
            "--strategies",
            "last",
            "--remove",
            "0..2",
            "--eval",
            s(&calib),
            "--out",
            s(&out),
        ]);
        refused(&o, &out, &st.m, &before, root);
    }
}

#[test]
fn a_gguf_output_over_its_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dense_qwen2_gguf(dir.path());
    let before = hashes(dir.path());
    for out in [gguf.clone(), dir.path().to_path_buf()] {
        let o = prune(&gguf, &["--drop", "1", "--force"], &out);
        refused(&o, &out, &gguf, &before, dir.path());
    }
}

/// Starts `n` runs of `prune SRC --drop 1 --out OUT` at once.
fn race(src: &Path, out: &Path, n: usize) -> Vec<Output> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new(bin())
                .args(["prune", s(src), "--drop", "1", "--out", s(out)])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

#[test]
fn racing_runs_for_one_output_one_wins_and_it_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let cfg = serde_json::json!({"model_type":"llama","architectures":["LlamaForCausalLM"],
        "num_hidden_layers":4,"hidden_size":256,"intermediate_size":768,"num_attention_heads":4,
        "num_key_value_heads":2,"vocab_size":4000,"tie_word_embeddings":false});
    make_checkpoint(&src, &cfg, Dtype::F32, 1 << 30);
    let mut overlapped = 0;
    for round in 0..4 {
        let out = tmp.path().join(format!("r{round}"));
        let runs = race(&src, &out, 3);
        let wins = runs.iter().filter(|o| o.status.success()).count();
        assert_eq!(wins, 1, "exactly one run must win");
        for o in runs.iter().filter(|o| !o.status.success()) {
            let err = stderr(o);
            assert_eq!(o.status.code(), Some(1), "{err}");
            let line = one_error_line(&err);
            assert!(line.contains(s(&out)), "{err}");
            overlapped += usize::from(line.contains("another run"));
            assert!(
                line.contains("another run") || line.contains("already exists"),
                "{err}"
            );
        }
        let v = run(&["verify", s(&out), "--source", s(&src)]);
        assert!(v.status.success(), "the winner must verify: {}", stdout(&v));
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("depthprune-"))
            .collect();
        assert!(left.is_empty(), "temporaries or locks left: {left:?}");
    }
    eprintln!("{overlapped} runs met a run holding the lock");
}
