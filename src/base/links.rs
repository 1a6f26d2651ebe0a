//! Symlinks in model folders. A folder downloaded from a stranger can hold `config.json` or a
//! shard as a symlink to `/etc/passwd`, `~/.ssh/id_rsa` or another model; reading through it would
//! leak or mix files from outside the folder. Before a folder is read, every file depthprune may
//! read from it is checked: a symlink whose target resolves outside the folder is refused, naming
//! the file, unless following is switched on for the call ([`with_follow_symlinks`], the
//! `follow_symlinks` run option, the CLI's `--follow-symlinks`).
//!
//! The other parts of a split GGUF (`NAME-00002-of-00003.gguf`, …), found beside the part the
//! user named, are checked the same way ([`check_sibling`]).
//!
//! The Hugging Face hub cache stores `snapshots/<commit>/<file>` as relative symlinks into
//! `../../blobs/`; for a folder that is such a snapshot, the allowed root is the cache's repo
//! folder (`models--org--name`), so resolved hub models keep working.

use super::hf_files::{CONFIG_FILE, INDEX_FILE, SIDE_FILES, SINGLE_FILE};
use crate::error::{Error, IoContext, Result};
use std::cell::Cell;
use std::path::{Path, PathBuf};

thread_local! {
    /// The policy of the call running on this thread ([`with_follow_symlinks`]).
    static FOLLOW: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with symlinks out of model folders followed (`true`) or refused (`false`, the
/// default): one call's option, restored after it, never process-wide.
pub fn with_follow_symlinks<R>(follow: bool, f: impl FnOnce() -> R) -> R {
    let before = FOLLOW.with(|c| c.replace(follow));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            FOLLOW.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

/// Whether the running call follows symlinks out of model folders.
pub fn follow_symlinks() -> bool {
    FOLLOW.with(Cell::get)
}

/// The folder symlinks in `dir` may point into: the hub cache's repo folder when `dir` is a
/// snapshot or a folder inside one (`<repo>/snapshots/<commit>[/sub…]` next to `<repo>/blobs`,
/// as for `org/name:Q4_K_M/model-00001-of-00003.gguf`), else `dir` itself. Canonical.
pub fn allowed_root(dir: &Path) -> Result<PathBuf> {
    let root = dir.canonicalize().at(dir)?;
    for snapshot in root.ancestors() {
        let Some(snapshots) = snapshot.parent() else {
            break;
        };
        if snapshots.file_name().is_some_and(|n| n == "snapshots") {
            if let Some(repo) = snapshots.parent() {
                if repo.join("blobs").is_dir() {
                    return Ok(repo.to_path_buf());
                }
            }
        }
    }
    Ok(root)
}

/// The files of `dir` that depthprune may read: the config, the index and every shard it names,
/// `model.safetensors`, any other `*.safetensors`, the tokenizer and other side files.
fn files_read(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<String> = [CONFIG_FILE, INDEX_FILE, SINGLE_FILE]
        .iter()
        .chain(SIDE_FILES)
        .map(|s| s.to_string())
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".safetensors") || name.ends_with(".json") {
                names.push(name);
            }
        }
    }
    // Shards named by the index; a bad index is reported when it is parsed, not here.
    if let Ok(text) =
        super::limits::read_text_capped(&dir.join(INDEX_FILE), super::limits::MAX_JSON_BYTES)
    {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            if let Some(map) = v.get("weight_map").and_then(|m| m.as_object()) {
                names.extend(map.values().filter_map(|f| f.as_str()).map(String::from));
            }
        }
    }
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| !n.is_empty() && !n.contains('/') && !n.contains('\\'))
        .map(|n| dir.join(n))
        .collect()
}

/// Refuses `dir` when a file depthprune may read from it is a symlink resolving outside the
/// folder (see the module docs), unless following is switched on. Dangling links are left to the
/// open that follows, which reports them as missing.
pub fn check_folder(dir: &Path) -> Result<()> {
    if follow_symlinks() || !dir.is_dir() {
        return Ok(());
    }
    let root = allowed_root(dir)?;
    for path in files_read(dir) {
        check_link(&path, &root)?;
    }
    Ok(())
}

/// Refuses `part`, a file found beside the GGUF file `named` (the other parts of a split model,
/// issue 13), when it is a symlink resolving outside `named`'s folder (or, for a hub snapshot,
/// outside the cache's repo folder), unless following is switched on. `named` itself was chosen
/// by the user and is not checked.
pub fn check_sibling(named: &Path, part: &Path) -> Result<()> {
    if follow_symlinks() {
        return Ok(());
    }
    let dir = match named.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    check_link(part, &allowed_root(dir)?)
}

/// Refuses `path` when it is a symlink whose target is not under `root` (canonical).
fn check_link(path: &Path, root: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_symlink() {
        return Ok(());
    }
    let Ok(target) = path.canonicalize() else {
        return Ok(());
    };
    if !target.starts_with(root) {
        return Err(Error::corrupt(
            path,
            format!(
                "is a symlink to `{}`, outside the model folder; refused (pass `follow_symlinks` to read it anyway)",
                target.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_root_is_the_repo_folder() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("models--org--name");
        let snap = repo.join("snapshots").join("abc");
        std::fs::create_dir_all(&snap).unwrap();
        assert_eq!(allowed_root(&snap).unwrap(), snap.canonicalize().unwrap());
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        assert_eq!(allowed_root(&snap).unwrap(), repo.canonicalize().unwrap());
        let sub = snap.join("Q4_K_M");
        std::fs::create_dir_all(&sub).unwrap();
        assert_eq!(allowed_root(&sub).unwrap(), repo.canonicalize().unwrap());
        // A folder named `snapshots` elsewhere, with no `blobs` beside it, is no snapshot.
        let plain = t.path().join("x/snapshots/abc");
        std::fs::create_dir_all(&plain).unwrap();
        assert_eq!(allowed_root(&plain).unwrap(), plain.canonicalize().unwrap());
    }
}
