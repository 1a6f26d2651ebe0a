//! Crash-safe outputs. Everything is written into a temporary sibling of the target whose name
//! says what it is (`.NAME.depthprune-tmp`), and renamed over the target only when complete, so a
//! run that dies leaves no output that looks whole. The next run removes stale temporaries.

use crate::error::{Error, IoContext, Result};
use std::path::{Path, PathBuf};

/// The suffix of temporary outputs; a folder or file ending in it is never a finished output.
pub const TMP_SUFFIX: &str = ".depthprune-tmp";

/// An output (folder or single file) being written at a temporary path.
#[derive(Debug)]
pub struct AtomicOutput {
    target: PathBuf,
    tmp: PathBuf,
    is_dir: bool,
    committed: bool,
}

/// Whether an existing target may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    Refuse,
    Force,
}

fn tmp_path_for(target: &Path) -> Result<PathBuf> {
    let name = target.file_name().ok_or_else(|| {
        Error::Invalid(format!("`{}` is not a valid output path", target.display()))
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(TMP_SUFFIX);
    Ok(target.with_file_name(tmp_name))
}

fn is_nonempty(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true),
        Ok(_) => true,
        Err(_) => false,
    }
}

impl AtomicOutput {
    /// Starts writing a folder that will appear at `target`.
    pub fn dir(target: &Path, overwrite: Overwrite) -> Result<Self> {
        Self::begin(target, overwrite, true)
    }

    /// Starts writing a single file that will appear at `target`.
    pub fn file(target: &Path, overwrite: Overwrite) -> Result<Self> {
        Self::begin(target, overwrite, false)
    }

    fn begin(target: &Path, overwrite: Overwrite, is_dir: bool) -> Result<Self> {
        if overwrite == Overwrite::Refuse && is_nonempty(target) {
            return Err(Error::Invalid(format!(
                "output `{}` already exists and is not empty; pass `force` to replace it",
                target.display()
            )));
        }
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        let tmp = tmp_path_for(target)?;
        remove_any(&tmp)?;
        if is_dir {
            std::fs::create_dir(&tmp).at(&tmp)?;
        }
        Ok(AtomicOutput {
            target: target.to_path_buf(),
            tmp,
            is_dir,
            committed: false,
        })
    }

    /// Where to write: the temporary folder, or the temporary file's path.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// A path inside the temporary folder.
    pub fn join(&self, name: &str) -> PathBuf {
        debug_assert!(self.is_dir);
        self.tmp.join(name)
    }

    /// Moves the finished output into place, replacing any previous target.
    pub fn commit(mut self) -> Result<PathBuf> {
        sync_path(&self.tmp, self.is_dir)?;
        if self.target.exists() {
            remove_any(&self.target)?;
        }
        std::fs::rename(&self.tmp, &self.target).at(&self.target)?;
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for AtomicOutput {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: an error here must not hide the error that got us here.
            let _ = remove_any(&self.tmp);
        }
    }
}

fn remove_any(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).at(path),
        Ok(_) => std::fs::remove_file(path).at(path),
        Err(_) => Ok(()),
    }
}

fn sync_path(path: &Path, is_dir: bool) -> Result<()> {
    if is_dir {
        for entry in std::fs::read_dir(path).at(path)? {
            let p = entry.at(path)?.path();
            if p.is_file() {
                std::fs::File::open(&p).and_then(|f| f.sync_all()).at(&p)?;
            }
        }
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .at(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_at_target_until_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let out = AtomicOutput::dir(&target, Overwrite::Refuse).unwrap();
        std::fs::write(out.join("a.txt"), b"x").unwrap();
        assert!(!target.exists());
        out.commit().unwrap();
        assert_eq!(std::fs::read(target.join("a.txt")).unwrap(), b"x");
    }

    #[test]
    fn dropped_output_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.gguf");
        {
            let out = AtomicOutput::file(&target, Overwrite::Refuse).unwrap();
            std::fs::write(out.path(), b"partial").unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn refuses_nonempty_target_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"1").unwrap();
        let e = AtomicOutput::dir(&target, Overwrite::Refuse).unwrap_err();
        assert!(e.to_string().contains("`force`"), "{e}");
        let out = AtomicOutput::dir(&target, Overwrite::Force).unwrap();
        out.commit().unwrap();
        assert!(!target.join("keep").exists());
    }
}
