//! The study as Markdown: `report.md` for a sweep, and the evaluation section that a pruned
//! checkpoint's model card carries. Rendering only: the numbers and generations come in.

use super::papers::{metric_cell, papers_table};
use crate::eval::Interval;
use crate::sweep::{EvalSet, Measured, Sweep, SweepRow};
use std::fmt::Write;

/// Fewer evaluation windows than this make a bootstrap interval rough; the report says so.
pub const FEW_WINDOWS: usize = 20;

/// The prompts `report` generates from unless given others.
pub const DEFAULT_PROMPTS: [&str; 4] = [
    "What is the capital of France?",
    "Explain what a neural network is in one sentence.",
    "Write a short poem about the sea.",
    "List three prime numbers and explain why they are prime.",
];

/// One prompt's generations: the dense model's and each compared model's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Generations {
    pub prompt: String,
    /// `(model label, text)`, the dense model first.
    pub outputs: Vec<(String, String)>,
}

/// A checkpoint written to disk and measured like the sweep's cells (e.g. the healed prune).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Checkpoint {
    pub label: String,
    pub path: String,
    pub params: u64,
    pub measured: Measured,
}

/// What goes into `report.md` besides the sweep.
pub struct ReportParts<'a> {
    /// The number of layers removed that the generations and the summary are about.
    pub k: usize,
    /// The sweep's best row at `k`.
    pub chosen: Option<&'a SweepRow>,
    pub generations: &'a [Generations],
    /// How the generations were made, in one sentence.
    pub decoding: String,
    /// Written checkpoints measured on the evaluation windows.
    pub checkpoints: &'a [Checkpoint],
    /// Markdown saying where the text came from and its limits.
    pub text_note: Option<String>,
    /// `(caption, relative path)` of each plot.
    pub plots: &'a [(String, String)],
}

pub(super) fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// ` [lo, hi]` with `digits` decimals, or nothing when there is no interval.
pub(super) fn ci(i: Option<Interval>, digits: usize) -> String {
    i.map(|c| format!(" [{:.digits$}, {:.digits$}]", c[0], c[1]))
        .unwrap_or_default()
}

/// A share and its interval, in percent.
fn pct_ci(x: f64, i: Option<Interval>) -> String {
    format!(
        "{}{}",
        pct(x),
        ci(i.map(|c| [100.0 * c[0], 100.0 * c[1]]), 1)
    )
}

/// A slice of text in words.
fn describe(e: &EvalSet) -> String {
    format!(
        "`{}`, {} windows of {} tokens from token {} ({} scored tokens)",
        e.file, e.windows, e.ctx, e.offset_tokens, e.scored_tokens
    )
}

fn millions(p: u64) -> String {
    format!("{:.1}M", p as f64 / 1e6)
}

/// Escapes text for a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
        .replace("\r\n", "<br>")
        .replace('\n', "<br>")
}

