//! The Hugging Face cache layout, shared with `huggingface_hub` and other tools:
//!
//! ```text
//! <root>/models--ORG--NAME/      (datasets: datasets--ORG--NAME/, the same inside)
//!   refs/<branch-or-tag>          a commit hash (branches with `/`, like `refs/pr/3`, nest)
//!   blobs/<etag>                  file contents, named by ETag (the SHA-256 for LFS files)
//!   blobs/<etag>.incomplete       a download in progress, resumed where it stopped
//!   snapshots/<commit>/<file>     relative symlinks into blobs/
//! ```
//!
//! A snapshot never changes once written (a commit is immutable), so a file found there is used
//! without asking the hub. Writes are atomic: blobs are renamed into place when complete and
//! verified, links and refs are written under a temporary name and renamed.
//!
//! Several processes may fill one cache at once (two `prune org/name` runs, or depthprune beside
//! `huggingface_hub`). A blob is downloaded only under an exclusive lock on
//! `<root>/.locks/models--ORG--NAME/<etag>.lock`, the file `huggingface_hub` locks for the same
//! blob, so one process writes `<etag>.incomplete` while the others wait and then find the blob
//! complete (issue 13).

use super::model_ref::{is_commit, validate_repo_path};
use crate::checkpoint::hf::{self, CONFIG_FILE, SINGLE_FILE};
use crate::error::{Error, IoContext, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What a repo holds: the hub keeps models and datasets apart, in its URLs and in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    Model,
    Dataset,
}

impl RepoKind {
    /// `models` or `datasets`: the cache folder's prefix and the API's path segment.
    pub fn plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }

    /// `model` or `dataset`, for messages.
    pub fn noun(self) -> &'static str {
        match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        }
    }

    /// Before `{repo}` in a file URL: nothing for models, `datasets/` for datasets.
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        }
    }
}

/// One repo's folder in the cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    /// The cache root.
    pub root: PathBuf,
    /// `models--ORG--NAME` (or `datasets--ORG--NAME`).
    pub dir: PathBuf,
}

impl RepoCache {
    /// The folder of model `repo` (`org/name`, already validated) under `root`.
    pub fn new(root: &Path, repo: &str) -> Self {
        Self::of_kind(root, repo, RepoKind::Model)
    }

    /// The folder of `repo` of `kind` under `root`.
    pub fn of_kind(root: &Path, repo: &str, kind: RepoKind) -> Self {
        RepoCache {
            root: root.to_path_buf(),
            dir: root.join(format!("{}--{}", kind.plural(), repo.replace('/', "--"))),
        }
    }

    /// The commit a revision names in the cache: the revision itself when it is a commit hash,
    /// else the hash in `refs/<revision>`. `None` when the cache has no such ref.
    pub fn commit_for(&self, revision: &str) -> Result<Option<String>> {
        if is_commit(revision) {
            return Ok(Some(revision.to_string()));
        }
        let path = self.dir.join("refs").join(revision);
        // A missing ref, or a folder of refs such as `refs/pr`, names no commit.
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).at(&path)?;
        let commit = text.trim();
        if !is_commit(commit) {
            return Err(Error::corrupt(
                &path,
                format!("holds `{commit}`, not a 40-hex commit hash; delete the file to refetch the ref"),
            ));
        }
        Ok(Some(commit.to_string()))
    }

    /// Records that `revision` points at `commit` (nothing to do when they are the same).
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.dir.join("refs").join(revision);
        write_atomic(&path, commit.as_bytes())
    }

    /// `snapshots/<commit>`.
    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    /// The cached file, if the snapshot has it and its link resolves to a file.
    pub fn file(&self, commit: &str, file: &str) -> Option<PathBuf> {
        let p = self.snapshot(commit).join(file);
        p.is_file().then_some(p)
    }

    /// `blobs/<etag>`.
    pub fn blob(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(etag)
    }

    /// `<root>/.locks/models--ORG--NAME/<etag>.lock`, where `huggingface_hub` locks the same blob.
    pub fn lock_path(&self, etag: &str) -> PathBuf {
        let repo = self.dir.file_name().unwrap_or_default();
        self.root
            .join(".locks")
            .join(repo)
            .join(format!("{etag}.lock"))
    }

    /// Holds the exclusive lock on blob `etag` (an `flock` on Unix, as `huggingface_hub` takes
    /// it), calling `waiting` first if another process holds it and waiting for it; the lock is
    /// released when the returned guard is dropped.
    pub fn lock_blob(&self, etag: &str, waiting: impl FnOnce()) -> Result<BlobLock> {
        let path = self.lock_path(etag);
        let parent = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(parent).at(parent)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                waiting();
                file.lock().at(&path)?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e).at(&path),
        }
        Ok(BlobLock { _file: file })
    }

    /// `blobs/<etag>.incomplete`.
    pub fn incomplete(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{etag}.incomplete"))
    }

    /// Links `snapshots/<commit>/<file>` to `blobs/<etag>` and returns the link's path.
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf> {
        validate_repo_path(file).map_err(Error::Invalid)?;
        let link = self.snapshot(commit).join(file);
        let parent = link.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent).at(parent)?;
        let tmp = temp_sibling(&link);
        let _ = std::fs::remove_file(&tmp);
        make_link(&self.blob(etag), &tmp, file)?;
        std::fs::rename(&tmp, &link).at(&link)?;
        Ok(link)
    }

    /// Whether a snapshot holds complete safetensors weights: every shard of its index, or
    /// `model.safetensors`.
    pub fn has_all_weights(&self, commit: &str) -> bool {
        let dir = self.snapshot(commit);
        match hf::read_index(&dir) {
            Ok(Some(index)) => index.files.iter().all(|f| dir.join(f).is_file()),
            Ok(None) => dir.join(SINGLE_FILE).is_file(),
            Err(_) => false,
        }
    }

    /// Whether the snapshot could serve a config-only command.
    pub fn has_config(&self, commit: &str) -> bool {
        self.file(commit, CONFIG_FILE).is_some()
    }
}

