//! `sweep.csv`: one row per strategy and count, the columns named in one place.

use super::{Sweep, SweepRow, TaskMetric};
use std::fmt::Write;

/// A CSV column: its header and how a row fills it (empty when it does not apply).
type Column = (&'static str, fn(&SweepRow) -> String);

fn num(x: Option<f64>) -> String {
    x.map(|v| v.to_string()).unwrap_or_default()
}

/// Every column of sweep.csv, in order: the one place that says what the file holds. Columns
/// are only ever added at the end, so scripts that read the older ones keep working.
const COLUMNS: &[Column] = &[
    ("strategy", |r| r.strategy.clone()),
    ("k", |r| r.k.to_string()),
    ("drop", |r| format!("\"{}\"", r.drop)),
    ("params", |r| r.params.to_string()),
    ("params_kept", |r| format!("{:.6}", r.params_kept)),
    ("perplexity", |r| r.measured.perplexity.to_string()),
    ("mean_kl", |r| r.measured.mean_kl.to_string()),
    ("top1_agreement", |r| r.measured.top1_agreement.to_string()),
    ("heal_choices", |r| {
        format!(
            "\"{}\"",
            r.heal_choices.as_deref().unwrap_or_default().join(" ")
        )
    }),
    ("healed_perplexity", |r| num(r.healed.map(|h| h.perplexity))),
    ("healed_mean_kl", |r| num(r.healed.map(|h| h.mean_kl))),
    ("healed_top1_agreement", |r| {
        num(r.healed.map(|h| h.top1_agreement))
    }),
    ("perplexity_lo", |r| {
        num(r.measured.perplexity_ci.map(|c| c[0]))
    }),
    ("perplexity_hi", |r| {
        num(r.measured.perplexity_ci.map(|c| c[1]))
    }),
    ("mean_kl_lo", |r| num(r.measured.mean_kl_ci.map(|c| c[0]))),
    ("mean_kl_hi", |r| num(r.measured.mean_kl_ci.map(|c| c[1]))),
    ("top1_agreement_lo", |r| {
        num(r.measured.top1_agreement_ci.map(|c| c[0]))
    }),
    ("top1_agreement_hi", |r| {
        num(r.measured.top1_agreement_ci.map(|c| c[1]))
    }),
    ("select_perplexity", |r| num(r.select_perplexity)),
    ("ppl_vs_dense", |r| num(r.ppl_vs_dense.map(|d| d.estimate))),
    ("ppl_vs_dense_lo", |r| num(r.ppl_vs_dense.map(|d| d.ci[0]))),
    ("ppl_vs_dense_hi", |r| num(r.ppl_vs_dense.map(|d| d.ci[1]))),
    ("healed_perplexity_lo", |r| {
        num(r.healed.and_then(|h| h.perplexity_ci).map(|c| c[0]))
    }),
    ("healed_perplexity_hi", |r| {
        num(r.healed.and_then(|h| h.perplexity_ci).map(|c| c[1]))
    }),
    ("healed_select_perplexity", |r| {
        num(r.healed_select_perplexity)
    }),
    // The first task's accuracies (the columns of sweeps that took one task); every task's
    // headline follows at the end.
    ("acc", |r| first_task(r, |t| t.metrics.get("acc").copied())),
    ("acc_lo", |r| first_task(r, |t| headline_ci(t, "acc", 0))),
    ("acc_hi", |r| first_task(r, |t| headline_ci(t, "acc", 1))),
    ("acc_norm", |r| {
        first_task(r, |t| t.metrics.get("acc_norm").copied())
    }),
    ("acc_norm_lo", |r| {
        first_task(r, |t| headline_ci(t, "acc_norm", 0))
    }),
    ("acc_norm_hi", |r| {
        first_task(r, |t| headline_ci(t, "acc_norm", 1))
    }),
    ("stability_same", |r| num(r.stability.map(|s| s.same))),
    ("stability_overlap", |r| num(r.stability.map(|s| s.overlap))),
];

/// `f` of the row's first task.
fn first_task(r: &SweepRow, f: impl Fn(&TaskMetric) -> Option<f64>) -> String {
    num(r.task_metrics.first().and_then(f))
}

/// An end of the interval of `metric` when it is the task's headline.
fn headline_ci(t: &TaskMetric, metric: &str, end: usize) -> Option<f64> {
    (t.metric == metric).then_some(t.ci[end])
}

/// One CSV row per strategy and count, with the columns of `COLUMNS`, then, for each extra
/// healing method `M` (`--heal A,M,…`), `healed_M_perplexity`, `healed_M_mean_kl` and
/// `healed_M_top1_agreement`, then for each task `T` with headline metric `X` (`--tasks`),
/// `T_X`, `T_X_lo`, `T_X_hi`, `T_X_retention` and, healed, the same prefixed `healed_` (the
/// first method) and `healed_M_` (each further method `M`).
pub fn csv(s: &Sweep) -> String {
    let mut methods: Vec<&String> = s.rows.iter().flat_map(|r| r.healed_by.keys()).collect();
    methods.sort();
    methods.dedup();
    let mut names: Vec<String> = COLUMNS.iter().map(|c| c.0.to_string()).collect();
    for m in &methods {
        for f in ["perplexity", "mean_kl", "top1_agreement"] {
            names.push(format!("healed_{m}_{f}"));
        }
    }
    let mut variants = vec![String::new()];
    if s.heal.is_some() {
        variants.push("healed_".to_string());
        variants.extend(methods.iter().map(|m| format!("healed_{m}_")));
    }
    for v in &variants {
        for task in &s.task_list {
            let base = format!("{v}{}_{}", task.task, task.metric);
            for end in ["", "_lo", "_hi", "_retention"] {
                names.push(format!("{base}{end}"));
            }
        }
    }
    let mut t = names.join(",");
    t.push('\n');
    for r in &s.rows {
        let mut cells: Vec<String> = COLUMNS.iter().map(|c| (c.1)(r)).collect();
        for m in &methods {
            let h = r.healed_by.get(*m);
            cells.push(num(h.map(|h| h.perplexity)));
            cells.push(num(h.map(|h| h.mean_kl)));
            cells.push(num(h.map(|h| h.top1_agreement)));
        }
        for (i, _) in variants.iter().enumerate() {
            let list = match i {
                0 => Some(&r.task_metrics),
                1 => Some(&r.healed_task_metrics),
                _ => r.healed_by_task_metrics.get(methods[i - 2]),
            };
            for task in &s.task_list {
                let m = list.and_then(|l| l.iter().find(|m| m.task == task.task));
                cells.push(num(m.map(|m| m.value)));
                cells.push(num(m.map(|m| m.ci[0])));
                cells.push(num(m.map(|m| m.ci[1])));
                cells.push(num(m.and_then(|m| m.retention)));
            }
        }
        let _ = writeln!(t, "{}", cells.join(","));
    }
    t
}