/// The results table: one row per strategy and count (the dense row once), each figure with its
/// 95% interval.
pub fn results_table(s: &Sweep) -> String {
    let healed = s.heal.is_some();
    let tasks = s.task_list.len();
    let stable = s.resamples.is_some();
    let mut t = String::new();
    t.push_str("| strategy | layers removed | removed (`--drop`) | parameters | perplexity | Δ vs dense | KL to dense | top-1 agreement |");
    if s.select.is_some() {
        t.push_str(" validation perplexity |");
    }
    if healed {
        t.push_str(" healed perplexity | healed KL | healed top-1 |");
    }
    for task in &s.task_list {
        let _ = write!(t, " {} {} |", task.task, task.metric);
    }
    if stable {
        t.push_str(" same choice | overlap |");
    }
    t.push('\n');
    t.push_str("|---|---:|---|---:|---:|---:|---:|---:|");
    let extra =
        usize::from(s.select.is_some()) + 3 * usize::from(healed) + tasks + 2 * usize::from(stable);
    t.push_str(&"---:|".repeat(extra));
    t.push('\n');
    let blank = |n: usize| " |".repeat(n);
    let _ = write!(
        t,
        "| dense | 0 | – | {} | {:.3}{} | – | 0 | 100% |",
        millions(s.dense_params),
        s.dense_perplexity,
        ci(s.dense_perplexity_ci, 3),
    );
    if s.select.is_some() {
        let v = s
            .rows
            .iter()
            .find(|r| r.k == 0)
            .and_then(|r| r.select_perplexity);
        let _ = write!(t, " {} |", v.map(|v| format!("{v:.3}")).unwrap_or_default());
    }
    t.push_str(&blank(3 * usize::from(healed)));
    for task in &s.task_list {
        let _ = write!(t, " {} |", metric_cell(Some(&task.dense), false));
    }
    t.push_str(&blank(2 * usize::from(stable)));
    t.push('\n');
    for r in s.rows.iter().filter(|r| r.k > 0) {
        let m = &r.measured;
        let _ = write!(
            t,
            "| {} | {} | `{}` | {} ({}) | {:.3}{} | {} | {:.4}{} | {} |",
            r.strategy,
            r.k,
            r.drop,
            millions(r.params),
            pct(r.params_kept),
            m.perplexity,
            ci(m.perplexity_ci, 3),
            r.ppl_vs_dense
                .map(|d| format!("{:+.3}{}", d.estimate, ci(Some(d.ci), 3)))
                .unwrap_or_default(),
            m.mean_kl,
            ci(m.mean_kl_ci, 4),
            pct_ci(m.top1_agreement, m.top1_agreement_ci)
        );
        if s.select.is_some() {
            let _ = write!(
                t,
                " {} |",
                r.select_perplexity
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or_default()
            );
        }
        if let Some(h) = &r.healed {
            let _ = write!(
                t,
                " {:.3}{} | {:.4}{} | {} |",
                h.perplexity,
                ci(h.perplexity_ci, 3),
                h.mean_kl,
                ci(h.mean_kl_ci, 4),
                pct_ci(h.top1_agreement, h.top1_agreement_ci)
            );
        } else if healed {
            t.push_str(&blank(3));
        }
        for task in &s.task_list {
            let m = r.task_metrics.iter().find(|m| m.task == task.task);
            let _ = write!(t, " {} |", metric_cell(m, true));
        }
        if stable {
            match &r.stability {
                Some(c) => {
                    let _ = write!(t, " {} | {:.2} |", pct(c.same), c.overlap);
                }
                None => t.push_str(&blank(2)),
            }
        }
        t.push('\n');
    }
    t
}

/// The best choice at each count, how it was chosen and whether the runner-up can be told apart.
fn summary(s: &Sweep, t: &mut String) {
    if s.select.is_some() {
        t.push_str(
            "\"Best\" is the lowest perplexity on the **validation** slice at each count (healed, \
             when healed); the figures below are its perplexity on the separate **evaluation** \
             slice, so the choice is not made on the text that measures it. Brackets are 95% \
             intervals from a bootstrap over evaluation windows; \"runner-up\" is the next-best \
             strategy that removes different layers, and its gap to the best is a paired \
             bootstrap over the same windows.\n\n",
        );
    } else {
        t.push_str(
            "\"Best\" is the lowest perplexity on the evaluation text at each count: this sweep \
             was written before validation slices existed, so the choice is made on the same \
             text that measures it.\n\n",
        );
    }
    let mut tied = Vec::new();
    for k in s.counts.iter().filter(|&&k| k > 0) {
        let Some(b) = s.best.get(&k.to_string()) else {
            continue;
        };
        let _ = write!(
            t,
            "- {k} removed: **{}** (`{}`), perplexity {:.2}{}",
            b.strategy,
            b.drop,
            b.perplexity,
            ci(b.perplexity_ci, 2)
        );
        if let Some(v) = b.select_perplexity.filter(|_| s.select.is_some()) {
            let _ = write!(t, " (validation {v:.2})");
        }
        match &b.runner_up {
            Some(u) => {
                let d = &u.difference;
                let _ = write!(
                    t,
                    "; runner-up {} (`{}`) {:+.2}{}",
                    u.strategy,
                    u.drop,
                    d.estimate,
                    ci(Some(d.ci), 2)
                );
                if d.separates() && d.estimate < 0.0 {
                    // Chosen on validation text, beaten on evaluation text: the choice did not
                    // carry over, which is what choosing on held-out text can reveal.
                    t.push_str(
                        ", lower on the evaluation slice: the validation choice did not carry over",
                    );
                } else if d.separates() {
                    t.push_str(", a real gap at this sample size");
                } else {
                    t.push_str(", **cannot be told apart at this sample size**");
                    tied.push(format!("{k} ({} vs {})", b.strategy, u.strategy));
                }
            }
            None => t.push_str("; every strategy chose the same layers"),
        }
        t.push('\n');
    }
    if !tied.is_empty() {
        let _ = writeln!(
            t,
            "\nAt {} layers removed the best and the runner-up are within the noise of {} \
             evaluation windows: more evaluation text, not this table, would have to decide.",
            tied.join(", "),
            s.eval.windows
        );
    }
    t.push('\n');
}

