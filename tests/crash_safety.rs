//! Crash safety: a prune or convert killed with SIGKILL at any point leaves nothing at the target
//! path (only a clearly named temporary, `.NAME.PID-RANDOM.depthprune-tmp`, removed by the next
//! run once its process is gone), and a full disk gives a clear error and no output.

mod common;

use common::*;
use depthprune::checkpoint::safetensors::Dtype;
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn medium_config() -> serde_json::Value {
    json!({"model_type":"llama","architectures":["LlamaForCausalLM"],"num_hidden_layers":6,"hidden_size":384,
        "intermediate_size":1024,"num_attention_heads":6,"num_key_value_heads":2,"vocab_size":4000,
        "tie_word_embeddings":false})
}

/// A fresh temporary folder holding a checkpoint of [`medium_config`] at `src`, in shards of at
/// most `max_shard` bytes.
fn medium(max_shard: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_checkpoint(&src, &medium_config(), Dtype::F32, max_shard);
    (tmp, src)
}

fn temporaries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("depthprune-tmp"))
        .collect()
}

/// Runs `args(out)` to completion once to time it, then `kills` times killed with SIGKILL at
/// spread-out points. After each kill nothing may be at `out` and the only temporary is the
/// killed run's `.NAME.PID-RANDOM.depthprune-tmp`; a run that finished first must pass `check_whole`. The next run must
/// succeed and remove the temporary. Returns how many runs were killed mid-way.
fn kill_at_points(
    dir: &Path,
    out: &Path,
    kills: u32,
    args: impl Fn(&Path) -> Vec<String>,
    check_whole: impl Fn(&Path),
) -> u32 {
    let remove = |p: &Path| {
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap()
        } else {
            std::fs::remove_file(p).unwrap()
        }
    };
    let probe = dir.join(format!(
        "probe-{}",
        out.file_name().unwrap().to_string_lossy()
    ));
    let t0 = Instant::now();
    let o = Command::new(bin()).args(args(&probe)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let full = t0.elapsed();
    remove(&probe);
    // The run's own temporary, `.NAME.PID-RANDOM.depthprune-tmp`, and its lock file.
    let name = out.file_name().unwrap().to_string_lossy().into_owned();
    let ours = |t: &str| {
        let Some(middle) = t
            .strip_prefix(&format!(".{name}."))
            .and_then(|r| r.strip_suffix(".depthprune-tmp"))
        else {
            return false;
        };
        middle
            .split_once('-')
            .is_some_and(|(pid, hex)| pid.parse::<u32>().is_ok() && hex.len() == 8)
    };

    let mut killed = 0;
    for k in 0..kills {
        let delay = full.mul_f64(f64::from(k) / f64::from(kills) + 0.02);
        let mut child = Command::new(bin())
            .args(args(out))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some_and(|s| s.success());
        if !finished {
            child.kill().unwrap();
            killed += 1;
        }
        let status = child.wait().unwrap();
        // A kill that lands after the final rename finds a whole output: the rename is atomic,
        // so an output at the target path is either absent or complete.
        if finished || status.success() || out.exists() {
            check_whole(out);
            remove(out);
        } else {
            assert!(
                !out.exists(),
                "kill {k} after {delay:?} left an output at the target path"
            );
            for t in temporaries(dir) {
                assert!(ours(&t), "unexpected temporary `{t}`");
            }
        }
        // The next run cleans the temporary up and succeeds.
        let o = Command::new(bin()).args(args(out)).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            temporaries(dir).is_empty(),
            "temporary left after a successful run"
        );
        remove(out);
    }
    killed
}

#[test]
fn sigkill_at_any_point_leaves_no_output() {
    let (tmp, src) = medium(8_000_000);
    let out = tmp.path().join("out");
    let args = |o: &Path| {
        vec![
            "prune".to_string(),
            src.display().to_string(),
            "--drop".into(),
            "2..5".into(),
            "--out".into(),
            o.display().to_string(),
            "--max-shard-size".into(),
            "8MB".into(),
        ]
    };
    let killed = kill_at_points(tmp.path(), &out, 8, args, |o| {
        let v = run(&[
            "verify",
            o.to_str().unwrap(),
            "--source",
            src.to_str().unwrap(),
        ]);
        assert!(
            v.status.success(),
            "completed output must verify: {}",
            stdout(&v)
        );
    });
    assert!(
        killed >= 4,
        "only {killed} runs were killed mid-way; the model is too small to test this"
    );
}

/// The arguments of `convert SRC --to TO --out OUT`.
fn convert(src: &Path, to: &str, out: &Path) -> Vec<String> {
    ["convert", s(src), "--to", to, "--out", s(out)]
        .iter()
        .map(|a| a.to_string())
        .collect()
}

/// Asserts that `inspect` reads the completed output `o`.
fn inspects(o: &Path) {
    let v = run(&["inspect", s(o)]);
    assert!(
        v.status.success(),
        "completed output must read: {}",
        stderr(&v)
    );
}

#[test]
fn sigkill_during_convert_leaves_no_output() {
    let (tmp, src) = medium(5_000_000_000);
    // The shared fixture's tokenizer.json is a stub that `convert --to gguf` rightly refuses as
    // malformed; this test is about the weights, so it converts without a tokenizer.
    std::fs::remove_file(src.join("tokenizer.json")).unwrap();
    let gguf = tmp.path().join("model.gguf");
    let to_gguf = |o: &Path| convert(&src, "gguf", o);
    let killed = kill_at_points(tmp.path(), &gguf, 3, to_gguf, inspects);
    // A whole GGUF file to convert back.
    let o = Command::new(bin()).args(to_gguf(&gguf)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let hf = tmp.path().join("hf");
    let to_hf = |o: &Path| convert(&gguf, "hf", o);
    let killed = killed + kill_at_points(tmp.path(), &hf, 3, to_hf, inspects);
    assert!(
        killed >= 3,
        "only {killed} of 6 convert runs were killed mid-way; the model is too small to test this"
    );
}

#[test]
fn full_disk_gives_a_clear_error_and_no_output() {
    let (tmp, src) = medium(5_000_000_000);
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=2M",
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED full_disk_gives_a_clear_error_and_no_output: cannot mount a tmpfs here (needs root)");
        return;
    }
    let o = prune(&src, &["--drop", "1"], &mnt.join("out"));
    let err = stderr(&o);
    let listing = std::fs::read_dir(&mnt).unwrap().count();
    let _ = Command::new("umount").arg(&mnt).status();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains("model.safetensors"),
        "the error must name the file: {err}"
    );
    assert_eq!(listing, 0, "a full disk must leave nothing behind");
}
