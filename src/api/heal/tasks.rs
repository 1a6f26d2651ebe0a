//! What a heal did to each task (`prune --heal --tasks`, `heal --tasks`; issue 32): the pruned
//! model is scored on the tasks as `eval --tasks` scores them before the maps are folded in
//! (the dense model with the removed layers skipped) and after (the dense weights with the
//! healed tensors in their place), and the heal's record and note say both.

use crate::api::tasks::{sweep_tasks, SuiteOpts, SweepScorer, SweepTasks};
use crate::error::{Error, Result};
use crate::eval::Bootstrap;
use crate::heal::{Healing, Overlay};
use crate::hub::HubConfig;
use crate::model::{open_checkpoint, Model, WeightSource};
use crate::progress::Progress;
use crate::sweep::TaskMetric;
use crate::tokenizer::HfTokenizer;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;

/// The tasks a heal is checked on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(default)]
pub struct HealTasks {
    /// Also score the pruned model before and after healing on these tasks, as `eval --tasks`
    /// does (by name from the Hub, `arc_easy,mmlu`, or from a local path, `mmlu=PATH`, or one of
    /// our JSONL files), and say in the heal's record and note what the heal did to each.
    #[cfg_attr(feature = "cli", arg(long, value_name = "NAME[=PATH],...|FILE.jsonl"))]
    pub tasks: Option<String>,
    /// With --tasks: score only the first N questions of each task.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", requires = "tasks"))]
    pub limit: Option<usize>,
    /// With --tasks NAME=PATH: few-shot examples per question (default: the task's own).
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", requires = "tasks"))]
    pub num_fewshot: Option<usize>,
    /// Allow tasks that run the code the model writes (humaneval); without it they are refused.
    #[cfg_attr(feature = "cli", arg(long, requires = "tasks"))]
    pub confirm_run_unsafe_code: bool,
    /// Generation tasks: new tokens at most (default: the task's own).
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", requires = "tasks"))]
    pub max_gen_toks: Option<usize>,
}

/// One task before and after the heal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskEffect {
    pub task: String,
    /// The headline metric, under lm-eval's name.
    pub metric: String,
    /// Questions scored.
    pub n: usize,
    /// The pruned model, unhealed.
    pub unhealed: TaskMetric,
    pub healed: TaskMetric,
}

impl HealTasks {
    fn suite(&self) -> SuiteOpts {
        SuiteOpts::greedy(
            self.limit,
            self.num_fewshot,
            self.confirm_run_unsafe_code,
            self.max_gen_toks,
        )
    }

    /// The tasks' data, read before any model loads (none without `tasks`).
    pub fn load(&self, progress: &dyn Progress) -> Result<Option<SweepTasks>> {
        if self.limit == Some(0) || self.max_gen_toks == Some(0) {
            return Err(Error::Invalid(
                "`limit` and `max_gen_toks` must be at least 1".into(),
            ));
        }
        self.tasks
            .as_deref()
            .map(|t| sweep_tasks(t, &self.suite(), &HubConfig::from_env(), progress))
            .transpose()
    }

    /// Scores the model at `dense` with `removed` skipped, unhealed and with `healing`'s tensors.
    pub fn effect(
        &self,
        data: &SweepTasks,
        tok: &HfTokenizer,
        dense: &Path,
        removed: &[usize],
        healing: &Healing,
        progress: &dyn Progress,
    ) -> Result<Vec<TaskEffect>> {
        let boot = Bootstrap::default();
        let (cfg, source) = open_checkpoint(dense)?;
        let unhealed = Model::from_source(cfg.clone(), source.clone(), &|i| !removed.contains(&i))?;
        let scorer = SweepScorer::new(data, tok, &unhealed, &self.suite())?;
        progress.message("tasks: the pruned model before healing");
        let before = scorer.score(&unhealed, removed, tok, progress)?;
        drop(unhealed);
        let overlay: Arc<dyn WeightSource> = Arc::new(Overlay::new(source, &healing.tensors)?);
        let healed = Model::from_source(cfg, overlay, &|i| !removed.contains(&i))?;
        progress.message("tasks: the pruned model healed");
        let after = scorer.score(&healed, removed, tok, progress)?;
        Ok(before
            .iter()
            .zip(&after)
            .map(|(b, a)| {
                let unhealed = TaskMetric::from_score(b, &boot);
                TaskEffect {
                    task: unhealed.task.clone(),
                    metric: unhealed.metric.clone(),
                    n: unhealed.n,
                    healed: TaskMetric::from_score(a, &boot),
                    unhealed,
                }
            })
            .collect())
    }
}

/// The note's sentence on the tasks: each headline before and after the heal.
pub fn describe(effects: &[TaskEffect]) -> String {
    let mut s = String::from(
        "On the tasks (scored as `eval --tasks` scores them), before → after healing:",
    );
    for (i, e) in effects.iter().enumerate() {
        let sep = if i == 0 { " " } else { "; " };
        let _ = write!(
            s,
            "{sep}`{}` {} {:.3} → {:.3} ({} questions)",
            e.task, e.metric, e.unhealed.value, e.healed.value, e.n
        );
    }
    s.push('.');
    s
}

/// One line for the terminal: a task's headline before and after the heal, with intervals.
pub fn line(e: &TaskEffect) -> String {
    format!(
        "task {}: {} {:.3} [{:.3}, {:.3}] unhealed, {:.3} [{:.3}, {:.3}] healed ({} questions)",
        e.task,
        e.metric,
        e.unhealed.value,
        e.unhealed.ci[0],
        e.unhealed.ci[1],
        e.healed.value,
        e.healed.ci[0],
        e.healed.ci[1],
        e.n
    )
}
