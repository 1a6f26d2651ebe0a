//! Standard benchmarks by name (`eval --tasks mmlu,humaneval=PATH`): the `--tasks` list
//! parsed against the task registry ([`crate::eval::registry`]), each task's data read from the
//! local file or folder given, or for a bare name fetched from the Hub into the HF cache
//! ([`crate::hub::dataset`]), its prompts built as lm-eval builds them and scored on the model.
//! A lone existing file that names no task is one of our own JSONL task files
//! ([`super::eval::eval_tasks`]).

use crate::error::{Error, Result};
use crate::eval::data::{read_records, split_files};
use crate::eval::docs::{build, Build};
use crate::eval::execute::{Limits, Sandbox};
use crate::eval::registry::{self, Record, TaskSpec};
use crate::eval::suite::{score_task, GenSettings, TaskScore};
use crate::eval::TaskOpts;
use crate::hub::dataset::fetch_dataset;
use crate::hub::HubConfig;
use crate::model::{Model, Sampling};
use crate::progress::Progress;
use crate::tokenizer::HfTokenizer;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod scorer;
pub use scorer::{sweep_tasks, SweepScorer, SweepTasks};

/// One entry of `--tasks`.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskSource {
    /// Our own JSONL file of multiple-choice questions.
    File(PathBuf),
    /// A registry task and where its data is: a local file or folder, or (`None`) the Hub.
    Named {
        spec: &'static TaskSpec,
        path: Option<PathBuf>,
    },
}

/// Parses `--tasks`: `NAME[=PATH],...`, or one JSONL file of our own format.
pub fn parse_tasks(arg: &str) -> Result<Vec<TaskSource>> {
    let arg = arg.trim();
    if !arg.contains('=') && registry::find(arg).is_none() && Path::new(arg).is_file() {
        return Ok(vec![TaskSource::File(PathBuf::from(arg))]);
    }
    let mut out = Vec::new();
    for part in arg.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, path) = match part.split_once('=') {
            Some((n, p)) => (n.trim(), Some(p.trim())),
            None => (part, None),
        };
        let Some(spec) = registry::find(name) else {
            let looks_like_file = name.contains('.') || name.contains('/');
            return Err(Error::Invalid(if looks_like_file && path.is_none() {
                format!("`{name}`: no such task file")
            } else {
                format!("unknown task `{name}`; the tasks are {}", registry::names())
            }));
        };
        if path.is_some_and(str::is_empty) {
            return Err(Error::Invalid(format!(
                "`{name}=`: give a path after `=`, or the name alone to fetch `{}` from the Hub",
                spec.hub.repo
            )));
        }
        out.push(TaskSource::Named {
            spec,
            path: path.map(PathBuf::from),
        });
    }
    if out.is_empty() {
        return Err(Error::Invalid("`--tasks` names no task".into()));
    }
    Ok(out)
}

/// A named task's data: the scored split and the few-shot split.
pub struct TaskData {
    pub spec: &'static TaskSpec,
    /// The file or folder it was read from.
    pub path: PathBuf,
    pub records: Vec<Record>,
    pub fewshot: Vec<Record>,
    pub num_fewshot: usize,
}

/// Where a task's data is read from.
pub enum DataAt<'a> {
    /// A local file or folder.
    Path(&'a Path),
    /// The task's Hub dataset, from the HF cache or downloaded into it.
    Hub(&'a HubConfig, &'a dyn Progress),
}

