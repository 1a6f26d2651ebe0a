//! Crash-safe outputs. Everything is written into a temporary sibling of the target whose name
//! says what it is and whose run made it (`.NAME.PID-RANDOM.depthprune-tmp`), and renamed onto
//! the target only when complete, so a run that dies leaves no output that looks whole.
//!
//! While it writes, a run holds the target's lock ([`super::lock`]): a second run for the same
//! target refuses at once. Under the lock, temporaries of the same target whose process is gone
//! are removed; those of a live process are left alone (issue 33). Without `force` the final
//! rename never replaces anything (an output that appeared meanwhile is kept, and the run
//! fails); with `force` the old target is moved aside, the new one renamed in, and the old one
//! removed.

use super::lock::{hidden_sibling, OutputLock};
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
    overwrite: Overwrite,
    committed: bool,
    _lock: OutputLock,
}

/// Whether an existing target may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    Refuse,
    Force,
}

/// A name unique to this run and this call: the process ID and a random suffix.
fn run_tag() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{}-{:08x}", std::process::id(), h.finish() as u32)
}

/// A fresh temporary sibling of `target`: `.NAME.PID-RANDOM.depthprune-tmp`.
fn tmp_path_for(target: &Path) -> Result<PathBuf> {
    hidden_sibling(target, &format!(".{}{TMP_SUFFIX}", run_tag()))
}

/// The process that made `name`, a temporary of the target named `target_name`: `Some(Some(pid))`
/// for this scheme, `Some(None)` for the older fixed name `.NAME.depthprune-tmp`, `None` for a
/// name that is not a temporary of that target.
fn tmp_owner(name: &str, target_name: &str) -> Option<Option<u32>> {
    let rest = name.strip_prefix('.')?.strip_prefix(target_name)?;
    let middle = rest.strip_suffix(TMP_SUFFIX)?;
    if middle.is_empty() {
        return Some(None);
    }
    let (pid, random) = middle.strip_prefix('.')?.split_once('-')?;
    let hex = !random.is_empty() && random.chars().all(|c| c.is_ascii_hexdigit());
    match (pid.parse::<u32>(), hex) {
        (Ok(pid), true) => Some(Some(pid)),
        _ => None,
    }
}

/// Whether process `pid` is running (on systems without `/proc`, assumed gone: the caller holds
/// the target's lock, so no other run is writing it).
fn alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    proc.is_dir() && proc.join(pid.to_string()).exists()
}

/// Removes the temporaries of `target` left by runs that are gone. Call it holding the lock.
fn remove_stale(target: &Path) {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let name = name.to_string_lossy();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let entry = e.file_name().to_string_lossy().into_owned();
        match tmp_owner(&entry, &name) {
            Some(Some(pid)) if pid == std::process::id() || alive(pid) => {}
            Some(_) => {
                let _ = remove_any(&e.path());
            }
            None => {}
        }
    }
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

fn exists_error(target: &Path) -> Error {
    Error::Invalid(format!(
        "output `{}` already exists and is not empty; pass `force` to replace it",
        target.display()
    ))
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
            return Err(exists_error(target));
        }
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        let lock = OutputLock::acquire(target)?;
        // Again under the lock: another run may have finished the target since.
        if overwrite == Overwrite::Refuse && is_nonempty(target) {
            return Err(exists_error(target));
        }
        remove_stale(target);
        let tmp = tmp_path_for(target)?;
        if is_dir {
            std::fs::create_dir(&tmp).at(&tmp)?;
        }
        Ok(AtomicOutput {
            target: target.to_path_buf(),
            tmp,
            is_dir,
            overwrite,
            committed: false,
            _lock: lock,
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

    /// Moves the finished output into place. Without `force` nothing at the target is replaced
    /// but an empty folder; with it, the previous target is removed once the new one is in place.
    pub fn commit(mut self) -> Result<PathBuf> {
        sync_path(&self.tmp, self.is_dir)?;
        let target = self.target.clone();
        let existing = std::fs::symlink_metadata(&target).ok();
        match (self.overwrite, existing) {
            (_, None) => rename_noreplace(&self.tmp, &target, self.is_dir)?,
            (Overwrite::Refuse, Some(m)) => {
                // An empty folder was allowed at the start; anything else appeared since.
                if !(m.is_dir() && std::fs::remove_dir(&target).is_ok()) {
                    return Err(appeared(&target));
                }
                rename_noreplace(&self.tmp, &target, self.is_dir)?;
            }
            (Overwrite::Force, Some(m)) if !self.is_dir && m.is_file() => {
                // A file over a file: one atomic rename.
                std::fs::rename(&self.tmp, &target).at(&target)?;
            }
            (Overwrite::Force, Some(_)) => {
                let old = tmp_path_for(&target)?;
                std::fs::rename(&target, &old).at(&target)?;
                if let Err(e) = std::fs::rename(&self.tmp, &target).at(&target) {
                    let _ = std::fs::rename(&old, &target);
                    return Err(e);
                }
                remove_any(&old)?;
            }
        }
        sync_parent(&target);
        self.committed = true;
        Ok(target)
    }
}

fn appeared(target: &Path) -> Error {
    Error::Invalid(format!(
        "output `{}` appeared while this run was writing it; it was left as it is (pass `force` to replace it)",
        target.display()
    ))
}

/// Renames `from` to `to` only if nothing is at `to`, atomically where the system can.
fn rename_noreplace(from: &Path, to: &Path, is_dir: bool) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).ok();
        if let (Some(a), Some(b)) = (c(from), c(to)) {
            // SAFETY: both are valid NUL-terminated paths that outlive the call.
            let rc = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    a.as_ptr(),
                    libc::AT_FDCWD,
                    b.as_ptr(),
                    libc::RENAME_NOREPLACE,
                )
            };
            if rc == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EEXIST) => return Err(appeared(to)),
                // A file system or kernel without the flag: the portable way below.
                Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {}
                _ => return Err(Error::io(to, e)),
            }
        }
    }
    if !is_dir {
        // A hard link fails if the name exists; then the temporary name goes.
        match std::fs::hard_link(from, to) {
            Ok(()) => return std::fs::remove_file(from).at(from),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(appeared(to)),
            Err(_) => {}
        }
    }
    // Under the target's lock, no other depthprune run can create it between these two steps.
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(appeared(to));
    }
    std::fs::rename(from, to).at(to)
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

