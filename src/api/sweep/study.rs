//! The study folder of a sweep (issue 33): checked against every input before anything is
//! written, locked for the run, and holding the journal of finished cells with the settings that
//! produced them ([`crate::sweep::journal`]), so an interrupted sweep resumes where it stopped.

use super::SweepRequest;
use crate::base::guard::check_output;
use crate::checkpoint::lock::OutputLock;
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use crate::sweep::journal::CELLS_FILE;
use crate::sweep::{Journal, StrategySpec};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Options that change how a sweep runs or what it writes besides the cells, not the cells'
/// figures: a study resumes under other values of these.
const NOT_SETTINGS: &[&str] = &[
    "out",
    "report",
    "report_k",
    "resume",
    "force",
    "threads",
    "follow_symlinks",
];

/// A study folder held by this run.
pub(super) struct Study {
    dir: PathBuf,
    _lock: OutputLock,
}

impl Study {
    /// Checks `out` against the model (as `given` and as `resolved` on disk) and the text files,
    /// and takes its lock; the folder is made when the first cell is saved. A folder with saved
    /// cells is refused unless the request resumes the study or starts it over.
    pub fn open(out: &Path, req: &SweepRequest, given: &Path, resolved: &Path) -> Result<Self> {
        let tasks = task_paths(req)?;
        let mut inputs = vec![given, resolved, req.eval.as_path()];
        inputs.extend(
            [&req.calib.text.calib, &req.select_on]
                .into_iter()
                .flatten()
                .map(PathBuf::as_path),
        );
        inputs.extend(tasks.iter().map(|(_, p)| p.as_path()));
        check_output(out, &inputs)?;
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        let lock = OutputLock::acquire(out)?;
        let saved = std::fs::metadata(out.join(CELLS_FILE)).is_ok_and(|m| m.len() > 0);
        if saved && !req.resume && !req.force {
            return Err(Error::Invalid(format!(
                "`{}` holds the saved cells of a study (`{CELLS_FILE}`); pass `resume` to continue it, or `force` to start over",
                out.display()
            )));
        }
        Ok(Study {
            dir: out.to_path_buf(),
            _lock: lock,
        })
    }

    /// The study's journal; resuming, its settings are checked against the saved ones.
    pub fn journal(
        &self,
        req: &SweepRequest,
        given: &Path,
        resolved: &Path,
        specs: &[StrategySpec],
        counts: &[usize],
        progress: &dyn Progress,
    ) -> Result<Journal> {
        let cells: Vec<(String, usize)> = specs
            .iter()
            .flat_map(|s| counts.iter().map(move |&k| (s.label(), k)))
            .collect();
        let settings = settings(req, given, resolved, &cells)?;
        let journal = Journal::open(&self.dir, settings, req.resume)?;
        if journal.resumed() > 0 {
            progress.message(&format!(
                "resuming: {} of {} cells saved in `{}`",
                journal.resumed(),
                cells.len(),
                self.dir.join(CELLS_FILE).display()
            ));
        }
        Ok(journal)
    }
}

/// What the cells' figures depend on: the request (less [`NOT_SETTINGS`]), the model as named
/// and its size on disk, the SHA-256 of each text file, and the cells of the study.
fn settings(
    req: &SweepRequest,
    given: &Path,
    resolved: &Path,
    cells: &[(String, usize)],
) -> Result<Value> {
    let mut v = serde_json::to_value(req).map_err(|e| Error::Invalid(e.to_string()))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(Error::Invalid("sweep settings are not an object".into()));
    };
    obj.retain(|k, _| !NOT_SETTINGS.contains(&k.as_str()));
    obj.insert("model".into(), json!(given.display().to_string()));
    obj.insert("model_bytes".into(), json!(bytes_on_disk(resolved)));
    let files = [
        ("calib", req.calib.text.calib.as_ref()),
        ("eval", Some(&req.eval)),
        ("select_on", req.select_on.as_ref()),
    ];
    // A name that is not a file (a missing file is reported when it is read) is compared as given.
    for (name, file) in files {
        if let Some(f) = file.filter(|f| f.is_file()) {
            obj.insert(format!("{name}_sha256"), json!(sha256(f)?));
        }
    }
    // The tasks' data: our own JSONL file as one digest (as before task lists), a list as the
    // digest of each task's file, or of each file in its folder.
    match task_paths(req)?.as_slice() {
        [(None, f)] if f.is_file() => {
            obj.insert("tasks_sha256".into(), json!(sha256(f)?));
        }
        [] | [(None, _)] => {}
        named => {
            let mut digests = serde_json::Map::new();
            for (name, path) in named {
                let name = name.clone().unwrap_or_default();
                digests.insert(name, json!(tree_sha256(path)?));
            }
            obj.insert("tasks_sha256".into(), Value::Object(digests));
        }
    }
    obj.insert("cells".into(), json!(cells));
    Ok(v)
}

/// Each task's name (none for our own JSONL file) and the file or folder its data is in.
fn task_paths(req: &SweepRequest) -> Result<Vec<(Option<String>, PathBuf)>> {
    use crate::api::tasks::{parse_tasks, TaskSource};
    let Some(arg) = &req.tasks else {
        return Ok(Vec::new());
    };
    Ok(parse_tasks(arg)?
        .into_iter()
        .map(|s| match s {
            TaskSource::File(f) => (None, f),
            // A task named alone is read from the Hub cache, recorded by its dataset's name.
            TaskSource::Named { spec, path } => (
                Some(spec.name.to_string()),
                path.unwrap_or_else(|| PathBuf::from(spec.hub.repo)),
            ),
        })
        .collect())
}

/// The digest of a file, or of the names and digests of the files in a folder (in name order);
/// nothing for a path that is neither.
fn tree_sha256(path: &Path) -> Result<Option<String>> {
    if path.is_file() {
        return sha256(path).map(Some);
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return Ok(None);
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut h = Sha256::new();
    for f in &files {
        h.update(f.file_name().unwrap_or_default().as_encoded_bytes());
        h.update([0]);
        h.update(sha256(f)?.as_bytes());
        h.update([b'\n']);
    }
    Ok(Some(format!("{:x}", h.finalize())))
}

/// The size of a model file, or of the files in a model folder.
fn bytes_on_disk(path: &Path) -> u64 {
    match std::fs::read_dir(path) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| std::fs::metadata(e.path()).ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum(),
        Err(_) => std::fs::metadata(path).map_or(0, |m| m.len()),
    }
}

fn sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).at(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).at(path)?;
    Ok(format!("{:x}", h.finalize()))
}
