//! `report.md` for a sweep folder: the setting, the table, the plots, written checkpoints
//! measured on the sweep's evaluation slice, and greedy generations side by side. A pruned HF
//! folder's model card gets the same evaluation section.

use super::text::TextSlice;
use crate::arch::ParamCounts;
use crate::checkpoint::card::{replace_evaluation, CARD_FILE};
use crate::checkpoint::provenance::{hash_file, PROVENANCE_FILE};
use crate::error::{Error, IoContext, Result};
use crate::eval::{self, Convention, Run};
use crate::model::{generate, GenerateOpts, Model, Sampler, Sampling};
use crate::progress::{Progress, Silent};
use crate::report::study::{
    evaluation_section, render, Checkpoint, Generations, ReportParts, DEFAULT_PROMPTS,
};
use crate::sweep::{Measured, Sweep};
use crate::tokenizer::{open_tokenizer, HfTokenizer, Message};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What `report` adds to a sweep folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(default)]
pub struct ReportRequest {
    /// Layers removed for the summary and the generations (default: the largest count ≤ 8).
    #[cfg_attr(feature = "cli", arg(long, value_name = "K"))]
    pub k: Option<usize>,
    /// Pruned checkpoints (HF folder or .gguf) to measure and generate from; an HF folder's
    /// README.md gets the evaluation section.
    #[cfg_attr(feature = "cli", arg(long, value_name = "PATH"))]
    pub pruned: Vec<PathBuf>,
    /// Prompts, one per line (default: four built-in prompts).
    #[cfg_attr(feature = "cli", arg(long, value_name = "FILE"))]
    pub prompts: Option<PathBuf>,
    /// New tokens per generation.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 40, value_name = "N"))]
    pub max_new_tokens: usize,
    /// Markdown to include about where the text came from and its limits.
    #[cfg_attr(feature = "cli", arg(long, value_name = "FILE"))]
    pub text_note: Option<PathBuf>,
    /// How the call runs: precision, threads, symlink policy (the CLI's global flags).
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", arg(skip))]
    pub run: crate::api::RunOptions,
}

impl Default for ReportRequest {
    fn default() -> Self {
        ReportRequest {
            k: None,
            pruned: Vec::new(),
            prompts: None,
            max_new_tokens: 40,
            text_note: None,
            run: crate::api::RunOptions::default(),
        }
    }
}

/// Options for [`write_report`] beyond the sweep, read from a [`ReportRequest`].
#[derive(Default)]
pub struct ReportOptions {
    pub pruned: Vec<PathBuf>,
    pub prompts: Option<Vec<String>>,
    pub max_new_tokens: usize,
    pub text_note: Option<String>,
}

fn not_json(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("`{}`: {what}: {e}", path.display()))
}

/// Writes `dir/report.md` for the sweep in `dir` (its `sweep.json`); returns its path.
pub fn report(dir: &Path, req: &ReportRequest, progress: &dyn Progress) -> Result<PathBuf> {
    req.run.install(progress, || {
        // A study cut off before its end (issue 33): its journal says what is missing.
        if let Some(missing) = crate::sweep::journal::missing_cells(dir)? {
            if !missing.is_empty() {
                return Err(Error::Invalid(format!(
                    "the study in `{}` is not finished: {} cells are missing ({})\nhint: finish it with the same `depthprune sweep` command and `--resume`",
                    dir.display(),
                    missing.len(),
                    crate::sweep::journal::describe_cells(&missing)
                )));
            }
        }
        let path = dir.join("sweep.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::Invalid(format!(
                "`{}`: cannot read ({e}); run `depthprune sweep` first",
                path.display()
            ))
        })?;
        let sweep: Sweep =
            serde_json::from_str(&text).map_err(|e| not_json(&path, "not a sweep file", e))?;
        // The report goes into `dir`: never the model's folder, nor a folder holding it.
        let mut inputs = vec![PathBuf::from(&sweep.model)];
        inputs.extend(req.prompts.iter().chain(&req.text_note).cloned());
        crate::base::guard::check_output(dir, &inputs)?;
        let model = Model::open(Path::new(&sweep.model))?;
        let (tok, _) = open_tokenizer(Path::new(&sweep.model))?;
        let prompts = match &req.prompts {
            Some(p) => {
                let text = eval::read_text(p)?;
                let v: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect();
                if v.is_empty() {
                    return Err(Error::Invalid(format!(
                        "`{}`: no prompts (one per line)",
                        p.display()
                    )));
                }
                Some(v)
            }
            None => None,
        };
        let text_note = req
            .text_note
            .as_ref()
            .map(|p| eval::read_text(p))
            .transpose()?;
        let k = req.k.unwrap_or_else(|| sweep.default_k());
        if req.max_new_tokens > super::generate::MAX_NEW_TOKENS {
            return Err(Error::Invalid(format!(
                "`max_new_tokens` {}: at most {}",
                req.max_new_tokens,
                super::generate::MAX_NEW_TOKENS
            )));
        }
        write_report(
            dir,
            &sweep,
            &model,
            &tok,
            k,
            Some(ReportOptions {
                pruned: req.pruned.clone(),
                prompts,
                max_new_tokens: req.max_new_tokens,
                text_note,
            }),
            progress,
        )
    })
}