/// Reads a task's records (at most `limit`) and, for few-shot, its few-shot split; checks that
/// every record has the row's fields.
pub fn load(
    spec: &'static TaskSpec,
    at: DataAt,
    limit: Option<usize>,
    num_fewshot: Option<usize>,
) -> Result<TaskData> {
    let num_fewshot = num_fewshot.unwrap_or(spec.num_fewshot);
    let fewshot_split = if num_fewshot > 0 {
        Some(spec.hub.fewshot_split.ok_or_else(|| {
            Error::Invalid(format!(
                "`{}` has no few-shot split; use `--num-fewshot 0`",
                spec.name
            ))
        })?)
    } else {
        None
    };
    let (files, fewshot_files, label) = match at {
        DataAt::Path(path) => {
            let files = split_files(path, spec.hub.split, true)?;
            if files.is_empty() {
                return Err(Error::Invalid(format!(
                    "`{}`: no `{}*` parquet, `.jsonl` or `.jsonl.gz` file in `{}`",
                    spec.name,
                    spec.hub.split,
                    path.display()
                )));
            }
            let fewshot_files = match fewshot_split {
                Some(split) => {
                    let f = split_files(path, split, false)?;
                    if f.is_empty() {
                        return Err(Error::Invalid(format!(
                            "`{}`: {num_fewshot}-shot needs the `{split}` split: give a folder holding `{}*` and `{split}*` files (parquet or JSON Lines), or `--num-fewshot 0`",
                            spec.name, spec.hub.split
                        )));
                    }
                    f
                }
                None => Vec::new(),
            };
            (files, fewshot_files, path.to_path_buf())
        }
        DataAt::Hub(cfg, progress) => {
            let mut splits = vec![spec.hub.split];
            splits.extend(fewshot_split);
            let bytes = super::source::BytesOnly(progress);
            let got = fetch_dataset(cfg, spec.hub.repo, spec.hub.config, &splits, &bytes)?;
            let of = |s: &str| got.split(s).map(<[PathBuf]>::to_vec).unwrap_or_default();
            let files = of(spec.hub.split);
            let fewshot_files = fewshot_split.map(of).unwrap_or_default();
            let label = files
                .first()
                .and_then(|f| f.parent())
                .map_or_else(|| PathBuf::from(spec.hub.repo), Path::to_path_buf);
            (files, fewshot_files, label)
        }
    };
    let records = read_records(&files, limit, spec.adapt)?;
    if records.is_empty() {
        return Err(Error::corrupt(&label, "no task records in this file"));
    }
    check_fields(spec, &records, &label)?;
    let mut fewshot = Vec::new();
    if fewshot_split.is_some() {
        fewshot = read_records(&fewshot_files, None, spec.adapt)?;
        check_fields(spec, &fewshot, &label)?;
    }
    Ok(TaskData {
        spec,
        path: label,
        records,
        fewshot,
        num_fewshot,
    })
}

fn check_fields(spec: &TaskSpec, records: &[Record], path: &Path) -> Result<()> {
    for (i, r) in records.iter().enumerate() {
        if let Some(f) = spec.fields.iter().find(|f| !r.contains_key(**f)) {
            return Err(Error::Invalid(format!(
                "`{}` record {} lacks field `{f}`: `{}` needs the `{}` fields {}",
                path.display(),
                i + 1,
                spec.name,
                spec.hub.repo,
                spec.fields.join(", ")
            )));
        }
    }
    Ok(())
}

/// How named tasks run.
#[derive(Debug, Clone)]
pub struct SuiteOpts {
    pub limit: Option<usize>,
    pub num_fewshot: Option<usize>,
    pub chat_template: bool,
    pub confirm_run_unsafe_code: bool,
    pub opts: TaskOpts,
    pub samples: usize,
    pub pass_k: usize,
    pub sampling: Sampling,
    pub max_gen_toks: Option<usize>,
    pub code_timeout: f64,
}

impl SuiteOpts {
    /// Greedy generation, one sample each, the model's own context length (set when it loads),
    /// no chat template, lm-eval's 3 seconds per program: how a sweep or a heal scores tasks.
    pub fn greedy(
        limit: Option<usize>,
        num_fewshot: Option<usize>,
        confirm_run_unsafe_code: bool,
        max_gen_toks: Option<usize>,
    ) -> Self {
        SuiteOpts {
            limit,
            num_fewshot,
            chat_template: false,
            confirm_run_unsafe_code,
            opts: TaskOpts {
                max_len: 1,
                batch: crate::eval::choice::DEFAULT_BATCH,
            },
            samples: 1,
            pass_k: 1,
            sampling: Sampling::greedy(),
            max_gen_toks,
            code_timeout: 3.0,
        }
    }
}

