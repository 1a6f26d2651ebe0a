//! `depthprune report DIR`: turns a sweep folder into `report.md`: the setting, the table, the
//! plots, written checkpoints measured the same way, and greedy generations side by side. With
//! `--pruned`, a pruned HF folder's model card gets the same evaluation section.

use super::output::{warn, Bar};
use anyhow::{bail, Context, Result};
use depthprune::arch::ParamCounts;
use depthprune::checkpoint::card::{replace_evaluation, CARD_FILE};
use depthprune::checkpoint::provenance::{hash_file, PROVENANCE_FILE};
use depthprune::eval::{self, Convention, Run};
use depthprune::model::{generate, GenerateOpts, Model, Sampler, Sampling};
use depthprune::progress::Silent;
use depthprune::report::study::{
    evaluation_section, render, Checkpoint, Generations, ReportParts, DEFAULT_PROMPTS,
};
use depthprune::sweep::{Measured, Sweep};
use depthprune::tokenizer::{open_tokenizer, HfTokenizer, Message};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune report study/\n  \
    depthprune report study/ --k 8 --pruned smol-22L-healed/ --text-note study/TEXT.md\n\n\
    DIR holds sweep.json from `depthprune sweep`. The generations are greedy (deterministic), from\n\
    the dense model, the sweep's best choice at --k layers removed (skipped in memory), and each\n\
    --pruned checkpoint.")]
pub struct Args {
    /// A folder written by `depthprune sweep` (holds sweep.json).
    pub dir: PathBuf,
    /// Layers removed for the summary and the generations (default: the largest count ≤ 8).
    #[arg(long, value_name = "K")]
    pub k: Option<usize>,
    /// Pruned checkpoints (HF folder or .gguf) to measure and generate from; an HF folder's
    /// README.md gets the evaluation section.
    #[arg(long, value_name = "PATH")]
    pub pruned: Vec<PathBuf>,
    /// Prompts, one per line (default: four built-in prompts).
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// New tokens per generation.
    #[arg(long, default_value_t = 40, value_name = "N")]
    pub max_new_tokens: usize,
    /// Markdown to include about where the text came from and its limits.
    #[arg(long, value_name = "FILE")]
    pub text_note: Option<PathBuf>,
}

/// Options for [`write_report`] beyond the sweep.
#[derive(Default)]
pub struct ReportOptions {
    pub pruned: Vec<PathBuf>,
    pub prompts: Option<Vec<String>>,
    pub max_new_tokens: usize,
    pub text_note: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let path = args.dir.join("sweep.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "`{}`: cannot read (run `depthprune sweep` first)",
            path.display()
        )
    })?;
    let sweep: Sweep = serde_json::from_str(&text)
        .with_context(|| format!("`{}`: not a sweep file", path.display()))?;
    let model = Model::open(Path::new(&sweep.model))?;
    let (tok, _) = open_tokenizer(Path::new(&sweep.model))?;
    let prompts = match &args.prompts {
        Some(p) => {
            let text = eval::read_text(p)?;
            let v: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            if v.is_empty() {
                bail!("`{}`: no prompts (one per line)", p.display());
            }
            Some(v)
        }
        None => None,
    };
    let text_note = args
        .text_note
        .as_ref()
        .map(|p| eval::read_text(p))
        .transpose()?;
    let k = args.k.unwrap_or_else(|| default_k(&sweep));
    let out = write_report(
        &args.dir,
        &sweep,
        &model,
        &tok,
        k,
        Some(ReportOptions {
            pruned: args.pruned,
            prompts,
            max_new_tokens: args.max_new_tokens,
            text_note,
        }),
    )?;
    println!("{}", out.display());
    Ok(())
}

/// The largest count of at most 8, else the largest.
pub fn default_k(s: &Sweep) -> usize {
    let max = s.counts.iter().copied().max().unwrap_or(0);
    s.counts
        .iter()
        .copied()
        .filter(|&k| k > 0 && k <= 8)
        .max()
        .unwrap_or(max)
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
    Ok(tok.decode(&ids)?)
}

