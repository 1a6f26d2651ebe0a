//! Outputs that never touch inputs (issue 33). Before a command writes anything, its output and
//! every input it reads (the model, `--from`, `--source`, calibration, evaluation, task and
//! prompt files) are resolved through symlinks and compared: an output that is an input, holds
//! one (an ancestor folder) or lies inside one (an input folder) is refused, naming both. `force`
//! replaces only an output that is none of these, as `cp a a` refuses "are the same file".
//!
//! Paths are compared canonically, and on Unix also by device and inode, so a symlink, a hard
//! link, a bind mount or `..` in either path does not hide the overlap. An output that does not
//! exist yet is resolved through its deepest existing ancestor.

use crate::error::{Error, Result};
use std::path::{Component, Path, PathBuf};

/// How an output overlaps an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// The output is the input (the same path or the same file).
    Is,
    /// The output is a folder that holds the input.
    Holds,
    /// The output lies inside the input folder.
    Inside,
}

/// A path resolved as far as it exists: canonical up to its deepest existing ancestor, the rest
/// normalized lexically, with the identity of each existing ancestor from the deepest up.
struct Resolved {
    path: PathBuf,
    exists: bool,
    is_dir: bool,
    /// (device, inode) of the path (when it exists) and of each existing ancestor.
    ids: Vec<(u64, u64)>,
}

fn resolve(path: &Path) -> Option<Resolved> {
    let abs = std::path::absolute(path).ok()?;
    let mut existing = abs.as_path();
    let mut tail = Vec::new();
    loop {
        if existing.exists() {
            break;
        }
        // The last component, `..` included (a writer creates the folders before it).
        tail.push(
            existing
                .components()
                .next_back()?
                .as_os_str()
                .to_os_string(),
        );
        existing = existing.parent()?;
    }
    let mut canon = existing.canonicalize().ok()?;
    let base = canon.clone();
    for name in tail.iter().rev() {
        match Path::new(name).components().next() {
            Some(Component::ParentDir) => {
                canon.pop();
            }
            Some(Component::CurDir) | None => {}
            _ => canon.push(name),
        }
    }
    let exists = tail.is_empty();
    let is_dir = exists && canon.is_dir();
    let ids = base.ancestors().filter_map(identity).collect();
    Some(Resolved {
        path: canon,
        exists,
        is_dir,
        ids,
    })
}

#[cfg(unix)]
fn identity(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(_: &Path) -> Option<(u64, u64)> {
    None
}

/// How `out` overlaps `input`, if at all. Inputs that do not exist overlap nothing (the command
/// reports them missing when it opens them).
pub fn overlap(out: &Path, input: &Path) -> Option<Overlap> {
    let i = resolve(input).filter(|i| i.exists)?;
    let o = resolve(out)?;
    let o_id = o.exists.then(|| o.ids.first().copied()).flatten();
    let i_id = i.ids.first().copied();
    if o.path == i.path || (o_id.is_some() && o_id == i_id) {
        return Some(Overlap::Is);
    }
    if i.path.starts_with(&o.path) || o_id.is_some_and(|id| i.ids.contains(&id)) {
        return Some(Overlap::Holds);
    }
    let inside_by_id = i.is_dir && i_id.is_some_and(|id| o.ids.contains(&id));
    if (i.is_dir && o.path.starts_with(&i.path)) || inside_by_id {
        return Some(Overlap::Inside);
    }
    None
}

/// Refuses `out` when it is, holds or lies inside one of `inputs` (see the module docs). Call it
/// before anything is written, `force` or not.
pub fn check_output<P: AsRef<Path>>(out: &Path, inputs: &[P]) -> Result<()> {
    for input in inputs {
        let input = input.as_ref();
        if input.as_os_str().is_empty() {
            continue;
        }
        let Some(how) = overlap(out, input) else {
            continue;
        };
        let (o, i) = (out.display(), input.display());
        let msg = match how {
            Overlap::Is => format!(
                "output `{o}` is the input `{i}`; refused even with `force` (write to a new path)"
            ),
            Overlap::Holds => format!(
                "output `{o}` holds the input `{i}`; replacing it would delete the input, refused even with `force`"
            ),
            Overlap::Inside => format!(
                "output `{o}` lies inside the input `{i}`; writing there would change the input, refused"
            ),
        };
        return Err(Error::Invalid(msg));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_by_path_symlink_and_parent() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("models/m");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("config.json"), "{}").unwrap();
        let models = t.path().join("models");
        assert_eq!(overlap(&m, &m), Some(Overlap::Is));
        assert_eq!(overlap(&m.join("."), &m), Some(Overlap::Is));
        assert_eq!(overlap(&models, &m), Some(Overlap::Holds));
        assert_eq!(
            overlap(t.path(), &m.join("config.json")),
            Some(Overlap::Holds)
        );
        assert_eq!(overlap(&m.join("new/out"), &m), Some(Overlap::Inside));
        assert_eq!(overlap(&m.join("config.json"), &m), Some(Overlap::Inside));
        assert_eq!(overlap(&models.join("m/../m"), &m), Some(Overlap::Is));
        assert_eq!(overlap(&models.join("x/../m"), &m), Some(Overlap::Is));
        assert_eq!(overlap(&models.join("m2"), &m), None);
        assert_eq!(overlap(&models.join("m2"), &m.join("config.json")), None);
        // A file input holds nothing: a sibling path beside it is fine.
        assert_eq!(overlap(&m.join("out.gguf"), &m.join("config.json")), None);
        #[cfg(unix)]
        {
            let link = t.path().join("link");
            std::os::unix::fs::symlink(&m, &link).unwrap();
            assert_eq!(overlap(&link, &m), Some(Overlap::Is));
            assert_eq!(overlap(&m, &link), Some(Overlap::Is));
            let up = t.path().join("up");
            std::os::unix::fs::symlink(&models, &up).unwrap();
            assert_eq!(overlap(&up, &m), Some(Overlap::Holds));
            assert_eq!(overlap(&up.join("m/sub"), &m), Some(Overlap::Inside));
            let hard = t.path().join("hard.json");
            std::fs::hard_link(m.join("config.json"), &hard).unwrap();
            assert_eq!(overlap(&hard, &m.join("config.json")), Some(Overlap::Is));
        }
        // A missing input overlaps nothing.
        assert_eq!(overlap(&models, &t.path().join("nope")), None);
    }

    #[test]
    fn refusal_names_both_paths_on_one_line() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("m");
        std::fs::create_dir_all(&m).unwrap();
        let e = check_output(t.path(), &[&m]).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains(&format!("`{}`", m.display())), "{e}");
        assert!(e.contains(&format!("`{}`", t.path().display())), "{e}");
        check_output(&t.path().join("out"), &[&m, Path::new("")]).unwrap();
    }
}