/// Refuses code-running tasks without consent, before any model loads.
pub fn check_consent(sources: &[TaskSource], confirmed: bool) -> Result<()> {
    for s in sources {
        if let TaskSource::Named { spec, .. } = s {
            if spec.unsafe_code && !confirmed {
                return Err(Error::Invalid(format!(
                    "`{}` runs the code the model writes; pass `--confirm-run-unsafe-code` to allow it (each program runs in its own process and temporary folder, with time and memory limits and no network where Linux allows)",
                    spec.name
                )));
            }
        }
    }
    Ok(())
}

/// A local path when given, else the Hub.
fn at<'a>(path: &'a Option<PathBuf>, cfg: &'a HubConfig, progress: &'a dyn Progress) -> DataAt<'a> {
    match path {
        Some(p) => DataAt::Path(p),
        None => DataAt::Hub(cfg, progress),
    }
}

/// Reads every named task's data (before the model loads, so bad data fails first); tasks named
/// alone come from the Hub as `cfg` says (`HubConfig::from_env`: `HF_HOME`, `HF_ENDPOINT`,
/// `HF_HUB_OFFLINE`).
pub fn load_all(
    sources: &[TaskSource],
    o: &SuiteOpts,
    cfg: &HubConfig,
    progress: &dyn Progress,
) -> Result<Vec<TaskData>> {
    sources
        .iter()
        .filter_map(|s| match s {
            TaskSource::Named { spec, path } => {
                Some(load(spec, at(path, cfg, progress), o.limit, o.num_fewshot))
            }
            TaskSource::File(_) => None,
        })
        .collect()
}

/// Named tasks with their prompts built, ready to be scored on any model (each cell of a
/// sweep, or once by `eval`).
pub struct Prepared<'a> {
    tasks: Vec<(&'a TaskData, Vec<crate::eval::docs::Doc>)>,
    gen: GenSettings,
    opts: TaskOpts,
}

/// Builds every task's prompts and the sandbox its programs run in.
pub fn prepare<'a>(data: &'a [TaskData], tok: &HfTokenizer, o: &SuiteOpts) -> Result<Prepared<'a>> {
    let sandbox = if data.iter().any(|d| d.spec.unsafe_code) && o.confirm_run_unsafe_code {
        if !(o.code_timeout > 0.0 && o.code_timeout.is_finite()) {
            return Err(Error::Invalid(
                "`code_timeout` must be a positive number of seconds".into(),
            ));
        }
        Some(Sandbox::new(Limits {
            timeout: Duration::from_secs_f64(o.code_timeout),
            ..Limits::default()
        })?)
    } else {
        None
    };
    if o.chat_template && !tok.has_chat_template() {
        return Err(Error::Invalid(
            "`--chat-template`: the checkpoint's tokenizer has no chat template".into(),
        ));
    }
    let gen = GenSettings {
        n: o.samples.max(1),
        k: o.pass_k,
        sampling: o.sampling.clone(),
        max_gen_toks: o.max_gen_toks,
        sandbox,
    };
    let tasks = data
        .iter()
        .map(|d| {
            let b = Build {
                spec: d.spec,
                num_fewshot: d.num_fewshot,
                fewshot_pool: &d.fewshot,
                chat: o.chat_template.then_some(tok),
            };
            Ok((d, build(&b, &d.records)?))
        })
        .collect::<Result<_>>()?;
    Ok(Prepared {
        tasks,
        gen,
        opts: o.opts,
    })
}

impl Prepared<'_> {
    /// Scores each task on `model` with `skip`ped layers.
    pub fn score(
        &self,
        model: &Model,
        skip: &[usize],
        tok: &HfTokenizer,
        progress: &dyn Progress,
    ) -> Result<Vec<TaskScore>> {
        let mut out = Vec::new();
        for (d, docs) in &self.tasks {
            progress.message(&format!("{}: {} questions", d.spec.name, docs.len()));
            out.push(score_task(
                model,
                skip,
                tok,
                d.spec,
                docs,
                d.num_fewshot,
                self.opts,
                &self.gen,
                progress,
            )?);
        }
        Ok(out)
    }
}

