//! `depthprune score MODEL --calib FILE --metric M`: layer importance on calibration text, as a
//! table, JSON or CSV, with optional plots and a saved score file for `plan`/`prune --scores`.
//! Also the calibration arguments and the scoring run that `prune`/`plan --strategy` share.

use super::output::{print, print_json, warn, Bar};
use anyhow::{bail, Context, Result};
use depthprune::arch::ParamCounts;
use depthprune::eval;
use depthprune::model::{open_checkpoint, Model};
use depthprune::score::run::activation_cache_bytes;
use depthprune::score::{
    calibration_windows, resample_windows, score, Calibration, LayerScores, Metric, ScoreOptions,
    ScoreOutcome, TokenSel,
};
use depthprune::select::stability::LayerStability;
use depthprune::select::strategy::Protect;
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
    Ok(run_metric_resampled(model_dir, metric, c, steps, 0, 0)?.0)
}

/// [`run_metric`], then the same on `resamples` bootstrap resamples of the calibration windows
/// drawn from `seed`; also returns the model's parameter counts.
pub fn run_metric_resampled(
    model_dir: &Path,
    metric: Metric,
    c: &CalibArgs,
    steps: Option<usize>,
    resamples: usize,
    seed: u64,
) -> Result<(ScoreOutcome, Vec<LayerScores>, ParamCounts)> {
    let (cfg, source) = open_checkpoint(model_dir)?;
    let counts = ParamCounts::from_config(&cfg.arch);
    if metric == Metric::Last {
        let name = model_dir.display().to_string();
        let scores = LayerScores::last_baseline(&name, cfg.n_layers());
        let again = vec![scores.clone(); resamples];
        let out = ScoreOutcome {
            scores,
            timing: None,
        };
        return Ok((out, again, counts));
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
    let calibration = Some(Calibration {
        file: calib.display().to_string(),
        ctx: c.ctx,
        samples: c.samples,
        offset_tokens: c.calib_offset,
        tokens: c.tokens.clone(),
    });
    out.scores.calibration = calibration.clone();
    let mut again = Vec::new();
    for (i, w) in resample_windows(&windows, resamples, seed)
        .iter()
        .enumerate()
    {
        eprintln!("calibration resample {} of {resamples}", i + 1);
        let mut s = score(&model, w, &opts, &Bar::items())?.scores;
        s.calibration = calibration.clone();
        again.push(s);
    }
    if let Some(t) = &out.timing {
        warn(format!(
            "activation reuse: {} candidates in {:.2} s; a full forward per candidate would take ~{:.2} s ({:.1}x)",
            t.candidates,
            t.seconds,
            t.candidates as f64 * t.full_forward_s,
            t.speedup()
        ));
    }
    Ok((out, again, counts))
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

/// The per-layer values a plot or a stability summary shows: for `ppl`, the rise in mean NLL
/// `ln(ppl without the layer / dense ppl)` in nats (perplexities span orders of magnitude:
/// removing layer 0 often multiplies it by 1000); for the others, the score itself.
pub fn shown_values(s: &LayerScores) -> (Vec<f64>, String) {
    match (s.metric, s.baseline_ppl) {
        (Metric::Ppl, Some(base)) => (
            s.importance.iter().map(|p| (p / base).ln()).collect(),
            "rise in calibration NLL without the layer, nats".to_string(),
        ),
        _ => (
            s.importance.clone(),
            format!("{} score (higher = more important)", s.metric.name()),
        ),
    }
}

/// Stability over resampled scores, on the values [`shown_values`] gives (the same order, so the
/// same choices), choosing `k` layers in the criterion's own form.
pub fn stability(
    resampled: &[LayerScores],
    k: usize,
    protect: Protect,
    counts: &ParamCounts,
) -> Result<LayerStability> {
    let shown: Vec<LayerScores> = resampled
        .iter()
        .map(|s| {
            let mut t = s.clone();
            t.importance = shown_values(s).0;
            t
        })
        .collect();
    let contiguous = resampled.first().is_some_and(|s| s.metric.prefers_blocks());
    Ok(LayerStability::of(&shown, k, contiguous, protect, counts)?)
}

/// Writes `stability.png`/`.svg` for `s` into `dir`.
pub fn plot_stability(
    dir: &Path,
    scores: &LayerScores,
    s: &LayerStability,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("`{}`: cannot create", dir.display()))?;
    let m = scores.metric.name();
    Ok(depthprune::report::stability_plot::stability_chart(
        &dir.join(format!("stability_{m}")),
        &format!(
            "{m} per layer over {} calibration resamples (mean ± sd; overlap of choices {:.2})",
            s.resamples, s.mean_pairwise_overlap
        ),
        &shown_values(scores).1,
        s,
    )?)
}

pub fn run(args: Args) -> Result<()> {
    let metric = parse_metric(&args.metric)?;
    if args.resamples == Some(0) {
        bail!("--resamples must be at least 1");
    }
    let (out, resampled, counts) = run_metric_resampled(
        &args.model,
        metric,
        &args.calib,
        args.steps,
        args.resamples.unwrap_or(0),
        args.seed,
    )?;
    let s = &out.scores;
    let stable = match args.resamples {
        Some(_) => {
            let k = args.choose.unwrap_or((s.n_layers / 4).max(1));
            if k >= s.n_layers {
                bail!(
                    "--choose {k}: at most {} of {} layers",
                    s.n_layers - 1,
                    s.n_layers
                );
            }
            Some(stability(&resampled, k, Protect::default(), &counts)?)
        }
        None => None,
    };
    if let Some(path) = &args.out {
        let json = serde_json::to_string_pretty(s)?;
        std::fs::write(path, json)
            .with_context(|| format!("`{}`: cannot write", path.display()))?;
    }
    if let Some(dir) = &args.plot {
        plot(dir, s)?;
        if let Some(st) = &stable {
            plot_stability(dir, s, st)?;
        }
    }
    let rank = ranks(s);
    if args.json {
        let mut v = serde_json::to_value(s)?;
        v["rank"] = serde_json::to_value(&rank)?;
        if let Some(t) = &out.timing {
            v["reuse"] = serde_json::to_value(t)?;
        }
        if let Some(st) = &stable {
            v["stability"] = serde_json::to_value(st)?;
        }
        return print_json(&v);
    }
    if args.csv {
        let mut t = String::from("layer,score,rank");
        t.push_str(if stable.is_some() {
            ",mean,sd,chosen\n"
        } else {
            "\n"
        });
        for (l, (v, r)) in s.importance.iter().zip(&rank).enumerate() {
            write!(t, "{l},{v},{r}")?;
            if let Some(st) = &stable {
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
    match &stable {
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
            for (l, (v, r)) in s.importance.iter().zip(&rank).enumerate() {
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
            for (l, (v, r)) in s.importance.iter().zip(&rank).enumerate() {
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

/// Writes the charts for `s` into `dir`.
pub fn plot(dir: &Path, s: &LayerScores) -> Result<()> {
    use depthprune::report::plot::{
        angular_heatmap, layer_bars, line_chart, Axis, Reference, Series,
    };
    std::fs::create_dir_all(dir).with_context(|| format!("`{}`: cannot create", dir.display()))?;
    let m = s.metric.name();
    let first: Vec<usize> = s.removal_order().into_iter().take(s.n_layers / 4).collect();
    let (values, y_label) = shown_values(s);
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
            ci: Vec::new(),
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
            Axis::LogCounts,
            dense.as_ref(),
        )?;
    }
    Ok(())
}
