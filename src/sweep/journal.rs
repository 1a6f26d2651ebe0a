//! The study's journal (issue 33): a sweep appends each finished cell to `cells.jsonl` in its
//! study folder as soon as it is measured (one JSON line, flushed to disk), beside
//! `sweep-settings.json`, the settings that produced the cells, and `scores.jsonl`, each
//! strategy's scores once scored. A sweep that is interrupted, by
//! a signal or a kill, keeps every cell it finished; `sweep --resume` reads them back instead of
//! measuring them again, refusing settings that differ; `report` on a study whose journal lacks
//! cells names the missing ones.
//!
//! A cell is stored with its per-window sums, not only its figures, so the best choice at each
//! count and its paired intervals come out of a resumed study exactly as from an uninterrupted
//! one (floats are written shortest-exact and read back bit for bit).

use super::{Cell, Healed, SweepRow};
use crate::error::{Error, IoContext, Result};
use crate::score::LayerScores;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The journal of finished cells, one JSON object per line.
pub const CELLS_FILE: &str = "cells.jsonl";
/// The settings the journal's cells were measured with, and every cell of the study.
pub const SETTINGS_FILE: &str = "sweep-settings.json";
/// Each strategy's scores, saved once scored, so a resumed sweep does not score again.
pub const SCORES_FILE: &str = "scores.jsonl";

/// One finished cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub strategy: String,
    pub k: usize,
    pub row: SweepRow,
    pub cell: Cell,
    #[serde(default)]
    pub healed: Option<Healed>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub healed_also: BTreeMap<String, Healed>,
}

/// The cells of a study already measured, and where new ones go. Nothing is written before
/// the first cell is finished: a sweep refused on its inputs leaves no study folder.
#[derive(Debug, Default)]
pub struct Journal {
    /// The study folder, and the settings to write there with the first line.
    dir: Option<(PathBuf, Option<Value>)>,
    /// The open journal files, by name, once their first line is written.
    files: HashMap<&'static str, std::fs::File>,
    resume: bool,
    done: HashMap<(String, usize), Entry>,
    scores: HashMap<String, Scored>,
    /// Score lines waiting for the first cell (or a stop): a sweep that fails before its first
    /// cell writes nothing.
    pending_scores: Vec<String>,
}

/// One strategy's scores on the calibration text, and on each calibration resample.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Scored {
    pub strategy: String,
    pub scores: LayerScores,
    #[serde(default)]
    pub resampled: Vec<LayerScores>,
}

impl Journal {
    /// No journal: nothing is read or written (a sweep without an output folder).
    pub fn none() -> Self {
        Journal::default()
    }

    /// The journal of the study in `dir`, measured with `settings`. With `resume`, the cells
    /// and scores already in it are kept (a torn last line, left by a kill during its write, is
    /// cut off) once the settings are found equal to the saved ones; without, it starts empty
    /// when the first line is written.
    pub fn open(dir: &Path, settings: Value, resume: bool) -> Result<Self> {
        let saved = dir.join(SETTINGS_FILE);
        let pending = if resume && saved.is_file() {
            check_settings(dir, &settings)?;
            None
        } else {
            Some(settings)
        };
        let mut journal = Journal {
            dir: Some((dir.to_path_buf(), pending)),
            resume,
            ..Journal::default()
        };
        if resume {
            let cells: Vec<Entry> = read_back(&dir.join(CELLS_FILE))?;
            journal.done = cells
                .into_iter()
                .map(|e| ((e.strategy.clone(), e.k), e))
                .collect();
            let scores: Vec<Scored> = read_back(&dir.join(SCORES_FILE))?;
            journal.scores = scores
                .into_iter()
                .map(|s| (s.strategy.clone(), s))
                .collect();
        }
        Ok(journal)
    }

    /// How many cells were read back.
    pub fn resumed(&self) -> usize {
        self.done.len()
    }

    /// The cell of `strategy` at `k`, when it was measured before.
    pub(crate) fn take(&mut self, strategy: &str, k: usize) -> Option<Entry> {
        self.done.remove(&(strategy.to_string(), k))
    }