/// An exclusive lock on one blob, held until dropped (closing the file releases it).
#[derive(Debug)]
pub struct BlobLock {
    _file: std::fs::File,
}

/// A temporary name beside `path`, unique to this process and call, so that concurrent writers
/// (other processes, or threads of this one) never share one.
fn temp_sibling(path: &Path) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let parent = path.parent().unwrap_or(Path::new("."));
    parent.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes `bytes` to `path` through a temporary sibling renamed over it, so a reader (another
/// process) sees the old content or the new, never a part.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).at(parent)?;
    let tmp = temp_sibling(path);
    if let Err(e) = std::fs::write(&tmp, bytes).at(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).at(path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// A relative symlink from `link` (at `snapshots/<commit>/<file>`) to `blob`, as
/// `huggingface_hub` makes them; a copy where symlinks are not available.
#[cfg(unix)]
fn make_link(blob: &Path, link: &Path, file: &str) -> Result<()> {
    let depth = file.split('/').count() + 1;
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.push("blobs");
    target.push(blob.file_name().unwrap_or_default());
    std::os::unix::fs::symlink(&target, link).at(link)
}

#[cfg(not(unix))]
fn make_link(blob: &Path, link: &Path, _file: &str) -> Result<()> {
    std::fs::copy(blob, link).at(link).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: &str = "1111111111111111111111111111111111111111";

    #[test]
    fn refs_links_and_lookups() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = RepoCache::new(tmp.path(), "org/name");
        assert!(cache.dir.ends_with("models--org--name"));
        assert_eq!(cache.commit_for("main").unwrap(), None);
        cache.write_ref("main", C1).unwrap();
        cache.write_ref("refs/pr/3", C1).unwrap();
        assert_eq!(cache.commit_for("main").unwrap().as_deref(), Some(C1));
        assert_eq!(cache.commit_for("refs/pr/3").unwrap().as_deref(), Some(C1));
        assert_eq!(cache.commit_for("refs/pr").unwrap(), None);
        assert_eq!(cache.commit_for(C1).unwrap().as_deref(), Some(C1));

        std::fs::create_dir_all(cache.dir.join("blobs")).unwrap();
        std::fs::write(cache.blob("e1"), b"{}").unwrap();
        let link = cache.link(C1, "sub/config.json", "e1").unwrap();
        assert_eq!(std::fs::read(&link).unwrap(), b"{}");
        assert_eq!(cache.file(C1, "sub/config.json"), Some(link));
        assert_eq!(cache.file(C1, "config.json"), None);
        let data = RepoCache::of_kind(tmp.path(), "org/name", RepoKind::Dataset);
        assert!(data.dir.ends_with("datasets--org--name"));
        assert_eq!(
            data.lock_path("e1"),
            tmp.path().join(".locks/datasets--org--name/e1.lock")
        );
    }

    #[test]
    fn blob_locks_live_where_huggingface_hub_puts_them() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = RepoCache::new(tmp.path(), "org/name");
        assert_eq!(
            cache.lock_path("e1"),
            tmp.path().join(".locks/models--org--name/e1.lock")
        );
        let held = cache.lock_blob("e1", || panic!("nobody holds it")).unwrap();
        let other = std::fs::File::open(cache.lock_path("e1")).unwrap();
        assert!(other.try_lock().is_err(), "the lock must be exclusive");
        drop(held);
        other.try_lock().unwrap();
    }

    #[test]
    fn a_ref_that_is_not_a_hash_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = RepoCache::new(tmp.path(), "org/name");
        std::fs::create_dir_all(cache.dir.join("refs")).unwrap();
        std::fs::write(cache.dir.join("refs/main"), "not-a-hash").unwrap();
        let e = cache.commit_for("main").unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("not a 40-hex commit hash"));
    }
}