/// Greedy generation of `max_new` tokens after `prompt`, rendered with the chat template when
/// the tokenizer has one.
fn complete(
    model: &Model,
    tok: &HfTokenizer,
    skip: &[usize],
    prompt: &str,
    max_new: usize,
) -> Result<String> {
    let ids = if tok.has_chat_template() {
        let text = tok.render_chat(&[Message {
            role: "user".into(),
            content: prompt.into(),
        }])?;
        tok.encode(&text, false)?
    } else {
        tok.encode(prompt, true)?
    };
    let opts = GenerateOpts {
        max_new,
        skip,
        eos: tok.eos_ids(),
        use_cache: true,
    };
    let mut sampler = Sampler::new(Sampling::greedy())?;
    let out = generate(model, &ids, &opts, &mut sampler, &mut |_| Ok(true))?;
    let ids: Vec<u32> = out
        .tokens
        .into_iter()
        .filter(|t| !tok.eos_ids().contains(t))
        .collect();
    tok.decode(&ids)
}

/// Measures `pruned` against `dense` on the sweep's evaluation windows.
fn measure(dense: &Model, pruned: &Model, tok: &HfTokenizer, s: &Sweep) -> Result<Measured> {
    let slice = TextSlice {
        file: PathBuf::from(&s.eval.file),
        offset: s.eval.offset_tokens,
        ctx: s.eval.ctx,
        windows: s.eval.windows,
    };
    let tokens: Vec<u32> = slice.cut(tok, "evaluation")?.concat();
    let conv = Convention::new(s.eval.ctx, None)?;
    let windows = eval::plan(tokens.len(), conv)?;
    let r = eval::evaluate(
        Run {
            model: pruned,
            skip: &[],
        },
        Some(Run {
            model: dense,
            skip: &[],
        }),
        &tokens,
        &windows,
        conv,
        4,
        &Silent,
    )?;
    let d = r
        .divergence
        .ok_or_else(|| Error::Invalid("no divergence computed".into()))?;
    Ok(Measured {
        perplexity: r.perplexity,
        mean_kl: d.mean_kl,
        top1_agreement: d.top1_agreement,
        perplexity_ci: Some(r.perplexity_ci),
        mean_kl_ci: Some(d.mean_kl_ci),
        top1_agreement_ci: Some(d.top1_agreement_ci),
    })
}

/// Records the card's new hash in `pruning.json`, so that `verify` still holds after the
/// evaluation section is filled in.
fn rehash_card(dir: &Path, card: &Path) -> Result<()> {
    let prov = dir.join(PROVENANCE_FILE);
    if !prov.is_file() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&prov).at(&prov)?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| not_json(&prov, "not JSON", e))?;
    let new = serde_json::to_value(hash_file(card)?).map_err(|e| not_json(&prov, "hash", e))?;
    if let Some(files) = v.get_mut("output").and_then(|o| o.as_array_mut()) {
        for f in files.iter_mut() {
            if f.get("name").and_then(|n| n.as_str()) == Some(CARD_FILE) {
                *f = new.clone();
            }
        }
    }
    let mut out = serde_json::to_string_pretty(&v).map_err(|e| not_json(&prov, "JSON", e))?;
    out.push('\n');
    std::fs::write(&prov, out).at(&prov)
}

/// The report's figures that exist in `dir`, with their captions.
fn plots(dir: &Path, sweep: &Sweep) -> Vec<(String, String)> {
    [
        ("perplexity by layers removed", "plots/ppl_vs_removed.png"),
        ("perplexity by parameters kept", "plots/ppl_vs_params.png"),
        ("zero-shot accuracy by layers removed", "plots/acc_vs_removed.png"),
        ("KL divergence from the dense model", "plots/kl_vs_removed.png"),
        ("angular distance of each block", "plots/angular_heatmap.png"),
        ("Block Influence per layer", "plots/bi_scores.png"),
        ("one-shot perplexity per layer", "plots/ppl_scores.png"),
        ("greedy removal curve", "plots/greedy_curve.png"),
    ]
    .iter()
    .map(|(c, p)| (c.to_string(), p.to_string()))
    .chain(sweep.layer_stability.iter().map(|(label, st)| {
        let metric = label.split(':').next().unwrap_or(label);
        (
            format!(
                "{label}: score stability over {} calibration resamples, and how often each layer is chosen at {} removed",
                st.resamples, st.k
            ),
            format!("plots/stability_{metric}.png"),
        )
    }))
    .filter(|(_, p)| dir.join(p).is_file())
    .collect()
}