    /// The scores of `strategy` (and of its calibration resamples), when they were saved before.
    pub fn take_scores(&mut self, strategy: &str) -> Option<(LayerScores, Vec<LayerScores>)> {
        self.scores
            .remove(strategy)
            .map(|s| (s.scores, s.resampled))
    }

    /// Saves the scores of `strategy` with the first cell (or at a stop, [`Self::flush_scores`]),
    /// when they read back exactly (scores that JSON cannot hold, a NaN say, are computed again
    /// on resume instead).
    pub fn record_scores(
        &mut self,
        strategy: &str,
        scores: &LayerScores,
        resampled: &[LayerScores],
    ) -> Result<()> {
        let s = Scored {
            strategy: strategy.to_string(),
            scores: scores.clone(),
            resampled: resampled.to_vec(),
        };
        let line = serde_json::to_string(&s).map_err(|e| Error::Invalid(e.to_string()))?;
        let again = serde_json::from_str::<Scored>(&line)
            .ok()
            .and_then(|s| serde_json::to_string(&s).ok());
        if again.as_deref() == Some(line.as_str()) {
            self.pending_scores.push(line);
        }
        Ok(())
    }

    /// Writes the scores waiting for the first cell.
    pub fn flush_scores(&mut self) -> Result<()> {
        for line in std::mem::take(&mut self.pending_scores) {
            self.append(SCORES_FILE, line)?;
        }
        Ok(())
    }

    /// Appends a finished cell and flushes it to disk. A cell with a figure that is not a
    /// number is refused, and nothing of it saved.
    pub(crate) fn record(&mut self, entry: &Entry, model: &Path) -> Result<()> {
        crate::eval::ensure_finite(&entry.row, "the sweep", model)?;
        crate::eval::ensure_finite(&entry.cell, "the sweep", model)?;
        let line = serde_json::to_string(entry).map_err(|e| Error::Invalid(e.to_string()))?;
        self.flush_scores()?;
        self.append(CELLS_FILE, line)
    }

    /// Appends `line` to the journal file `name` and flushes it to disk; the first line makes
    /// the study folder and writes its settings.
    fn append(&mut self, name: &'static str, mut line: String) -> Result<()> {
        let Some((dir, settings)) = &mut self.dir else {
            return Ok(());
        };
        let path = dir.join(name);
        if !self.files.contains_key(name) {
            std::fs::create_dir_all(&*dir).at(&*dir)?;
            if let Some(s) = settings.take() {
                write_settings(dir, &s)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .at(&path)?;
            if !self.resume {
                file.set_len(0).at(&path)?;
            }
            self.files.insert(name, file);
        }
        let Some(file) = self.files.get_mut(name) else {
            return Ok(());
        };
        line.push('\n');
        file.write_all(line.as_bytes()).at(&path)?;
        file.sync_data().at(&path)
    }
}

/// The whole lines of the journal file at `path`, a torn last line cut off the file.
fn read_back<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let (entries, whole) = read_entries(path)?;
    if whole < std::fs::metadata(path).map_or(0, |m| m.len()) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .at(path)?;
        f.set_len(whole).at(path)?;
        f.sync_all().at(path)?;
    }
    Ok(entries)
}

/// The whole entries of the journal at `path` (none when it does not exist), and the length in
/// bytes of the lines they fill. Only the last line may be torn; a bad line before it is refused.
fn read_entries<T: serde::de::DeserializeOwned>(path: &Path) -> Result<(Vec<T>, u64)> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut entries = Vec::new();
    let mut whole = 0u64;
    let mut lines = text.split_inclusive(|&b| b == b'\n').enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        let last = lines.peek().is_none();
        let parsed = line
            .strip_suffix(b"\n")
            .and_then(|l| serde_json::from_slice::<T>(l).ok());
        match parsed {
            Some(e) => {
                entries.push(e);
                whole += line.len() as u64;
            }
            None if last => break,
            None => {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "line {} cannot be read; the study's journal is damaged",
                        i + 1
                    ),
                ))
            }
        }
    }
    Ok((entries, whole))
}

