//! `depthprune score MODEL --calib FILE --metric M`: layer importance on calibration text, as a
//! table, JSON or CSV, with optional plots and a saved score file for `plan`/`prune --scores`.
//! Also the calibration arguments that `prune`/`plan --strategy` and `sweep` share.

use super::output::{print, print_json, Bar};
use anyhow::{bail, Result};
use depthprune::api::score::{
    describe_calibration, score, shown_values, CalibOptions, ScoreRequest,
};
use depthprune::api::ModelSource;
use depthprune::error::IoContext;
use depthprune::eval;
use depthprune::score::{Metric, TokenSel};
use std::fmt::Write;
use std::path::PathBuf;

/// The calibration set and how a criterion runs on it.
#[derive(clap::Args, Debug, Clone)]
pub struct CalibArgs {
    /// Calibration text (UTF-8), tokenized as one string without special tokens.
    #[arg(long, value_name = "FILE")]
    pub calib: Option<PathBuf>,
    /// Tokens per calibration window.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub ctx: usize,
    /// Calibration windows.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub samples: usize,
    /// Tokens to skip at the start of the text (keep calibration apart from evaluation).
    #[arg(long, default_value_t = 0, value_name = "TOKENS")]
    pub calib_offset: usize,
    /// Angular distance on each window's last token or on all tokens.
    #[arg(long, default_value = "last", value_parser = parse_tokens)]
    pub tokens: TokenSel,
    /// Largest block size for angular distances (default: all).
    #[arg(long, value_name = "N")]
    pub max_block: Option<usize>,
    /// Windows per forward for angular/bi/minitron.
    #[arg(long, default_value_t = 4, value_name = "B")]
    pub batch: usize,
    /// Keep only one layer's weights resident (slower, for models larger than memory).
    #[arg(long)]
    pub offload: bool,
}

impl CalibArgs {
    /// The library's calibration options.
    pub fn options(&self) -> CalibOptions {
        CalibOptions {
            calib: self.calib.clone(),
            ctx: self.ctx,
            samples: self.samples,
            calib_offset: self.calib_offset,
            tokens: self.tokens,
            max_block: self.max_block,
            batch: self.batch,
            offload: self.offload,
        }
    }
}

