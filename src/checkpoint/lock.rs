//! An exclusive lock on an output while a run writes it (issue 33): two runs that race for one
//! `--out` cannot both write it, and the one that comes second refuses at once, naming the
//! holder. The lock is an advisory `flock` on a file beside the target, `.NAME.depthprune-lock`,
//! which holds the writer's process ID and is removed when the writer is done. The operating
//! system drops the lock of a process that dies, so a lock file left by a killed run locks
//! nothing.

use crate::error::{Error, IoContext, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The suffix of lock files.
pub const LOCK_SUFFIX: &str = ".depthprune-lock";

/// A hidden sibling of `target`: `.NAME` followed by `suffix`.
pub(crate) fn hidden_sibling(target: &Path, suffix: &str) -> Result<PathBuf> {
    let name = target.file_name().ok_or_else(|| {
        Error::Invalid(format!("`{}` is not a valid output path", target.display()))
    })?;
    let mut s = std::ffi::OsString::from(".");
    s.push(name);
    s.push(suffix);
    Ok(target.with_file_name(s))
}

/// The lock on one output, held until dropped.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
    /// The locked file; `None` where the file system has no locks (then only the other checks
    /// guard the output).
    file: Option<File>,
}

impl OutputLock {
    /// Takes the lock on `target` (whose folder must exist), or refuses when another run holds
    /// it.
    pub fn acquire(target: &Path) -> Result<Self> {
        let path = hidden_sibling(target, LOCK_SUFFIX)?;
        // A holder that is done removes the file while still holding the lock; a run that
        // opened the old file before then locks a file no longer at `path`, and tries again.
        for _ in 0..16 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .at(&path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = match holder.trim().parse::<u32>() {
                        Ok(pid) => format!(" (process {pid})"),
                        Err(_) => String::new(),
                    };
                    return Err(Error::Invalid(format!(
                        "output `{}` is being written by another run{holder}; refused (lock `{}`)",
                        target.display(),
                        path.display()
                    )));
                }
                Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                    return Ok(OutputLock { path, file: None });
                }
                Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
            if !same_file(&file, &path) {
                continue;
            }
            file.set_len(0).at(&path)?;
            file.rewind().at(&path)?;
            write!(file, "{}", std::process::id()).at(&path)?;
            return Ok(OutputLock {
                path,
                file: Some(file),
            });
        }
        Err(Error::Invalid(format!(
            "output `{}`: cannot take the lock `{}` (it keeps being replaced)",
            target.display(),
            path.display()
        )))
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &File, path: &Path) -> bool {
    path.exists()
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still held (see `acquire`); the lock goes with the file handle.
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.gguf");
        let a = OutputLock::acquire(&target).unwrap();
        let lock = dir.path().join(".out.gguf.depthprune-lock");
        assert_eq!(
            std::fs::read_to_string(&lock).unwrap(),
            std::process::id().to_string()
        );
        let e = OutputLock::acquire(&target).unwrap_err().to_string();
        assert!(e.contains("another run") && e.contains("out.gguf"), "{e}");
        drop(a);
        assert!(!lock.exists());
        let _b = OutputLock::acquire(&target).unwrap();
    }
}
