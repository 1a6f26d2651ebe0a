//! The sweep's own charts from a [`Sweep`]: perplexity against layers removed and against
//! parameters kept, KL against layers removed, and with `--tasks` accuracy against layers
//! removed; each point with its 95% interval as an error bar (the legend names them, so titles
//! stay short enough for the plot area).

use super::plot::{line_chart, Axis, Reference, Series};
use crate::error::Result;
use crate::sweep::{Measured, Sweep, SweepRow};
use std::path::{Path, PathBuf};

/// A figure with its interval, when it has one.
type Point = (f64, Option<[f64; 2]>);
type Figure = fn(&Measured) -> Point;

/// One series per strategy (and per healed strategy), x from `x`, y and its interval from `y`.
fn series(s: &Sweep, x: fn(&SweepRow) -> f64, y: Figure) -> Vec<Series> {
    let mut out = Vec::new();
    for name in &s.strategies {
        let rows: Vec<&SweepRow> = s.rows.iter().filter(|r| &r.strategy == name).collect();
        let line = |name: String, ms: Vec<(f64, Measured)>| {
            let pts: Vec<(f64, Point)> = ms.into_iter().map(|(x, m)| (x, y(&m))).collect();
            Series {
                name,
                points: pts.iter().map(|(x, (v, _))| (*x, *v)).collect(),
                ci: if pts.iter().all(|(_, (_, c))| c.is_some()) {
                    pts.iter().filter_map(|(_, (_, c))| *c).collect()
                } else {
                    Vec::new()
                },
            }
        };
        out.push(line(
            name.clone(),
            rows.iter().map(|r| (x(r), r.measured)).collect(),
        ));
        if s.heal.is_some() {
            out.push(line(
                format!("{name} + heal"),
                rows.iter()
                    .filter_map(|r| r.healed.map(|h| (x(r), h)))
                    .collect(),
            ));
        }
    }
    out
}

/// Writes the charts into `dir`; returns the files written.
pub fn sweep_plots(dir: &Path, s: &Sweep) -> Result<Vec<PathBuf>> {
    let dense = Reference {
        label: format!("dense model ({:.2})", s.dense_perplexity),
        y: s.dense_perplexity,
    };
    let removed = |r: &SweepRow| r.k as f64;
    let ppl: Figure = |m| (m.perplexity, m.perplexity_ci);
    let mut files = line_chart(
        &dir.join("ppl_vs_removed"),
        "evaluation perplexity by layers removed",
        "layers removed",
        "perplexity (log scale)",
        &series(s, removed, ppl),
        Axis::LogCounts,
        Some(&dense),
    )?;
    files.extend(line_chart(
        &dir.join("ppl_vs_params"),
        "evaluation perplexity by parameters kept",
        "parameters kept (millions)",
        "perplexity (log scale)",
        &series(s, |r| r.params as f64 / 1e6, ppl),
        Axis::Log,
        Some(&dense),
    )?);
    files.extend(line_chart(
        &dir.join("kl_vs_removed"),
        "KL divergence from the dense model by layers removed",
        "layers removed",
        "mean KL(dense ‖ pruned), nats",
        &series(s, removed, |m| (m.mean_kl, m.mean_kl_ci)),
        Axis::LinearCounts,
        None,
    )?);
    // The first task's headline metric, unhealed, by layers removed.
    if let Some(t) = s.task_list.first() {
        let mut acc = Vec::new();
        for name in &s.strategies {
            let cells: Vec<(f64, f64, [f64; 2])> =
                std::iter::once((0.0, t.dense.value, t.dense.ci))
                    .chain(
                        (s.rows.iter())
                            .filter(|r| &r.strategy == name && r.k > 0)
                            .filter_map(|r| {
                                let m = r.task_metrics.iter().find(|m| m.task == t.task)?;
                                Some((r.k as f64, m.value, m.ci))
                            }),
                    )
                    .collect();
            acc.push(Series {
                name: name.clone(),
                points: cells.iter().map(|c| (c.0, c.1)).collect(),
                ci: cells.iter().map(|c| c.2).collect(),
            });
        }
        let dense_acc = Reference {
            label: format!("dense model ({:.3})", t.dense.value),
            y: t.dense.value,
        };
        files.extend(line_chart(
            &dir.join("acc_vs_removed"),
            &format!(
                "{} {} by layers removed ({} questions)",
                t.task, t.metric, t.n
            ),
            "layers removed",
            &t.metric,
            &acc,
            Axis::LinearCounts,
            Some(&dense_acc),
        )?);
    }
    Ok(files)
}