fn parse_tokens(s: &str) -> Result<TokenSel, String> {
    match s {
        "last" => Ok(TokenSel::Last),
        "all" => Ok(TokenSel::All),
        _ => Err(format!("`{s}`: expected `last` or `all`")),
    }
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune score ./SmolLM2-135M --calib wiki.train.raw --metric bi\n  \
    depthprune score ./SmolLM2-135M --calib wiki.train.raw --metric angular --max-block 8 --plot plots/\n  \
    depthprune score ./SmolLM2-135M --calib wiki.train.raw --metric greedy --samples 4 --out scores.json\n\n\
    Metrics: angular (Gromov et al.), bi (ShortGPT), minitron (ModelOpt), ppl (Shortened LLaMA),\n\
    greedy (SLEB), last (baseline). Higher scores mean more important (removed last).")]
pub struct Args {
    /// An HF folder (config.json, tokenizer.json, safetensors).
    pub model: PathBuf,
    /// The criterion: angular, bi, minitron, ppl, greedy or last.
    #[arg(long, value_name = "M", value_parser = super::common::parse_metric)]
    pub metric: Metric,
    #[command(flatten)]
    pub calib: CalibArgs,
    /// Greedy removal steps (default: all layers but one).
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV instead of a table.
    #[arg(long)]
    pub csv: bool,
    /// Write the bar chart, angular heatmap and greedy curve (PNG and SVG) into this folder.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// Save the scores as JSON (for `plan`/`prune --scores`).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also score on K bootstrap resamples of the calibration windows: each layer's mean ± sd,
    /// how often it lands in the chosen set, and how much the chosen sets overlap.
    #[arg(long, value_name = "K")]
    pub resamples: Option<usize>,
    /// With --resamples: layers in each chosen set (default: a quarter of the layers).
    #[arg(long, value_name = "N", requires = "resamples")]
    pub choose: Option<usize>,
    /// Seed of the resamples.
    #[arg(long, default_value_t = eval::bootstrap::SEED, value_name = "N")]
    pub seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    if args.metric != Metric::Last && args.calib.calib.is_none() {
        bail!(
            "--metric {} needs calibration text\nhint: pass --calib FILE",
            args.metric.name()
        );
    }
    if args.resamples == Some(0) {
        bail!("--resamples must be at least 1");
    }
    let req = ScoreRequest {
        metric: args.metric,
        calib: args.calib.options(),
        steps: args.steps,
        resamples: args.resamples,
        choose: args.choose,
        seed: args.seed,
    };
    let report = score(&ModelSource::new(&args.model), &req, &Bar::items())?;
    let s = &report.scores;
    let stable = &report.stability;
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_string_pretty(s)?).at(path)?;
    }
    if let Some(dir) = &args.plot {
        depthprune::report::score_plots::plot(dir, s)?;
        if let Some(st) = stable {
            depthprune::report::score_plots::plot_stability(dir, s, st)?;
        }
    }
    if args.json {
        return print_json(&report);
    }
    let rank = &report.rank;
    if args.csv {
        let mut t = String::from("layer,score,rank");
        t.push_str(if stable.is_some() {
            ",mean,sd,chosen\n"
        } else {
            "\n"
        });
        for (l, (v, r)) in s.importance.iter().zip(rank).enumerate() {
            write!(t, "{l},{v},{r}")?;
            if let Some(st) = stable {
                write!(t, ",{},{},{}", st.mean[l], st.sd[l], st.frequency[l])?;
            }
            t.push('\n');
        }
        return print(&t);
    }
    let mut t = String::new();
    writeln!(t, "model        {}", args.model.display())?;
    writeln!(
        t,
        "metric       {}: {}",
        s.metric.name(),
        s.metric.describe()
    )?;
    writeln!(t, "calibration  {}", describe_calibration(&s.calibration))?;
    if let Some(b) = s.baseline_ppl {
        writeln!(t, "baseline ppl {b:.4}")?;
    }
    match stable {
        Some(st) => {
            writeln!(
                t,
                "stability    {} bootstrap resamples of the calibration windows (seed {}); chosen sets of {} layers overlap {:.2} on average (Jaccard)",
                st.resamples, args.seed, st.k, st.mean_pairwise_overlap
            )?;
            let label = shown_values(s).1;
            writeln!(
                t,
                "\n{:>5}  {:>14}  {:>4}  {:>22}  {:>6}   (mean ± sd: {label})",
                "layer", "score", "rank", "mean ± sd", "chosen"
            )?;
            for (l, (v, r)) in s.importance.iter().zip(rank).enumerate() {
                let ms = format!("{:.4} ± {:.4}", st.mean[l], st.sd[l]);
                writeln!(
                    t,
                    "{l:>5}  {v:>14.6}  {r:>4}  {ms:>22}  {:>5.0}%",
                    100.0 * st.frequency[l]
                )?;
            }
        }
        None => {
            writeln!(t, "\n{:>5}  {:>14}  {:>4}", "layer", "score", "rank")?;
            for (l, (v, r)) in s.importance.iter().zip(rank).enumerate() {
                writeln!(t, "{l:>5}  {v:>14.6}  {r:>4}")?;
            }
        }
    }
    if let Some(g) = &s.greedy {
        writeln!(t, "\ngreedy order (ppl after each removal):")?;
        for (k, step) in g.iter().enumerate() {
            writeln!(
                t,
                "  {:>3}. layer {:>3}  ppl {:.4}",
                k + 1,
                step.layer,
                step.ppl
            )?;
        }
    }
    if let Some(g) = &s.healed {
        writeln!(
            t,
            "\nheal-aware order (relative stream error left after healing, summed over blocks):"
        )?;
        for (k, step) in g.iter().enumerate() {
            writeln!(
                t,
                "  {:>3}. layer {:>3}  cost {:.6}",
                k + 1,
                step.layer,
                step.cost
            )?;
        }
    }
    writeln!(t, "\nrank 1 is removed first.")?;
    print(&t)
}