/// Measures `pruned` against `dense` on the sweep's evaluation windows.
fn measure(dense: &Model, pruned: &Model, tok: &HfTokenizer, s: &Sweep) -> Result<Measured> {
    let tokens = eval::tokenize(tok, &eval::read_text(Path::new(&s.eval.file))?, None)?;
    let need = s.eval.offset_tokens + s.eval.ctx * s.eval.windows;
    if tokens.len() < need {
        bail!(
            "`{}`: {} tokens, fewer than the sweep's evaluation needs ({need})",
            s.eval.file,
            tokens.len()
        );
    }
    let slice = &tokens[s.eval.offset_tokens..need];
    let conv = Convention::new(s.eval.ctx, None)?;
    let windows = eval::plan(slice.len(), conv)?;
    let r = eval::evaluate(
        Run {
            model: pruned,
            skip: &[],
        },
        Some(Run {
            model: dense,
            skip: &[],
        }),
        slice,
        &windows,
        conv,
        4,
        &Silent,
    )?;
    let d = r.divergence.context("no divergence computed")?;
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
    let text = std::fs::read_to_string(&prov)
        .with_context(|| format!("`{}`: cannot read", prov.display()))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("`{}`: not JSON", prov.display()))?;
    let new = serde_json::to_value(hash_file(card)?)?;
    if let Some(files) = v.get_mut("output").and_then(|o| o.as_array_mut()) {
        for f in files.iter_mut() {
            if f.get("name").and_then(|n| n.as_str()) == Some(CARD_FILE) {
                *f = new.clone();
            }
        }
    }
    let mut out = serde_json::to_string_pretty(&v)?;
    out.push('\n');
    std::fs::write(&prov, out).with_context(|| format!("`{}`: cannot write", prov.display()))?;
    Ok(())
}

/// Writes `dir/report.md` for `sweep`, generating from `model` (the dense model). Returns its path.
pub fn write_report(
    dir: &Path,
    sweep: &Sweep,
    model: &Model,
    tok: &HfTokenizer,
    k: usize,
    opts: Option<ReportOptions>,
) -> Result<PathBuf> {
    let opts = opts.unwrap_or(ReportOptions {
        max_new_tokens: 40,
        ..Default::default()
    });
    // The sweep's charts are drawn again from sweep.json, so a report always shows the current
    // chart style (and never re-runs the model for it).
    let plots_dir = dir.join("plots");
    std::fs::create_dir_all(&plots_dir)
        .with_context(|| format!("`{}`: cannot create", plots_dir.display()))?;
    super::sweep_plots::sweep_plots(&plots_dir, sweep)?;
    for (label, st) in &sweep.layer_stability {
        if let Some((_, sc)) = sweep
            .strategies
            .iter()
            .zip(&sweep.scores)
            .find(|(l, _)| *l == label)
        {
            super::score::plot_stability(&plots_dir, sc, st)?;
        }
    }
    let chosen = sweep.best_at(k);
    if chosen.is_none() {
        warn(format!(
            "the sweep has no row with {k} layers removed; the report has no pruned generations"
        ));
    }
    let mut pruned_models = Vec::new();
    let mut checkpoints = Vec::new();
    for p in &opts.pruned {
        eprintln!("measuring {}", p.display());
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
    let bar = Bar::items();
    use depthprune::progress::Progress;
    bar.start("generations", prompts.len() as u64);
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
        bar.advance(1);
    }
    bar.finish();
    let plots: Vec<(String, String)> = [
        ("perplexity by layers removed", "plots/ppl_vs_removed.png"),
        ("perplexity by parameters kept", "plots/ppl_vs_params.png"),
        (
            "zero-shot accuracy by layers removed",
            "plots/acc_vs_removed.png",
        ),
        (
            "KL divergence from the dense model",
            "plots/kl_vs_removed.png",
        ),
        (
            "angular distance of each block",
            "plots/angular_heatmap.png",
        ),
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
    .collect();
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
    std::fs::write(&out, md).with_context(|| format!("`{}`: cannot write", out.display()))?;
    let section = evaluation_section(sweep, &checkpoints);
    for p in &opts.pruned {
        let card = p.join(CARD_FILE);
        if !card.is_file() {
            continue;
        }
        let old = std::fs::read_to_string(&card)
            .with_context(|| format!("`{}`: cannot read", card.display()))?;
        match replace_evaluation(&old, &section) {
            Some(new) => {
                std::fs::write(&card, new)
                    .with_context(|| format!("`{}`: cannot write", card.display()))?;
                rehash_card(p, &card)?;
            }
            None => warn(format!(
                "`{}` has no evaluation markers; its card was left as it is",
                card.display()
            )),
        }
    }
    Ok(out)
}