/// The cells of the study in `dir` that its journal lacks, when `dir` holds a journaled study
/// (`None` for a study written before journals, or no study).
pub fn missing_cells(dir: &Path) -> Result<Option<Vec<(String, usize)>>> {
    let settings = dir.join(SETTINGS_FILE);
    if !settings.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&settings).at(&settings)?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::corrupt(&settings, format!("not JSON: {e}")))?;
    let cells: Vec<(String, usize)> = serde_json::from_value(v["cells"].clone())
        .map_err(|e| Error::corrupt(&settings, format!("`cells`: {e}")))?;
    let (entries, _) = read_entries::<Entry>(&dir.join(CELLS_FILE))?;
    Ok(Some(
        cells
            .into_iter()
            .filter(|(s, k)| !entries.iter().any(|e| &e.strategy == s && e.k == *k))
            .collect(),
    ))
}

/// Missing cells in words: `angular at 3, 4; bi at 8`.
pub fn describe_cells(cells: &[(String, usize)]) -> String {
    let mut by: Vec<(&str, Vec<String>)> = Vec::new();
    for (s, k) in cells {
        match by.iter_mut().find(|(name, _)| name == s) {
            Some((_, ks)) => ks.push(k.to_string()),
            None => by.push((s, vec![k.to_string()])),
        }
    }
    by.iter()
        .map(|(s, ks)| format!("{s} at {}", ks.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Refuses `settings` when they differ from those saved in the study in `dir`, naming the first
/// that differs.
fn check_settings(dir: &Path, settings: &Value) -> Result<()> {
    let path = dir.join(SETTINGS_FILE);
    let text = std::fs::read_to_string(&path).at(&path)?;
    let old: Value =
        serde_json::from_str(&text).map_err(|e| Error::corrupt(&path, format!("not JSON: {e}")))?;
    if let Some((key, was, now)) = first_difference(&old, settings, "") {
        return Err(Error::Invalid(format!(
            "cannot resume the study in `{}`: `{key}` was {was} there, now {now}; resume with the same settings, or start over with `force`",
            dir.display()
        )));
    }
    Ok(())
}

/// Writes `settings` into the study folder `dir`, atomically.
fn write_settings(dir: &Path, settings: &Value) -> Result<()> {
    let path = dir.join(SETTINGS_FILE);
    let mut text =
        serde_json::to_string_pretty(settings).map_err(|e| Error::Invalid(e.to_string()))?;
    text.push('\n');
    let tmp = dir.join(format!(".{SETTINGS_FILE}.depthprune-tmp"));
    std::fs::write(&tmp, text).at(&tmp)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .at(&tmp)?;
    std::fs::rename(&tmp, &path).at(&path)
}

/// The first key (dotted below the top level) whose value differs, with both values.
fn first_difference(old: &Value, new: &Value, at: &str) -> Option<(String, String, String)> {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys = a.keys().chain(b.keys().filter(|k| !a.contains_key(*k)));
            for k in keys {
                let name = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                let (x, y) = (
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                );
                if let Some(d) = first_difference(x, y, &name) {
                    return Some(d);
                }
            }
            None
        }
        _ if old == new => None,
        _ => Some((at.to_string(), old.to_string(), new.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_changed_setting_is_named() {
        let a = json!({"request": {"eval_samples": 8, "seed": 1}, "model": "m"});
        let b = json!({"request": {"eval_samples": 4, "seed": 1}, "model": "m"});
        let (k, was, now) = first_difference(&a, &b, "").unwrap();
        assert_eq!(
            (k.as_str(), was.as_str(), now.as_str()),
            ("request.eval_samples", "8", "4")
        );
        assert!(first_difference(&a, &a, "").is_none());
        let c =
            json!({"request": {"eval_samples": 8, "seed": 1, "tasks": "t.jsonl"}, "model": "m"});
        assert_eq!(first_difference(&a, &c, "").unwrap().0, "request.tasks");
    }

    #[test]
    fn missing_cells_are_described_by_strategy() {
        let cells = [
            ("angular".to_string(), 3),
            ("angular".into(), 4),
            ("bi".into(), 8),
        ];
        assert_eq!(describe_cells(&cells), "angular at 3, 4; bi at 8");
    }
}
