//! `depthprune score MODEL --calib FILE --metric M`: layer importance on calibration text, as a
//! table, JSON or CSV, with optional plots and a saved score file for `plan`/`prune --scores`.
//! Also the calibration arguments and the scoring run that `prune`/`plan --strategy` share.

use super::output::{print, print_json, warn, Bar};
use anyhow::{bail, Context, Result};
use depthprune::eval;
use depthprune::model::{open_checkpoint, Model};
use depthprune::score::run::activation_cache_bytes;
use depthprune::score::{
    calibration_windows, score, Calibration, LayerScores, Metric, ScoreOptions, ScoreOutcome,
    TokenSel,
};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Above this many bytes of cached activations, `ppl`/`greedy` warn that memory may spill.
const CACHE_WARN_BYTES: u64 = 8 << 30;

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
    #[arg(long, default_value = "last", value_parser = ["last", "all"])]
    pub tokens: String,
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
    #[arg(long, value_name = "M")]
    pub metric: String,
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
}

/// Parses a metric name into a clear error listing the choices.
pub fn parse_metric(s: &str) -> Result<Metric> {
    Metric::parse(s).with_context(|| {
        let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        format!("unknown metric `{s}`; expected one of {}", names.join(", "))
    })
}

/// Runs `metric` on MODEL with the calibration set in `c`, reporting progress on stderr.
pub fn run_metric(
    model_dir: &Path,
    metric: Metric,
    c: &CalibArgs,
    steps: Option<usize>,
) -> Result<ScoreOutcome> {
    let (cfg, source) = open_checkpoint(model_dir)?;
    if metric == Metric::Last {
        let name = model_dir.display().to_string();
        return Ok(ScoreOutcome {
            scores: LayerScores::last_baseline(&name, cfg.n_layers()),
            timing: None,
        });
    }
    let Some(calib) = &c.calib else {
        bail!(
            "--metric {} needs calibration text\nhint: pass --calib FILE",
            metric.name()
        );
    };
    let n = cfg.n_layers();
    let hidden = cfg.arch.hidden_size;
    let model = Model::from_source(cfg, source, &|_| !c.offload)?;
    let (tok, _notes) = depthprune::tokenizer::open_tokenizer(model_dir)?;
    let text = eval::read_text(calib)?;
    let tokens = tok.encode(&text, false)?;
    let windows = calibration_windows(&tokens, c.ctx, c.samples, c.calib_offset)
        .map_err(|e| anyhow::anyhow!("`{}`: {e}", calib.display()))?;
    if matches!(metric, Metric::Ppl | Metric::Greedy) {
        let bytes = activation_cache_bytes(n, c.samples, c.ctx, hidden);
        if bytes > CACHE_WARN_BYTES {
            warn(format!(
                "the activation cache for {} needs {:.1} GiB; it may spill to swap (lower --samples or --ctx)",
                metric.name(),
                bytes as f64 / (1u64 << 30) as f64
            ));
        }
    }
    let opts = ScoreOptions {
        metric,
        tokens: if c.tokens == "all" {
            TokenSel::All
        } else {
            TokenSel::Last
        },
        max_block: c.max_block.unwrap_or(n),
        batch: c.batch,
        greedy_steps: steps,
    };
    let mut out = score(&model, &windows, &opts, &Bar::items())?;
    out.scores.calibration = Some(Calibration {
        file: calib.display().to_string(),
        ctx: c.ctx,
        samples: c.samples,
        offset_tokens: c.calib_offset,
        tokens: c.tokens.clone(),
    });
    if let Some(t) = &out.timing {
        warn(format!(
            "activation reuse: {} candidates in {:.2} s; a full forward per candidate would take ~{:.2} s ({:.1}x)",
            t.candidates,
            t.seconds,
            t.candidates as f64 * t.full_forward_s,
            t.speedup()
        ));
    }
    Ok(out)
}

