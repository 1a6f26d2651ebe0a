//! A study's or a heal's tasks (`sweep --tasks`, `prune --heal --tasks`): read before the model
//! loads, then scored on each model variant (a removal, a healed removal) exactly as
//! `eval --tasks` scores them, our own JSONL format included.

use super::{
    check_consent, load_all, parse_tasks, prepare, Prepared, SuiteOpts, TaskData, TaskSource,
};
use crate::error::{Error, Result};
use crate::eval::suite::TaskScore;
use crate::eval::TaskOpts;
use crate::model::Model;
use crate::progress::Progress;
use crate::tokenizer::HfTokenizer;
use std::path::{Path, PathBuf};

/// A sweep's tasks (`sweep --tasks`), read before the model loads: one of our own JSONL files,
/// or registry tasks given as `NAME=PATH,...`, their prompts as `eval --tasks` builds them.
pub enum SweepTasks {
    Own {
        file: PathBuf,
        items: Vec<crate::eval::TaskItem>,
    },
    Named(Vec<TaskData>),
}

/// Reads a sweep's `--tasks` (before the model loads, so bad data fails first), tasks named alone
/// from the Hub as `cfg` says; code-running tasks need `o.confirm_run_unsafe_code`.
pub fn sweep_tasks(
    arg: &str,
    o: &SuiteOpts,
    cfg: &crate::hub::HubConfig,
    progress: &dyn Progress,
) -> Result<SweepTasks> {
    let sources = parse_tasks(arg)?;
    if let [TaskSource::File(f)] = sources.as_slice() {
        return Ok(SweepTasks::Own {
            file: f.clone(),
            items: crate::eval::read_tasks(f, o.limit)?,
        });
    }
    if sources.iter().any(|s| matches!(s, TaskSource::File(_))) {
        return Err(Error::Invalid(
            "a JSONL task file of our own format goes alone in `--tasks`".into(),
        ));
    }
    check_consent(&sources, o.confirm_run_unsafe_code)?;
    Ok(SweepTasks::Named(load_all(&sources, o, cfg, progress)?))
}

impl SweepTasks {
    /// Each task's name and where its data is, in the order given.
    pub fn names(&self) -> Vec<(String, String)> {
        match self {
            SweepTasks::Own { file, .. } => vec![(own_name(file), file.display().to_string())],
            SweepTasks::Named(data) => data
                .iter()
                .map(|d| (d.spec.name.to_string(), d.path.display().to_string()))
                .collect(),
        }
    }
}

/// A task file of our own format, named by its stem.
fn own_name(file: &Path) -> String {
    file.file_stem().map_or_else(
        || file.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// A sweep's tasks ready to score on each cell.
pub enum SweepScorer<'a> {
    Own {
        name: String,
        items: Vec<crate::eval::EncodedItem>,
        opts: TaskOpts,
    },
    Named(Prepared<'a>),
}

impl<'a> SweepScorer<'a> {
    /// Encodes the questions, or builds the prompts, for `model`.
    pub fn new(
        tasks: &'a SweepTasks,
        tok: &HfTokenizer,
        model: &Model,
        o: &SuiteOpts,
    ) -> Result<Self> {
        let opts = TaskOpts {
            max_len: crate::eval::choice::max_len(model),
            ..o.opts
        };
        Ok(match tasks {
            SweepTasks::Own { file, items } => SweepScorer::Own {
                name: own_name(file),
                items: items
                    .iter()
                    .map(|i| crate::eval::encode_item(tok, i))
                    .collect::<Result<_>>()?,
                opts,
            },
            SweepTasks::Named(data) => {
                SweepScorer::Named(prepare(data, tok, &SuiteOpts { opts, ..o.clone() })?)
            }
        })
    }

    /// Every task on `model` with `skip`ped layers, as `eval --tasks` scores it.
    pub fn score(
        &self,
        model: &Model,
        skip: &[usize],
        tok: &HfTokenizer,
        progress: &dyn Progress,
    ) -> Result<Vec<TaskScore>> {
        match self {
            SweepScorer::Named(p) => p.score(model, skip, tok, progress),
            SweepScorer::Own { name, items, opts } => {
                let r = crate::eval::score_encoded(model, skip, items, *opts, progress)?;
                Ok(vec![own_score(name, r)])
            }
        }
    }
}

/// Our own format's report as a task score: `acc` (the headline) and `acc_norm`, as
/// `eval --tasks FILE.jsonl` reports them.
fn own_score(name: &str, r: crate::eval::TaskReport) -> TaskScore {
    let mut metrics = std::collections::BTreeMap::new();
    metrics.insert("acc".to_string(), r.acc);
    metrics.insert("acc_norm".to_string(), r.acc_norm);
    if let Some(e) = r.acc_stderr {
        metrics.insert("acc_stderr".to_string(), e);
    }
    if let Some(e) = r.acc_norm_stderr {
        metrics.insert("acc_norm_stderr".to_string(), e);
    }
    TaskScore {
        task: name.to_string(),
        follows: String::new(),
        n: r.n,
        num_fewshot: 0,
        metrics,
        headline: "acc".into(),
        subtasks: Default::default(),
        truncated: r.truncated,
        tokens_forwarded: r.tokens_forwarded,
        seconds: r.seconds,
        notes: Vec::new(),
        items: r
            .items
            .into_iter()
            .map(|i| crate::eval::suite::ItemResult {
                score: f64::from(u8::from(i.pred == i.gold)),
                id: i.id,
                loglikelihoods: i.loglikelihoods,
                pred: Some(i.pred),
                gold: Some(i.gold),
                outputs: Vec::new(),
            })
            .collect(),
    }
}
