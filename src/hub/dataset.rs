//! Datasets by name (`eval --tasks mmlu`): the data files of one config's splits, found the way
//! `datasets.load_dataset(repo, config)` finds them, kept in the standard HF cache
//! (`datasets--ORG--NAME/{refs,blobs,snapshots}`) with the model client's downloads and locks.
//!
//! Which files, online:
//! 1. The `main` branch's file list and the card's metadata, from one request to
//!    `{endpoint}/api/datasets/{repo}/revision/main`. When the card declares the config
//!    (`configs: [{config_name, data_files: [{split, path}]}]`, as `push_to_hub` and the hub's own
//!    conversions write it), the split's `path` patterns name its files; otherwise the layout
//!    `datasets` falls back to: `{config}/{split}-*`, `data/{split}-*`, `{split}-*`. With no config
//!    asked for, the card's default config is used (`default: true`, or its only one).
//! 2. When `main` has no parquet or JSON Lines file for the split (a repo of CSV files, or of a
//!    loading script, which `datasets` 5 refuses), the hub's parquet export: the branch
//!    `refs/convert/parquet`, laid out `{config}/{split}/NNNN.parquet` (`default` for no config).
//!    Here we go further than `datasets`, which reads only the export's metadata.
//!
//! In the cache, a snapshot (of `main`, then of the export) that holds the split's files in those
//! layouts is used without any request, so a second run works offline; sharded files
//! (`…-00000-of-00003.parquet`) count only when every shard is there. With `HF_HUB_OFFLINE` set,
//! a missing split is one error line naming the dataset.

use super::cache::{RepoCache, RepoKind};
use super::client::{Client, RepoInfo};
use super::config::HubConfig;
use super::error::HubError;
use super::fetch::{ensure_file, Revision};
use super::glob::glob;
use super::model_ref::{validate_repo_id, DEFAULT_REVISION};
use crate::error::{Error, Result};
use crate::progress::Progress;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The branch where the hub keeps its parquet conversion of a dataset.
pub const PARQUET_EXPORT: &str = "refs/convert/parquet";

/// The file kinds the task reader takes.
pub const DATA_EXTENSIONS: &[&str] = &[".parquet", ".jsonl", ".jsonl.gz"];

/// The files of the splits asked for, each on disk in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetFiles {
    pub repo: String,
    /// The commit the files come from (of `main`, or of the parquet export).
    pub commit: String,
    /// Each split asked for and its files, in order.
    pub splits: Vec<(String, Vec<PathBuf>)>,
}

impl DatasetFiles {
    /// The files of `split`, if it was asked for.
    pub fn split(&self, name: &str) -> Option<&[PathBuf]> {
        self.splits
            .iter()
            .find(|(s, _)| s == name)
            .map(|(_, f)| f.as_slice())
    }
}

/// The files of `splits` of dataset `repo` in `config` (the card's default when `None`), from the
/// cache or downloaded into it; see the module docs.
pub fn fetch_dataset(
    cfg: &HubConfig,
    repo: &str,
    config: Option<&str>,
    splits: &[&str],
    progress: &dyn Progress,
) -> Result<DatasetFiles> {
    validate_repo_id(repo).map_err(|msg| HubError::BadRef {
        arg: repo.to_string(),
        msg,
    })?;
    let root = cfg.cache.as_deref().ok_or(HubError::NoCache)?;
    let cache = RepoCache::of_kind(root, repo, RepoKind::Dataset);
    let mut missing = splits.first().copied().unwrap_or("test");
    let mut cached_commit = None;
    for (rev, export) in [(DEFAULT_REVISION, false), (PARQUET_EXPORT, true)] {
        let Some(commit) = cache.commit_for(rev)? else {
            continue;
        };
        let snap = cache.snapshot(&commit);
        let files = list_tree(&snap);
        let mut found = Vec::new();
        for split in splits {
            match cached_split(&files, config, split, export) {
                Some(f) => found.push((split.to_string(), f)),
                None => {
                    missing = split;
                    break;
                }
            }
        }
        if found.len() == splits.len() {
            let splits = found
                .into_iter()
                .map(|(s, f)| (s, f.iter().map(|f| snap.join(f)).collect()))
                .collect();
            return Ok(DatasetFiles {
                repo: repo.to_string(),
                commit,
                splits,
            });
        }
        cached_commit.get_or_insert(commit);
    }
    if cfg.offline {
        let of = config
            .map(|c| format!(" of config `{c}`"))
            .unwrap_or_default();
        return Err(HubError::NotCached {
            repo: repo.to_string(),
            kind: "dataset",
            revision: DEFAULT_REVISION.to_string(),
            what: format!("the `{missing}` split{of}"),
            cache: root.to_path_buf(),
        }
        .into());
    }
    online(cfg, &cache, repo, config, splits, progress).map_err(|e| match e {
        Error::Hub(h) => match *h {
            HubError::Network { repo, url, msg, .. } => HubError::Network {
                repo,
                url,
                msg,
                cached: false,
            }
            .into(),
            other => Error::Hub(Box::new(other)),
        },
        other => other,
    })
}