/// Writes `dir/report.md` for `sweep`, generating from `model` (the dense model). Returns its path.
pub fn write_report(
    dir: &Path,
    sweep: &Sweep,
    model: &Model,
    tok: &HfTokenizer,
    k: usize,
    opts: Option<ReportOptions>,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let opts = opts.unwrap_or(ReportOptions {
        max_new_tokens: 40,
        ..Default::default()
    });
    // The sweep's charts are drawn again from sweep.json, so a report always shows the current
    // chart style (and never re-runs the model for it).
    let plots_dir = dir.join("plots");
    std::fs::create_dir_all(&plots_dir).at(&plots_dir)?;
    crate::report::sweep_plots::sweep_plots(&plots_dir, sweep)?;
    for (label, st) in &sweep.layer_stability {
        if let Some((_, sc)) = sweep
            .strategies
            .iter()
            .zip(&sweep.scores)
            .find(|(l, _)| *l == label)
        {
            crate::report::score_plots::plot_stability(&plots_dir, sc, st)?;
        }
    }
    let chosen = sweep.best_at(k);
    if chosen.is_none() {
        progress.warn(&format!(
            "the sweep has no row with {k} layers removed; the report has no pruned generations"
        ));
    }
    let mut pruned_models = Vec::new();
    let mut checkpoints = Vec::new();
    for p in &opts.pruned {
        progress.message(&format!("measuring {}", p.display()));
        let m = Model::open(p)?;
        let measured = measure(model, &m, tok, sweep)?;
        let label = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string());
        checkpoints.push(Checkpoint {
            label: label.clone(),
            path: p.display().to_string(),
            params: ParamCounts::from_config(&m.config().arch).total(),
            measured,
        });
        pruned_models.push((label, m));
    }
    let prompts: Vec<String> = opts
        .prompts
        .clone()
        .unwrap_or_else(|| DEFAULT_PROMPTS.iter().map(|s| s.to_string()).collect());
    progress.start("generations", prompts.len() as u64);
    let mut generations = Vec::new();
    for prompt in &prompts {
        let mut outputs = vec![(
            "dense".to_string(),
            complete(model, tok, &[], prompt, opts.max_new_tokens)?,
        )];
        if let Some(r) = chosen {
            outputs.push((
                format!("{} removed by {} (`{}`, skipped)", r.k, r.strategy, r.drop),
                complete(model, tok, &r.removed, prompt, opts.max_new_tokens)?,
            ));
        }
        for (label, m) in &pruned_models {
            outputs.push((
                label.clone(),
                complete(m, tok, &[], prompt, opts.max_new_tokens)?,
            ));
        }
        generations.push(Generations {
            prompt: prompt.clone(),
            outputs,
        });
        progress.advance(1);
    }
    progress.finish();
    let plots = plots(dir, sweep);
    let parts = ReportParts {
        k,
        chosen,
        generations: &generations,
        decoding: format!(
            "Greedy decoding (deterministic, no sampling), at most {} new tokens, {}.",
            opts.max_new_tokens,
            if tok.has_chat_template() {
                "each prompt wrapped as a user message in the model's chat template"
            } else {
                "the prompt as plain text"
            }
        ),
        checkpoints: &checkpoints,
        text_note: opts.text_note.clone(),
        plots: &plots,
    };
    let md = render(sweep, &parts);
    let out = dir.join("report.md");
    std::fs::write(&out, md).at(&out)?;
    let section = evaluation_section(sweep, &checkpoints);
    for p in &opts.pruned {
        let card = p.join(CARD_FILE);
        if !card.is_file() {
            continue;
        }
        let old = std::fs::read_to_string(&card).at(&card)?;
        match replace_evaluation(&old, &section) {
            Some(new) => {
                std::fs::write(&card, new).at(&card)?;
                rehash_card(p, &card)?;
            }
            None => progress.warn(&format!(
                "`{}` has no evaluation markers; its card was left as it is",
                card.display()
            )),
        }
    }
    Ok(out)
}
