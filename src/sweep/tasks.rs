//! Benchmarks as sweep columns (`sweep --tasks`, issues 15 and 32): each distinct removal, and
//! each healed removal, is scored on every task as `eval --tasks` scores it (the scorer comes in
//! as [`TaskScorer`], so the sweep never knows a task by name), and each task's headline metric
//! (`acc`, `acc_norm`, `exact_match`, `pass@1`, under lm-eval's names) gets a 95% interval from
//! the same seeded bootstrap, over questions instead of windows, and its retention against the
//! dense model.

use crate::error::Result;
use crate::eval::suite::TaskScore;
use crate::eval::{Bootstrap, Interval};
use crate::model::Model;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Scores every task of the sweep on a model with layers skipped, as `eval --tasks` would: one
/// [`TaskScore`] per task, in the order of [`TaskPlan::tasks`], each with its per-question
/// scores.
pub type TaskScorer<'a> = &'a dyn Fn(&Model, &[usize]) -> Result<Vec<TaskScore>>;

/// The tasks a sweep measures each removal on.
pub struct TaskPlan<'a> {
    /// Each task: its name and where its data was read from, in the order given.
    pub tasks: Vec<(String, String)>,
    pub score: TaskScorer<'a>,
}

/// One task's result on one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMetric {
    /// The task's lm-eval name (`mmlu`, `arc_easy`, `humaneval`), or our JSONL file's stem.
    pub task: String,
    /// The headline metric, under lm-eval's name: `acc`, `acc_norm`, `exact_match`, `pass@1`.
    pub metric: String,
    /// Questions scored.
    pub n: usize,
    /// The headline metric's value.
    pub value: f64,
    /// Its 95% bootstrap interval over the questions.
    pub ci: Interval,
    /// `value` ÷ the dense model's value (absent when the dense value is 0).
    #[serde(default)]
    pub retention: Option<f64>,
    /// Every metric `eval --tasks --json` reports for the task (`acc_stderr`, the filters of
    /// `exact_match`, `pass@k` …), finite ones only.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

impl TaskMetric {
    /// The headline of `score` with its bootstrap interval over the questions' scores.
    pub fn from_score(score: &TaskScore, boot: &Bootstrap) -> Self {
        let per_item: Vec<f64> = score.items.iter().map(|i| i.score).collect();
        let value = score
            .metrics
            .get(&score.headline)
            .copied()
            .unwrap_or_else(|| per_item.iter().sum::<f64>() / per_item.len().max(1) as f64);
        TaskMetric {
            task: score.task.clone(),
            metric: score.headline.clone(),
            n: score.n,
            value,
            ci: mean_interval(boot, &per_item),
            retention: None,
            metrics: (score.metrics.iter())
                .filter(|(_, v)| v.is_finite())
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        }
    }

    /// Sets the retention against the dense model's result on the same task.
    pub fn retain(&mut self, dense: &[TaskMetric]) {
        self.retention = dense
            .iter()
            .find(|d| d.task == self.task && d.metric == self.metric)
            .filter(|d| d.value > 0.0)
            .map(|d| self.value / d.value);
    }
}

/// The results of [`TaskPlan::score`] as [`TaskMetric`]s.
pub fn measure(
    plan: &TaskPlan<'_>,
    model: &Model,
    skip: &[usize],
    boot: &Bootstrap,
) -> Result<Vec<TaskMetric>> {
    Ok((plan.score)(model, skip)?
        .iter()
        .map(|s| TaskMetric::from_score(s, boot))
        .collect())
}

/// A task of the sweep, as `sweep.json` names it, with the dense model's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepTask {
    pub task: String,
    /// Where its data was read from.
    pub data: String,
    /// The headline metric.
    pub metric: String,
    /// Questions scored.
    pub n: usize,
    pub dense: TaskMetric,
}

/// The bootstrap interval of the mean of `values`.
pub fn mean_interval(boot: &Bootstrap, values: &[f64]) -> Interval {
    boot.interval(values.len(), |c| {
        let (mut s, mut n) = (0.0, 0.0);
        for (v, &k) in values.iter().zip(c) {
            s += v * k as f64;
            n += k as f64;
        }
        s / n.max(1.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_intervals_cover_the_mean_and_shrink_with_more_questions() {
        let boot = Bootstrap::default();
        let small: Vec<f64> = (0..20).map(|i| f64::from(u8::from(i % 4 != 0))).collect();
        let large: Vec<f64> = (0..400).map(|i| f64::from(u8::from(i % 4 != 0))).collect();
        let (a, b) = (mean_interval(&boot, &small), mean_interval(&boot, &large));
        assert!(a[0] < 0.75 && 0.75 < a[1] && b[0] < 0.75 && 0.75 < b[1]);
        assert!(b[1] - b[0] < (a[1] - a[0]) / 2.0, "{a:?} {b:?}");
        // sqrt(0.75 × 0.25 / 400) = 0.0217; the interval is about ±1.96 of that.
        assert!(((b[1] - b[0]) / 2.0 - 1.96 * 0.0217).abs() < 0.006, "{b:?}");
    }

    #[test]
    fn retention_is_the_share_of_the_dense_value_on_the_same_task() {
        let m = |task: &str, value: f64| TaskMetric {
            task: task.into(),
            metric: "acc".into(),
            n: 4,
            value,
            ci: [value, value],
            retention: None,
            metrics: BTreeMap::new(),
        };
        let dense = [m("arc_easy", 0.8), m("mmlu", 0.0)];
        let mut a = m("arc_easy", 0.6);
        a.retain(&dense);
        assert!((a.retention.unwrap() - 0.75).abs() < 1e-12);
        let mut b = m("mmlu", 0.25);
        b.retain(&dense);
        assert_eq!(b.retention, None);
    }
}