/// Scores each task on `model` with `skip`ped layers.
pub fn run_all(
    model: &Model,
    skip: &[usize],
    tok: &HfTokenizer,
    data: &[TaskData],
    o: &SuiteOpts,
    progress: &dyn Progress,
) -> Result<Vec<TaskScore>> {
    prepare(data, tok, o)?.score(model, skip, tok, progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;

    /// A hub nothing is fetched from: the tests give local data.
    fn hub() -> HubConfig {
        HubConfig::new("/nonexistent", "http://127.0.0.1:9")
    }

    #[test]
    fn task_lists_parse_and_bad_names_say_what_exists() {
        let s = parse_tasks("mmlu=a.jsonl, humaneval=h.jsonl.gz").unwrap();
        assert_eq!(s.len(), 2);
        assert!(
            matches!(&s[0], TaskSource::Named { spec, path: Some(path) } if spec.name == "mmlu" && path == Path::new("a.jsonl"))
        );
        // A bare name is the task's Hub dataset.
        let s = parse_tasks("mmlu, humaneval").unwrap();
        assert!(
            matches!(&s[..], [TaskSource::Named { spec: a, path: None }, TaskSource::Named { spec: b, path: None }] if a.name == "mmlu" && b.name == "humaneval")
        );
        let e = parse_tasks("mmlu=").unwrap_err().to_string();
        assert!(e.contains("give a path") && e.contains("cais/mmlu"), "{e}");
        let e = parse_tasks("mmlux=a").unwrap_err().to_string();
        assert!(
            e.contains("unknown task `mmlux`") && e.contains("hellaswag"),
            "{e}"
        );
        let e = parse_tasks("nope.jsonl").unwrap_err().to_string();
        assert!(e.contains("no such task file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("own.jsonl");
        std::fs::write(&f, "{}").unwrap();
        assert_eq!(
            parse_tasks(f.to_str().unwrap()).unwrap(),
            [TaskSource::File(f.clone())]
        );
    }

    #[test]
    fn sweeps_take_a_list_of_tasks_and_code_needs_consent() {
        let fx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lmeval");
        let o = |confirm| SuiteOpts {
            limit: Some(2),
            num_fewshot: None,
            chat_template: false,
            confirm_run_unsafe_code: confirm,
            opts: TaskOpts {
                max_len: 1,
                batch: 1,
            },
            samples: 1,
            pass_k: 1,
            sampling: Sampling::greedy(),
            max_gen_toks: None,
            code_timeout: 3.0,
        };
        let arc = format!("arc_easy={}", fx.join("arc_easy").display());
        let gsm = format!("gsm8k={}", fx.join("gsm8k").display());
        let t = sweep_tasks(&format!("{arc},{gsm}"), &o(false), &hub(), &Silent).unwrap();
        let SweepTasks::Named(data) = &t else {
            panic!("not named")
        };
        assert_eq!(
            data.iter().map(|d| d.records.len()).collect::<Vec<_>>(),
            [2, 2]
        );
        assert_eq!(t.names()[1].0, "gsm8k");
        let e = sweep_tasks("humaneval=x.jsonl", &o(false), &hub(), &Silent)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--confirm-run-unsafe-code"), "{e}");
    }

    #[test]
    fn code_tasks_need_consent_and_few_shot_needs_its_split() {
        let s = parse_tasks("humaneval=x.jsonl").unwrap();
        let e = check_consent(&s, false).unwrap_err().to_string();
        assert!(e.contains("--confirm-run-unsafe-code"), "{e}");
        check_consent(&s, true).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("test.jsonl");
        std::fs::write(&f, "{\"question\": \"q\", \"answer\": \"#### 1\"}\n").unwrap();
        let spec = registry::find("gsm8k").unwrap();
        let e = load(spec, DataAt::Path(&f), None, None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("5-shot needs the `train` split"), "{e}");
        assert_eq!(
            load(spec, DataAt::Path(&f), None, Some(0))
                .unwrap()
                .records
                .len(),
            1
        );
        std::fs::write(
            dir.path().join("train.jsonl"),
            "{\"question\": \"a\", \"answer\": \"b\"}\n",
        )
        .unwrap();
        let d = load(spec, DataAt::Path(dir.path()), None, Some(1)).unwrap();
        assert_eq!((d.records.len(), d.fewshot.len()), (1, 1));
        let e = load(
            registry::find("mmlu").unwrap(),
            DataAt::Path(&f),
            None,
            Some(0),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("lacks field `subject`") && e.contains("cais/mmlu"),
            "{e}"
        );
    }
}
