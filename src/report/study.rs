//! The study as Markdown: `report.md` for a sweep, and the evaluation section that a pruned
//! checkpoint's model card carries. Rendering only: the numbers and generations come in.

use crate::sweep::{Measured, Sweep, SweepRow};
use std::fmt::Write;

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

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
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

/// The results table: one row per strategy and count (the dense row once).
pub fn results_table(s: &Sweep) -> String {
    let healed = s.heal.is_some();
    let mut t = String::new();
    t.push_str("| strategy | layers removed | removed (`--drop`) | parameters | perplexity | KL to dense | top-1 agreement |");
    if healed {
        t.push_str(" healed perplexity | healed KL | healed top-1 |");
    }
    t.push('\n');
    t.push_str("|---|---:|---|---:|---:|---:|---:|");
    if healed {
        t.push_str("---:|---:|---:|");
    }
    t.push('\n');
    let _ = writeln!(
        t,
        "| dense | 0 | – | {} | {:.3} | 0 | 100% |{}",
        millions(s.dense_params),
        s.dense_perplexity,
        if healed { " | | |" } else { "" }
    );
    for r in s.rows.iter().filter(|r| r.k > 0) {
        let m = &r.measured;
        let _ = write!(
            t,
            "| {} | {} | `{}` | {} ({}) | {:.3} | {:.4} | {} |",
            r.strategy,
            r.k,
            r.drop,
            millions(r.params),
            pct(r.params_kept),
            m.perplexity,
            m.mean_kl,
            pct(m.top1_agreement)
        );
        if let Some(h) = &r.healed {
            let _ = write!(
                t,
                " {:.3} | {:.4} | {} |",
                h.perplexity,
                h.mean_kl,
                pct(h.top1_agreement)
            );
        } else if healed {
            t.push_str(" | | |");
        }
        t.push('\n');
    }
    t
}

/// The evaluation section for a model card: the setting and the best choice at each count.
pub fn evaluation_section(s: &Sweep, checkpoints: &[Checkpoint]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Measured by `depthprune sweep` on `{}`: {} windows of {} tokens from token {} ({} scored tokens). \
         KL is KL(dense ‖ pruned) per token in nats; top-1 agreement is the share of tokens where both \
         models rank the same token first. The dense model's perplexity is {:.3}.\n",
        s.eval.file, s.eval.windows, s.eval.ctx, s.eval.offset_tokens, s.eval.scored_tokens, s.dense_perplexity
    );
    if !checkpoints.is_empty() {
        t.push_str("| checkpoint | parameters | perplexity | KL to dense | top-1 agreement |\n|---|---:|---:|---:|---:|\n");
        for c in checkpoints {
            let _ = writeln!(
                t,
                "| {} | {} | {:.3} | {:.4} | {} |",
                c.label,
                millions(c.params),
                c.measured.perplexity,
                c.measured.mean_kl,
                pct(c.measured.top1_agreement)
            );
        }
        t.push('\n');
    }
    t.push_str(&results_table(s));
    t
}

/// The whole `report.md`.
pub fn render(s: &Sweep, parts: &ReportParts<'_>) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "# Depth-pruning study: `{}`\n", s.model);
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
    match &s.calibration {
        Some(c) => {
            let _ = writeln!(
                t,
                "- Calibration: `{}`, {} windows of {} tokens from token {} (angular distance on {} tokens).",
                c.file, c.samples, c.ctx, c.offset_tokens, c.tokens
            );
        }
        None => t.push_str("- Calibration: none (the strategies need no text).\n"),
    }
    let _ = writeln!(
        t,
        "- Evaluation: `{}`, {} windows of {} tokens from token {} ({} scored tokens).",
        s.eval.file, s.eval.windows, s.eval.ctx, s.eval.offset_tokens, s.eval.scored_tokens
    );
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
    t.push_str(
        "\"Best\" is the lowest perplexity on the evaluation text at each count, so the choice is \
         made on the same text that measures it; for an unbiased figure, measure the chosen \
         removal on further held-out text.\n\n",
    );
    if let Some(r) = parts.chosen {
        let m = r.healed.unwrap_or(r.measured);
        let _ = writeln!(
            t,
            "Best at {} layers removed: **{}**, `--drop {}` (removed {:?}); {} of the parameters kept; \
             perplexity {:.3} against {:.3} dense{}; KL {:.4} nats; top-1 agreement {}.\n",
            parts.k,
            r.strategy,
            r.drop,
            r.removed,
            pct(r.params_kept),
            m.perplexity,
            s.dense_perplexity,
            if r.healed.is_some() {
                format!(" (unhealed {:.3})", r.measured.perplexity)
            } else {
                String::new()
            },
            m.mean_kl,
            pct(m.top1_agreement)
        );
    }
    for k in s.counts.iter().filter(|&&k| k > 0) {
        if let Some(r) = s.best_at(*k) {
            let m = r.healed.unwrap_or(r.measured);
            let _ = writeln!(
                t,
                "- {k} removed: {} (`{}`), perplexity {:.2}",
                r.strategy, r.drop, m.perplexity
            );
        }
    }
    t.push('\n');
    if !parts.checkpoints.is_empty() {
        t.push_str("## Written checkpoints\n\n| checkpoint | path | parameters | perplexity | KL to dense | top-1 agreement |\n|---|---|---:|---:|---:|---:|\n");
        for c in parts.checkpoints {
            let _ = writeln!(
                t,
                "| {} | `{}` | {} | {:.3} | {:.4} | {} |",
                c.label,
                c.path,
                millions(c.params),
                c.measured.perplexity,
                c.measured.mean_kl,
                pct(c.measured.top1_agreement)
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