/// The evaluation section for a model card: the setting and the best choice at each count.
pub fn evaluation_section(s: &Sweep, checkpoints: &[Checkpoint]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Measured by `depthprune sweep` on `{}`: {} windows of {} tokens from token {} ({} scored tokens). \
         KL is KL(dense ‖ pruned) per token in nats; top-1 agreement is the share of tokens where both \
         models rank the same token first. The dense model's perplexity is {:.3}{}. Brackets are 95% \
         intervals from a bootstrap over the evaluation windows.\n",
        s.eval.file, s.eval.windows, s.eval.ctx, s.eval.offset_tokens, s.eval.scored_tokens, s.dense_perplexity,
        ci(s.dense_perplexity_ci, 3)
    );
    if !checkpoints.is_empty() {
        t.push_str("| checkpoint | parameters | perplexity | KL to dense | top-1 agreement |\n|---|---:|---:|---:|---:|\n");
        for c in checkpoints {
            let _ = writeln!(t, "| {} | {} |", c.label, checkpoint_cells(c));
        }
        t.push('\n');
    }
    t.push_str(&results_table(s));
    t
}

/// A written checkpoint's parameters, perplexity, KL and top-1 agreement, as table cells.
fn checkpoint_cells(c: &Checkpoint) -> String {
    let m = &c.measured;
    format!(
        "{} | {:.3}{} | {:.4}{} | {}",
        millions(c.params),
        m.perplexity,
        ci(m.perplexity_ci, 3),
        m.mean_kl,
        ci(m.mean_kl_ci, 4),
        pct_ci(m.top1_agreement, m.top1_agreement_ci)
    )
}

/// A model's name from where it was read: the file name without its extension (a GGUF), or the
/// folder's name.
pub fn model_name_of_path(path: &str) -> String {
    let p = std::path::Path::new(path.trim_end_matches('/'));
    let name = if p
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        p.file_stem()
    } else {
        p.file_name()
    };
    name.map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}

