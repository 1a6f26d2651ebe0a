//! `sweep.csv`: one row per strategy and count, the columns named in one place.

use super::{Sweep, SweepRow};
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
    ("acc", |r| num(r.tasks.as_ref().map(|t| t.acc))),
    ("acc_lo", |r| num(r.tasks.as_ref().map(|t| t.acc_ci[0]))),
    ("acc_hi", |r| num(r.tasks.as_ref().map(|t| t.acc_ci[1]))),
    ("acc_norm", |r| num(r.tasks.as_ref().map(|t| t.acc_norm))),
    ("acc_norm_lo", |r| {
        num(r.tasks.as_ref().map(|t| t.acc_norm_ci[0]))
    }),
    ("acc_norm_hi", |r| {
        num(r.tasks.as_ref().map(|t| t.acc_norm_ci[1]))
    }),
    ("stability_same", |r| num(r.stability.map(|s| s.same))),
    ("stability_overlap", |r| num(r.stability.map(|s| s.overlap))),
];

/// One CSV row per strategy and count, with the columns of `COLUMNS`, then, for each extra
/// healing method `M` (`--heal A,M,…`), `healed_M_perplexity`, `healed_M_mean_kl` and
/// `healed_M_top1_agreement`.
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
        let _ = writeln!(t, "{}", cells.join(","));
    }
    t
}