fn online(
    cfg: &HubConfig,
    cache: &RepoCache,
    repo: &str,
    config: Option<&str>,
    splits: &[&str],
    progress: &dyn Progress,
) -> Result<DatasetFiles> {
    let client = Client::of_kind(cfg, repo, RepoKind::Dataset);
    let main = client.repo_info(DEFAULT_REVISION)?;
    cache.write_ref(DEFAULT_REVISION, &main.commit)?;
    let config_name = config
        .map(str::to_string)
        .or_else(|| default_config(main.card.as_ref()));
    let mut chosen: Vec<(String, Vec<String>)> = Vec::new();
    for split in splits {
        let files: Vec<String> = split_files(&main, config_name.as_deref(), split)
            .into_iter()
            .filter(|f| is_data_file(f))
            .collect();
        chosen.push((split.to_string(), files));
    }
    let (rev, info) = if chosen.iter().all(|(_, f)| !f.is_empty()) {
        (DEFAULT_REVISION, main)
    } else {
        // The parquet export holds every split of every config, or none.
        let export = match client.repo_info(PARQUET_EXPORT) {
            Ok(i) => Some(i),
            Err(Error::Hub(h)) if matches!(*h, HubError::RevisionNotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let dir = config_name.as_deref().unwrap_or("default");
        let no_split = |split: &str, export: bool| -> Error {
            HubError::NoSplit {
                repo: repo.to_string(),
                config: config_name.clone().unwrap_or_else(|| "default".into()),
                split: split.to_string(),
                export,
            }
            .into()
        };
        let Some(info) = export else {
            let split = chosen
                .iter()
                .find(|(_, f)| f.is_empty())
                .map(|(s, _)| s.as_str());
            return Err(no_split(split.unwrap_or_default(), false));
        };
        let mut from_export = Vec::new();
        for (split, _) in &chosen {
            let found = export_files(&info.files, dir, split);
            if found.is_empty() {
                return Err(no_split(split, true));
            }
            from_export.push((split.clone(), found));
        }
        chosen = from_export;
        cache.write_ref(PARQUET_EXPORT, &info.commit)?;
        (PARQUET_EXPORT, info)
    };
    let at = Revision {
        revision: rev,
        commit: &info.commit,
    };
    let mut out = Vec::new();
    for (split, files) in chosen {
        let mut paths = Vec::new();
        for f in &files {
            paths.push(ensure_file(cache, &client, progress, at, f, None)?);
        }
        out.push((split, paths));
    }
    Ok(DatasetFiles {
        repo: repo.to_string(),
        commit: info.commit,
        splits: out,
    })
}

/// Whether the task reader takes this file.
fn is_data_file(f: &str) -> bool {
    DATA_EXTENSIONS.iter().any(|e| f.ends_with(e))
}

/// The card's configs (`configs:` of the README's metadata).
fn card_configs(card: Option<&Value>) -> &[Value] {
    card.and_then(|c| c.get("configs"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The config `datasets` loads when none is named: the one marked `default: true`, else the only
/// one.
fn default_config(card: Option<&Value>) -> Option<String> {
    let configs = card_configs(card);
    let name = |c: &Value| {
        c.get("config_name")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    configs
        .iter()
        .find(|c| c.get("default").and_then(Value::as_bool) == Some(true))
        .and_then(name)
        .or_else(|| match configs {
            [only] => name(only),
            _ => None,
        })
}

/// The files of `split` on `main`: from the card's `data_files` when it declares the config,
/// else from the default layouts.
fn split_files(info: &RepoInfo, config: Option<&str>, split: &str) -> Vec<String> {
    let declared = card_configs(info.card.as_ref()).iter().find(|c| {
        c.get("config_name").and_then(Value::as_str) == Some(config.unwrap_or("default"))
    });
    if let Some(data_files) = declared.and_then(|c| c.get("data_files")) {
        let patterns = card_patterns(data_files, split);
        let mut out: Vec<String> = info
            .files
            .iter()
            .filter(|f| patterns.iter().any(|p| glob(p, f)))
            .cloned()
            .collect();
        out.sort();
        return out;
    }
    by_layout(&info.files, config, split)
}

/// The `path` patterns of `split` in a config's `data_files`: a list of `{split, path}`, or a
/// pattern or list of patterns that is the `train` split.
fn card_patterns(data_files: &Value, split: &str) -> Vec<String> {
    let strings = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    };
    match data_files {
        Value::Array(entries) if entries.iter().any(Value::is_object) => entries
            .iter()
            .filter(|e| e.get("split").and_then(Value::as_str) == Some(split))
            .flat_map(|e| e.get("path").map(strings).unwrap_or_default())
            .collect(),
        other if split == "train" => strings(other),
        _ => Vec::new(),
    }
}

/// `{config}/{split}-*`, `data/{split}-*` and `{split}-*` (also `{split}.EXT`), in that order
/// of preference; with no config, also `{dir}/{split}-*` when one folder alone has such files.
fn by_layout(files: &[String], config: Option<&str>, split: &str) -> Vec<String> {
    let named = |f: &str, dir: &str| {
        let Some(rest) = f.strip_prefix(dir) else {
            return false;
        };
        let Some(name) = rest.strip_prefix(split) else {
            return false;
        };
        !name.contains('/') && (name.starts_with('-') || name.starts_with('.'))
    };
    let mut dirs: Vec<String> = config.map(|c| format!("{c}/")).into_iter().collect();
    dirs.extend(["data/".to_string(), String::new()]);
    for dir in &dirs {
        let mut out: Vec<String> = files
            .iter()
            .filter(|f| named(f, dir) && is_data_file(f))
            .cloned()
            .collect();
        if !out.is_empty() {
            out.sort();
            return out;
        }
    }
    if config.is_none() {
        let mut hits: Vec<&String> = files
            .iter()
            .filter(|f| {
                f.split_once('/')
                    .is_some_and(|(d, _)| named(f, &format!("{d}/")))
                    && is_data_file(f)
            })
            .collect();
        let first_dir = hits.first().and_then(|f| f.split_once('/')).map(|p| p.0);
        if hits
            .iter()
            .all(|f| f.split_once('/').map(|p| p.0) == first_dir)
        {
            hits.sort();
            return hits.into_iter().cloned().collect();
        }
    }
    Vec::new()
}

/// The parquet export's files of `split` in config folder `dir`: `{dir}/{split}/*.parquet`, or
/// `{dir}/partial-{split}/*.parquet` for a split converted in part.
fn export_files(files: &[String], dir: &str, split: &str) -> Vec<String> {
    for sub in [split.to_string(), format!("partial-{split}")] {
        let prefix = format!("{dir}/{sub}/");
        let mut out: Vec<String> = files
            .iter()
            .filter(|f| {
                f.strip_prefix(&prefix)
                    .is_some_and(|n| !n.contains('/') && n.ends_with(".parquet"))
            })
            .cloned()
            .collect();
        if !out.is_empty() {
            out.sort();
            return out;
        }
    }
    Vec::new()
}

/// The split's files in a cached snapshot (paths relative to it), when they are all there.
fn cached_split(
    files: &[String],
    config: Option<&str>,
    split: &str,
    export: bool,
) -> Option<Vec<String>> {
    let found = if export {
        match config {
            Some(c) => export_files(files, c, split),
            None => {
                let dirs: std::collections::BTreeSet<&str> = files
                    .iter()
                    .filter_map(|f| f.split_once('/').map(|p| p.0))
                    .collect();
                let per_dir: Vec<Vec<String>> = dirs
                    .iter()
                    .map(|d| export_files(files, d, split))
                    .filter(|f| !f.is_empty())
                    .collect();
                match per_dir.as_slice() {
                    [one] => one.clone(),
                    _ => Vec::new(),
                }
            }
        }
    } else {
        by_layout(files, config, split)
    };
    (!found.is_empty() && all_shards(&found)).then_some(found)
}

/// Whether every `…-NNNNN-of-MMMMM.EXT` file has its `MMMMM` shards (files named otherwise count
/// as complete).
fn all_shards(files: &[String]) -> bool {
    let mut groups: std::collections::BTreeMap<(String, usize), usize> = Default::default();
    for f in files {
        let stem = f.split('.').next().unwrap_or(f);
        let parts: Vec<&str> = stem.rsplitn(4, '-').collect();
        if let [total, "of", index, head] = parts.as_slice() {
            if let (Ok(total), Ok(_)) = (total.parse::<usize>(), index.parse::<usize>()) {
                *groups.entry((head.to_string(), total)).or_default() += 1;
            }
        }
    }
    groups.iter().all(|((_, total), n)| n == total)
}

/// The files under `dir`, as `/`-separated paths relative to it (links followed).
fn list_tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if p.is_dir() {
                stack.push((p, r));
            } else if p.is_file() {
                out.push(r);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_card_names_the_files_and_the_default_config() {
        let card = serde_json::json!({"configs": [
            {"config_name": "all", "data_files": [
                {"split": "test", "path": "all/test-*"},
                {"split": "dev", "path": ["all/dev-*"]}]},
            {"config_name": "openai_humaneval", "default": true,
             "data_files": [{"split": "test", "path": "openai_humaneval/test-*"}]}]});
        let info = RepoInfo {
            commit: "c".into(),
            files: names(&[
                "README.md",
                "all/dev-00000-of-00001.parquet",
                "all/test-00000-of-00002.parquet",
                "all/test-00001-of-00002.parquet",
                "openai_humaneval/test-00000-of-00001.parquet",
                "x/test-00000-of-00001.parquet",
            ]),
            card: Some(card),
        };
        assert_eq!(
            split_files(&info, Some("all"), "test"),
            names(&[
                "all/test-00000-of-00002.parquet",
                "all/test-00001-of-00002.parquet"
            ])
        );
        assert_eq!(
            split_files(&info, Some("all"), "train"),
            Vec::<String>::new()
        );
        assert_eq!(
            default_config(info.card.as_ref()).as_deref(),
            Some("openai_humaneval")
        );
        // A config the card does not declare: the default layouts.
        assert_eq!(
            split_files(&info, Some("x"), "test"),
            names(&["x/test-00000-of-00001.parquet"])
        );
    }

    #[test]
    fn layouts_exports_and_complete_shards() {
        let files = names(&[
            "data/test-00000-of-00001.parquet",
            "data/train-00000-of-00001.parquet",
            "default/validation/0000.parquet",
            "default/partial-train/0000.parquet",
        ]);
        assert_eq!(
            by_layout(&files, None, "test"),
            names(&["data/test-00000-of-00001.parquet"])
        );
        assert!(by_layout(&files, None, "dev").is_empty());
        assert_eq!(
            export_files(&files, "default", "validation"),
            names(&["default/validation/0000.parquet"])
        );
        assert_eq!(
            export_files(&files, "default", "train"),
            names(&["default/partial-train/0000.parquet"])
        );
        assert!(all_shards(&names(&[
            "a/test-00000-of-00002.parquet",
            "a/test-00001-of-00002.parquet"
        ])));
        assert!(!all_shards(&names(&["a/test-00000-of-00002.parquet"])));
        assert!(all_shards(&names(&["test.jsonl"])));
        let one_dir = names(&["cfg/test-00000-of-00001.parquet", "README.md"]);
        assert_eq!(by_layout(&one_dir, None, "test").len(), 1);
        let two_dirs = names(&["a/test-0.parquet", "b/test-0.parquet"]);
        assert!(by_layout(&two_dirs, None, "test").is_empty());
    }
}