/// The whole `report.md`.
pub fn render(s: &Sweep, parts: &ReportParts<'_>) -> String {
    let mut t = String::new();
    let name = s
        .model_name
        .clone()
        .unwrap_or_else(|| model_name_of_path(&s.model));
    let _ = writeln!(t, "# Depth-pruning study: {name}\n");
    let _ = writeln!(t, "Model: {name}, read from `{}`.\n", s.model);
    let _ = writeln!(
        t,
        "{} layers; {} parameters. Strategies: {}. Layers removed: {}. Layer numbers are 0-based and \
         ranges half-open (`20..28` is layers 20 to 27).\n",
        s.n_layers,
        millions(s.dense_params),
        s.strategies.join(", "),
        s.counts
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !s.task_list.is_empty() {
        t.push_str("## Benchmarks\n\n");
        let _ = writeln!(
            t,
            "Each task's headline metric (lm-eval's name) with its 95% interval from a bootstrap \
             over the questions and, in parentheses, the share of the dense model's score kept; \
             perplexity on the evaluation text (`{}`) with its interval over windows. At each \
             number of layers removed, the study's choice (lowest validation perplexity, healed \
             when healed), unhealed and healed by each method the sweep ran.\n",
            s.eval.file
        );
        t.push_str(&papers_table(s));
        t.push('\n');
    }
    t.push_str("## Method\n\n");
    t.push_str(
        "Each strategy scores the layers on the calibration text and chooses the layers to remove; \
         the removal is applied virtually (the layers are skipped) and measured on the evaluation \
         text against the dense model. `angular` is Gromov et al.'s angular distance between a \
         block's input and output (one contiguous block); `bi` is ShortGPT's Block Influence; \
         `ppl` is the calibration perplexity with each single layer removed (Shortened LLaMA); \
         `greedy` removes layers one at a time by calibration perplexity (SLEB); `last` removes \
         the last layers before the final one (a baseline).\n\n",
    );
    t.push_str("Three disjoint slices of text:\n\n");
    match &s.calibration {
        Some(c) => {
            let _ = writeln!(
                t,
                "- Calibration (scores the layers): `{}`, {} windows of {} tokens from token {} (angular distance on {} tokens).",
                c.file, c.samples, c.ctx, c.offset_tokens, c.tokens
            );
        }
        None => t.push_str("- Calibration: none (the strategies need no text).\n"),
    }
    if let Some(v) = &s.select {
        let _ = writeln!(
            t,
            "- Validation (chooses the best removal at each count): {}.",
            describe(v)
        );
    }
    let _ = writeln!(
        t,
        "- Evaluation (measures every cell): {}.",
        describe(&s.eval)
    );
    if let Some(b) = &s.bootstrap {
        let _ = writeln!(
            t,
            "- Intervals: 95% percentile intervals from a bootstrap over the {} evaluation windows \
             ({} resamples, seed {}); differences are paired (the same windows drawn for both sides). \
             They measure how the figures vary across windows of this text, not across other texts.{}",
            s.eval.windows,
            b.resamples,
            b.seed,
            if s.eval.windows < FEW_WINDOWS {
                format!(
                    " With only {} windows the intervals are rough and tend to be too narrow; \
                     use at least {FEW_WINDOWS} (`--eval-samples`) for figures to cite.",
                    s.eval.windows
                )
            } else {
                String::new()
            }
        );
    }
    if let Some(k) = s.resamples {
        let rescored: Vec<&str> = s
            .scores
            .iter()
            .filter(|sc| !sc.metric.reweights_resamples())
            .map(|sc| sc.metric.name())
            .collect();
        let how = if rescored.is_empty() {
            String::new()
        } else {
            format!(
                " ({} scored each resample's windows again, since its path depends on them)",
                rescored.join(", ")
            )
        };
        let _ = writeln!(
            t,
            "- Stability: each strategy also scored on {k} bootstrap resamples of the calibration \
             windows, by counting each window of the one scoring pass as often as the resample drew \
             it{how}; \"same choice\" is the share of resamples that remove exactly the same \
             layers, \"overlap\" their mean Jaccard overlap with the chosen layers."
        );
    }
    for task in &s.task_list {
        let _ = writeln!(
            t,
            "- Task `{}`: `{}`, {} questions, scored as `eval --tasks` scores them (headline \
             `{}`), intervals by a bootstrap over questions.",
            task.task, task.data, task.n, task.metric
        );
    }
    if let Some(h) = &s.heal {
        let _ = writeln!(
            t,
            "- Healing: least-squares map per removed block folded into the `down_proj` before it (ReplaceMe-style), {h}."
        );
    }
    let _ = writeln!(t, "- Sweep time: {:.0} s.\n", s.seconds);
    if let Some(note) = &parts.text_note {
        t.push_str("## Text\n\n");
        t.push_str(note.trim());
        t.push_str("\n\n");
    }
    t.push_str("## Summary\n\n");
    if let Some(r) = parts.chosen {
        let m = r.healed.unwrap_or(r.measured);
        let _ = writeln!(
            t,
            "Best at {} layers removed: **{}**, `--drop {}` (removed {:?}); {} of the parameters kept; \
             perplexity {:.3}{} against {:.3}{} dense{}; KL {:.4}{} nats; top-1 agreement {}.\n",
            parts.k,
            r.strategy,
            r.drop,
            r.removed,
            pct(r.params_kept),
            m.perplexity,
            ci(m.perplexity_ci, 3),
            s.dense_perplexity,
            ci(s.dense_perplexity_ci, 3),
            if r.healed.is_some() {
                format!(" (unhealed {:.3})", r.measured.perplexity)
            } else {
                String::new()
            },
            m.mean_kl,
            ci(m.mean_kl_ci, 4),
            pct_ci(m.top1_agreement, m.top1_agreement_ci)
        );
    }
    summary(s, &mut t);
    if !parts.checkpoints.is_empty() {
        t.push_str("## Written checkpoints\n\n| checkpoint | path | parameters | perplexity | KL to dense | top-1 agreement |\n|---|---|---:|---:|---:|---:|\n");
        for c in parts.checkpoints {
            let _ = writeln!(
                t,
                "| {} | `{}` | {} |",
                c.label,
                c.path,
                checkpoint_cells(c)
            );
        }
        t.push('\n');
    }
    t.push_str("## Plots\n\n");
    for (caption, path) in parts.plots {
        let _ = writeln!(t, "![{caption}]({path})\n");
    }
    t.push_str("## Results\n\n");
    t.push_str(&results_table(s));
    t.push('\n');
    if !parts.generations.is_empty() {
        t.push_str("## Generations\n\n");
        let _ = writeln!(t, "{}\n", parts.decoding);
        for g in parts.generations {
            let _ = writeln!(t, "**Prompt:** {}\n", cell(&g.prompt));
            t.push_str("| model | output |\n|---|---|\n");
            for (label, text) in &g.outputs {
                let _ = writeln!(t, "| {} | {} |", cell(label), cell(text.trim()));
            }
            t.push('\n');
        }
    }
    t.push_str("---\nWritten by `depthprune report`.\n");
    t
}