/// Ranks: 1 is the least important layer (removed first).
pub fn ranks(s: &LayerScores) -> Vec<usize> {
    let mut r = vec![0; s.n_layers];
    for (k, l) in s.removal_order().into_iter().enumerate() {
        r[l] = k + 1;
    }
    r
}

/// The calibration set in one line.
pub fn describe_calibration(c: &Option<Calibration>) -> String {
    match c {
        Some(c) => format!(
            "`{}`, {} windows of {} tokens from token {} (angular on {} tokens)",
            c.file, c.samples, c.ctx, c.offset_tokens, c.tokens
        ),
        None => "none (the baseline needs no text)".into(),
    }
}

pub fn run(args: Args) -> Result<()> {
    let metric = parse_metric(&args.metric)?;
    let out = run_metric(&args.model, metric, &args.calib, args.steps)?;
    let s = &out.scores;
    if let Some(path) = &args.out {
        let json = serde_json::to_string_pretty(s)?;
        std::fs::write(path, json)
            .with_context(|| format!("`{}`: cannot write", path.display()))?;
    }
    if let Some(dir) = &args.plot {
        plot(dir, s)?;
    }
    let rank = ranks(s);
    if args.json {
        let mut v = serde_json::to_value(s)?;
        v["rank"] = serde_json::to_value(&rank)?;
        if let Some(t) = &out.timing {
            v["reuse"] = serde_json::to_value(t)?;
        }
        return print_json(&v);
    }
    if args.csv {
        let mut t = String::from("layer,score,rank\n");
        for (l, (v, r)) in s.importance.iter().zip(&rank).enumerate() {
            writeln!(t, "{l},{v},{r}")?;
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
    writeln!(t, "\n{:>5}  {:>14}  {:>4}", "layer", "score", "rank")?;
    for (l, (v, r)) in s.importance.iter().zip(&rank).enumerate() {
        writeln!(t, "{l:>5}  {v:>14.6}  {r:>4}")?;
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

/// Writes the charts for `s` into `dir`.
pub fn plot(dir: &Path, s: &LayerScores) -> Result<()> {
    use depthprune::report::plot::{angular_heatmap, layer_bars, line_chart, Reference, Series};
    std::fs::create_dir_all(dir).with_context(|| format!("`{}`: cannot create", dir.display()))?;
    let m = s.metric.name();
    let first: Vec<usize> = s.removal_order().into_iter().take(s.n_layers / 4).collect();
    // Perplexities span orders of magnitude (removing layer 0 often multiplies it by 1000), so
    // the ppl bars show the rise in mean NLL, ln(ppl without the layer / dense ppl), in nats.
    let (values, y_label) = match (s.metric, s.baseline_ppl) {
        (depthprune::score::Metric::Ppl, Some(base)) => (
            s.importance.iter().map(|p| (p / base).ln()).collect(),
            "rise in calibration NLL without the layer, nats".to_string(),
        ),
        _ => (
            s.importance.clone(),
            format!("{m} score (higher = more important)"),
        ),
    };
    layer_bars(
        &dir.join(format!("{m}_scores")),
        &format!("{m} per layer (red: the first quarter removed)"),
        &y_label,
        &values,
        &first,
    )?;
    if let Some(d) = &s.angular {
        angular_heatmap(
            &dir.join("angular_heatmap"),
            "angular distance of a block from its input",
            d,
            s.n_layers,
        )?;
    }
    if let Some(g) = &s.greedy {
        let points = g
            .iter()
            .enumerate()
            .map(|(k, st)| ((k + 1) as f64, st.ppl))
            .collect();
        let series = [Series {
            name: "greedy removal".into(),
            points,
        }];
        let dense = s.baseline_ppl.map(|y| Reference {
            label: "dense model".into(),
            y,
        });
        line_chart(
            &dir.join("greedy_curve"),
            "calibration perplexity as layers are removed (SLEB)",
            "layers removed",
            "calibration perplexity",
            &series,
            true,
            dense.as_ref(),
        )?;
    }
    Ok(())
}
