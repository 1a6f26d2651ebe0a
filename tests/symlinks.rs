//! Symlinks in model folders: a file that links outside the folder is refused, naming it, unless
//! `--follow-symlinks`; links inside the folder, and hub-cache snapshots linking into their
//! `blobs/`, are read as usual. The same holds for every part of a split GGUF (issue 13).

mod common;
mod gguf_support;

use common::*;
use depthprune::checkpoint::safetensors::Dtype;
use std::os::unix::fs::symlink;
use std::path::Path;

/// A tiny llama checkpoint at `src` in a fresh temporary folder, and the path `out` beside it.
fn checkpoint() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    tiny_checkpoint("llama", Dtype::F32, 5_000_000_000)
}

/// A hub cache at `cache` holding `models--org--NAME` with `refs/main` at `COMMIT`; returns the
/// repo folder.
fn hub_repo(cache: &Path, name: &str) -> std::path::PathBuf {
    let repo = cache.join(format!("models--org--{name}"));
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    repo
}

/// Runs the binary with `args` offline on the hub cache `cache` (`HF_HOME` beside it).
fn offline(cache: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin())
        .args(args)
        .env("HF_HUB_CACHE", cache)
        .env("HF_HOME", cache.with_file_name("home"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[test]
fn a_link_outside_the_folder_is_refused_unless_followed() {
    let (tmp, src, out) = checkpoint();
    // The config lives outside the folder, like `/etc/passwd` would.
    let outside = tmp.path().join("elsewhere");
    std::fs::create_dir(&outside).unwrap();
    std::fs::rename(src.join("config.json"), outside.join("secret.json")).unwrap();
    symlink(outside.join("secret.json"), src.join("config.json")).unwrap();
    let (s, o) = (s(&src), s(&out));

    for args in [
        vec!["inspect", s],
        vec!["plan", s, "--drop", "1"],
        vec!["prune", s, "--drop", "1", "--out", o],
        vec!["eval", s, "--text", s],
    ] {
        let r = run(&args);
        let err = stderr(&r);
        assert_eq!(r.status.code(), Some(1), "{args:?}: {err}");
        let line = one_error_line(&err);
        assert!(
            line.contains("config.json")
                && line.contains("outside the model folder")
                && line.contains("--follow-symlinks"),
            "{args:?}: {line}"
        );
        assert_no_output(&out);
    }

    // The same, with the flag before or after the subcommand.
    let r = run(&["--follow-symlinks", "inspect", s]);
    ok(&r);
    let r = run(&["prune", s, "--drop", "1", "--out", o, "--follow-symlinks"]);
    ok(&r);
    // The output is a plain folder; verifying it against the linked source needs the flag too.
    let r = run(&["verify", o, "--source", s]);
    assert_eq!(r.status.code(), Some(1));
    assert!(one_error_line(&stderr(&r)).contains("outside the model folder"));
    let r = run(&["verify", o, "--source", s, "--follow-symlinks"]);
    ok(&r);
}

#[test]
fn a_shard_linking_outside_is_named() {
    let (tmp, src, _) = checkpoint();
    let elsewhere = tmp.path().join("weights.bin");
    std::fs::rename(src.join("model.safetensors"), &elsewhere).unwrap();
    symlink(&elsewhere, src.join("model.safetensors")).unwrap();
    let r = run(&["inspect", src.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    let line = one_error_line(&stderr(&r)).to_string();
    assert!(
        line.contains("model.safetensors") && line.contains("weights.bin"),
        "{line}"
    );
}

#[test]
fn links_inside_the_folder_are_read() {
    let (tmp, src, _) = checkpoint();
    std::fs::create_dir(src.join("real")).unwrap();
    std::fs::rename(
        src.join("model.safetensors"),
        src.join("real/w.safetensors"),
    )
    .unwrap();
    symlink("real/w.safetensors", src.join("model.safetensors")).unwrap();
    // The folder itself may be reached through a link.
    let via = tmp.path().join("via");
    symlink(&src, &via).unwrap();
    let r = run(&["inspect", via.to_str().unwrap()]);
    ok(&r);
}

#[test]
fn hub_snapshots_linking_into_their_blobs_are_read() {
    let (tmp, plain, out) = checkpoint();
    let cache = tmp.path().join("cache");
    let repo = hub_repo(&cache, "tiny");
    let snap = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snap).unwrap();
    for e in std::fs::read_dir(&plain).unwrap() {
        let e = e.unwrap();
        let blob = format!("blob-{}", e.file_name().to_string_lossy());
        std::fs::copy(e.path(), repo.join("blobs").join(&blob)).unwrap();
        symlink(format!("../../blobs/{blob}"), snap.join(e.file_name())).unwrap();
    }
    let r = offline(
        &cache,
        &["prune", "org/tiny", "--drop", "1", "--out", s(&out)],
    );
    ok(&r);
    // The snapshot folder given as a path works too.
    let r = run(&["inspect", snap.to_str().unwrap()]);
    ok(&r);
}

/// A 4-layer toy GGUF split into parts under `dir`; returns the part paths, first first.
fn split_gguf_in(tmp: &Path, dir: &Path) -> Vec<std::path::PathBuf> {
    let toy = tmp.join("toy.gguf");
    gguf_support::toy_model(4).write(&toy);
    std::fs::create_dir_all(dir).unwrap();
    let parts = split_gguf(&toy, "2KB", &dir.join("model.gguf"));
    assert!(parts.len() >= 3, "{parts:?}");
    parts
}

#[test]
fn a_split_gguf_part_linking_outside_is_refused_unless_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    let parts = split_gguf_in(tmp.path(), &dir);
    // The last part lives elsewhere and is linked back in.
    let last = parts.last().unwrap();
    let elsewhere = tmp.path().join("stranger.gguf");
    std::fs::rename(last, &elsewhere).unwrap();
    symlink(&elsewhere, last).unwrap();
    let first = parts[0].to_str().unwrap();
    let out = tmp.path().join("out.gguf");
    let o = out.to_str().unwrap();
    let part_name = last.file_name().unwrap().to_str().unwrap();
    for args in [
        vec!["inspect", first],
        vec!["plan", first, "--drop", "1"],
        vec!["prune", first, "--drop", "1", "--out", o],
    ] {
        let r = run(&args);
        let err = stderr(&r);
        assert_eq!(r.status.code(), Some(1), "{args:?}: {err}");
        assert!(r.stdout.is_empty(), "{args:?}: {}", stdout(&r));
        let line = one_error_line(&err);
        assert!(
            line.contains(part_name)
                && line.contains("stranger.gguf")
                && line.contains("outside the model folder")
                && line.contains("--follow-symlinks"),
            "{args:?}: {line}"
        );
        assert_no_output(&out);
    }
    // `verify` reports the refusal as a failed check.
    let r = run(&["verify", first]);
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    assert!(
        stdout(&r).contains("outside the model folder"),
        "{}",
        stdout(&r)
    );
    let r = run(&["--follow-symlinks", "inspect", first]);
    ok(&r);
    let r = run(&[
        "prune",
        first,
        "--drop",
        "1",
        "--out",
        o,
        "--follow-symlinks",
    ]);
    ok(&r);
}

#[test]
fn split_gguf_parts_linking_inside_or_into_hub_blobs_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    let parts = split_gguf_in(tmp.path(), &dir);
    // A part moved into a subfolder of the model folder and linked back: still inside.
    std::fs::create_dir(dir.join("real")).unwrap();
    let second = &parts[1];
    let name = second.file_name().unwrap().to_str().unwrap();
    std::fs::rename(second, dir.join("real").join(name)).unwrap();
    symlink(format!("real/{name}"), second).unwrap();
    let r = run(&["inspect", parts[0].to_str().unwrap()]);
    ok(&r);

    // A hub-cache snapshot whose parts, in a subfolder as GGUF repos often keep them, are links
    // into `../../../blobs/`: read from the cache by path and by hub ID.
    let cache = tmp.path().join("cache");
    let repo = hub_repo(&cache, "split");
    let sub = repo.join("snapshots").join(COMMIT).join("Q4");
    std::fs::create_dir_all(&sub).unwrap();
    for p in &parts {
        let name = p.file_name().unwrap().to_str().unwrap();
        let blob = format!("blob-{name}");
        std::fs::copy(p, repo.join("blobs").join(&blob)).unwrap();
        symlink(format!("../../../blobs/{blob}"), sub.join(name)).unwrap();
    }
    let first_name = parts[0].file_name().unwrap().to_str().unwrap();
    let first = sub.join(first_name);
    let r = run(&["inspect", first.to_str().unwrap()]);
    ok(&r);
    let id = format!("org/split:Q4/{first_name}");
    let r = offline(&cache, &["plan", &id, "--drop", "1"]);
    ok(&r);
}
