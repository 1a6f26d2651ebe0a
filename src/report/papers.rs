//! The papers' table of a sweep with tasks (issue 32): tasks × layers removed, dense, unhealed
//! and healed by each method, with intervals and retention, and the evaluation perplexity.

use super::study::{ci, pct};
use crate::sweep::{Measured, Sweep, TaskMetric};
use std::fmt::Write;

/// A task's headline value with its interval and, when asked and known, the share of the dense
/// model's value kept; empty when the cell has none.
pub(super) fn metric_cell(m: Option<&TaskMetric>, retention: bool) -> String {
    let Some(m) = m else {
        return String::new();
    };
    let kept = match m.retention.filter(|_| retention) {
        Some(r) => format!(" ({})", pct(r)),
        None => String::new(),
    };
    format!("{:.3}{}{kept}", m.value, ci(Some(m.ci), 3))
}

/// The papers' table (issue 32): one row per number of layers removed and model (dense,
/// unhealed, and healed by each method the sweep ran), one column per task's headline metric
/// with its interval and retention against dense, and the evaluation text's perplexity. At each
/// count, the study's choice ([`Sweep::best_at`]). Empty without tasks.
pub fn papers_table(s: &Sweep) -> String {
    if s.task_list.is_empty() {
        return String::new();
    }
    let mut t = String::new();
    let first_heal = s
        .heal
        .as_ref()
        .and_then(|h| h.get("name"))
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .map_or_else(|| "healed".to_string(), |n| format!("healed ({n})"));
    t.push_str("| layers removed | removed (`--drop`) | model |");
    for task in &s.task_list {
        let _ = write!(t, " {} {} |", task.task, task.metric);
    }
    t.push_str(" perplexity |\n|---:|---|---|");
    t.push_str(&"---:|".repeat(s.task_list.len() + 1));
    t.push('\n');
    let mut line =
        |k: usize, drop: String, model: &str, metrics: &[TaskMetric], ppl: Option<&Measured>| {
            let _ = write!(t, "| {k} | {drop} | {model} |");
            for task in &s.task_list {
                let m = metrics.iter().find(|m| m.task == task.task);
                let _ = write!(t, " {} |", metric_cell(m, k > 0));
            }
            match ppl {
                Some(p) => {
                    let _ = writeln!(t, " {:.3}{} |", p.perplexity, ci(p.perplexity_ci, 3));
                }
                None => t.push_str(" |\n"),
            }
        };
    let dense: Vec<TaskMetric> = s.task_list.iter().map(|x| x.dense.clone()).collect();
    let dense_ppl = Measured {
        perplexity_ci: s.dense_perplexity_ci,
        ..Measured::point(s.dense_perplexity, 0.0, 1.0)
    };
    line(0, "–".into(), "dense", &dense, Some(&dense_ppl));
    for &k in s.counts.iter().filter(|&&k| k > 0) {
        let Some(r) = s.best_at(k) else {
            continue;
        };
        let drop = format!("`{}` ({})", r.drop, r.strategy);
        line(
            k,
            drop.clone(),
            "unhealed",
            &r.task_metrics,
            Some(&r.measured),
        );
        if r.healed.is_some() || !r.healed_task_metrics.is_empty() {
            line(
                k,
                drop.clone(),
                &first_heal,
                &r.healed_task_metrics,
                r.healed.as_ref(),
            );
        }
        let methods: std::collections::BTreeSet<&String> = (r.healed_by.keys())
            .chain(r.healed_by_task_metrics.keys())
            .collect();
        for name in methods {
            let metrics = r.healed_by_task_metrics.get(name).map_or(&[][..], |v| v);
            line(
                k,
                drop.clone(),
                &format!("healed ({name})"),
                metrics,
                r.healed_by.get(name),
            );
        }
    }
    t
}