/// Makes the rename itself durable (best effort: not every system syncs folders).
fn sync_parent(target: &Path) {
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = std::fs::File::open(parent).and_then(|f| f.sync_all());
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
        std::fs::write(out.join("new"), b"2").unwrap();
        out.commit().unwrap();
        assert!(!target.join("keep").exists());
        assert!(target.join("new").exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only the target is left"
        );
    }

    #[test]
    fn temporaries_are_unique_and_a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("r.gguf");
        let a = AtomicOutput::file(&target, Overwrite::Refuse).unwrap();
        let name = a.path().file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            tmp_owner(&name, "r.gguf"),
            Some(Some(std::process::id())),
            "{name}"
        );
        let e = AtomicOutput::file(&target, Overwrite::Force).unwrap_err();
        assert!(e.to_string().contains("another run"), "{e}");
        std::fs::write(a.path(), b"whole").unwrap();
        a.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"whole");
    }

    #[test]
    fn a_target_that_appears_meanwhile_is_kept_without_force() {
        let dir = tempfile::tempdir().unwrap();
        for is_dir in [false, true] {
            let target = dir.path().join(format!("out{is_dir}"));
            let out = AtomicOutput::begin(&target, Overwrite::Refuse, is_dir).unwrap();
            if !is_dir {
                std::fs::write(out.path(), b"mine").unwrap();
            }
            std::fs::write(&target, b"theirs").unwrap();
            let e = out.commit().unwrap_err().to_string();
            assert!(e.contains("appeared"), "{e}");
            assert_eq!(std::fs::read(&target).unwrap(), b"theirs");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn stale_temporaries_go_only_when_their_process_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("m");
        // A process ID above the kernel's limit is never running.
        let dead = dir.path().join(".m.4294967294-abcdef01.depthprune-tmp");
        let legacy = dir.path().join(".m.depthprune-tmp");
        let other = dir.path().join(".m2.4294967294-abcdef01.depthprune-tmp");
        let live = dir
            .path()
            .join(format!(".m.{}-0000beef.depthprune-tmp", std::process::id()));
        let parent_pid = std::os::unix::process::parent_id();
        let running = dir
            .path()
            .join(format!(".m.{parent_pid}-0000beef.depthprune-tmp"));
        for p in [&dead, &legacy, &other, &live, &running] {
            std::fs::create_dir(p).unwrap();
        }
        let out = AtomicOutput::dir(&target, Overwrite::Refuse).unwrap();
        assert!(!dead.exists() && !legacy.exists());
        assert!(other.exists() && live.exists() && running.exists());
        out.commit().unwrap();
        assert_eq!(tmp_owner(".m.12-ab.depthprune-tmp", "m"), Some(Some(12)));
        assert_eq!(tmp_owner(".m.x.12-ab.depthprune-tmp", "m"), None);
        assert_eq!(tmp_owner(".m.12-zz.depthprune-tmp", "m"), None);
    }
}
