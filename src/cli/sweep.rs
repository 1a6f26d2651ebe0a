//! `depthprune sweep MODEL --strategies … --remove 0..K --calib FILE --eval FILE --out DIR`:
//! every strategy at every number of layers removed, pruned virtually and measured against the
//! dense model; writes `sweep.csv`, `sweep.json`, the plots, and with `--report` the report.

use super::heal::HealFitArgs;
use super::output::{print, print_json, warn, Bar};
use super::score::{plot as plot_scores, CalibArgs};
use anyhow::{bail, Context, Result};
use depthprune::eval;
use depthprune::model::{open_checkpoint, Model};
use depthprune::report::plot::{line_chart, Reference, Series};
use depthprune::score::{calibration_windows, score, Calibration, ScoreOptions, TokenSel};
use depthprune::select::strategy::Protect;
use depthprune::sweep::{
    self, cache_bytes, parse_counts, DenseCache, EvalSet, StrategySpec, Sweep,
};
use depthprune::tokenizer::open_tokenizer;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Above this many bytes the dense activation cache earns a warning.
const CACHE_WARN_BYTES: u64 = 8 << 30;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune sweep model.gguf --strategies angular,bi,ppl,last --remove 0..13 \\\n      \
        --calib calib.txt --eval eval.txt --out study/ --report\n  \
    depthprune sweep ./Qwen3-4B --strategies angular,bi:block,greedy --remove 4,8,12 \\\n      \
        --calib wiki.txt --eval wiki.txt --calib-offset 200000 --heal lstsq --out study/\n\n\
    Strategies: angular, bi, minitron, ppl, greedy, last; `angular` removes one contiguous block and\n\
    the others individual layers, unless `:block` or `:layers` is added (e.g. `bi:block`).\n\
    --remove takes `A..B` (half-open, like layer ranges: `0..13` is 0 to 12) or a list (`2,4,8`);\n\
    0 is the dense model.\n\
    Nothing is written but results: layers are skipped in memory, and the dense model's activations\n\
    are computed once and reused, so each cell restarts at the first layer it removes.")]
pub struct Args {
    /// An HF folder or a `.gguf` file.
    pub model: PathBuf,
    /// Comma-separated strategies.
    #[arg(long, default_value = "angular,bi,ppl,last", value_name = "LIST")]
    pub strategies: String,
    /// Numbers of layers to remove.
    #[arg(long, default_value = "0..9", value_name = "COUNTS")]
    pub remove: String,
    /// Never remove these: `first:K,last:K`.
    #[arg(long, value_name = "first:K,last:K")]
    pub protect: Option<String>,
    #[command(flatten)]
    pub calib: CalibArgs,
    /// Evaluation text (UTF-8); may be the calibration file, with disjoint offsets.
    #[arg(long, value_name = "FILE")]
    pub eval: PathBuf,
    /// Tokens per evaluation window (default: --ctx).
    #[arg(long, value_name = "N")]
    pub eval_ctx: Option<usize>,
    /// Evaluation windows.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub eval_samples: usize,
    /// Tokens of the evaluation text to skip first.
    #[arg(long, default_value_t = 0, value_name = "TOKENS")]
    pub eval_offset: usize,
    /// Also heal every removal and measure it healed (`auto`, `lstsq`, `weighted` or `scale`, as in
    /// `prune --heal`; validated on held-out calibration windows unless --holdout 0).
    #[arg(long, value_parser = super::heal::HEAL_METHODS, num_args = 0..=1, default_missing_value = "auto", value_name = "METHOD")]
    pub heal: Option<String>,
    #[command(flatten)]
    pub heal_fit: HealFitArgs,
    /// Output folder for sweep.csv, sweep.json, scores and plots.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Also write report.md (generations, tables and plots) into the output folder.
    #[arg(long)]
    pub report: bool,
    /// Layers removed for the report's pruned generations (default: the largest count ≤ 8).
    #[arg(long, value_name = "K")]
    pub report_k: Option<usize>,
    /// Print the sweep as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Token ranges `[start, end)` of calibration and evaluation, refused when they overlap in the
/// same file.
fn check_disjoint(args: &Args, eval_ctx: usize) -> Result<()> {
    let Some(calib) = &args.calib.calib else {
        return Ok(());
    };
    let same = match (calib.canonicalize(), args.eval.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        return Ok(());
    }
    let scored = args.calib.ctx * args.calib.samples;
    let healed = if args.heal.is_some() {
        args.heal_fit.heal_samples
    } else {
        0
    };
    let c = args.calib.calib_offset..args.calib.calib_offset + scored.max(healed);
    let e = args.eval_offset..args.eval_offset + eval_ctx * args.eval_samples;
    if c.start < e.end && e.start < c.end {
        bail!(
            "calibration tokens {}..{} and evaluation tokens {}..{} of `{}` overlap\nhint: set --calib-offset or --eval-offset so they are disjoint",
            c.start,
            c.end,
            e.start,
            e.end,
            calib.display()
        );
    }
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    let specs = args
        .strategies
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(StrategySpec::parse)
        .collect::<depthprune::error::Result<Vec<_>>>()?;
    if specs.is_empty() {
        bail!("--strategies is empty");
    }
    let eval_ctx = args.eval_ctx.unwrap_or(args.calib.ctx);
    check_disjoint(&args, eval_ctx)?;
    let protect = match &args.protect {
        Some(p) => Protect::parse(p)?,
        None => Protect::default(),
    };
    let (cfg, source) = open_checkpoint(&args.model)?;
    let n = cfg.n_layers();
    let counts = parse_counts(&args.remove, n)?;
    let needs_calib = specs.iter().any(|s| s.metric.needs_model()) || args.heal.is_some();
    let calib_path = match (&args.calib.calib, needs_calib) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => bail!("these strategies need calibration text\nhint: pass --calib FILE"),
        (None, false) => None,
    };
    let hidden = cfg.arch.hidden_size;
    let bytes = cache_bytes(n, args.eval_samples, eval_ctx, hidden);
    if bytes > CACHE_WARN_BYTES {
        warn(format!(
            "the dense activation cache needs {:.1} GiB (lower --eval-samples or --eval-ctx)",
            bytes as f64 / (1u64 << 30) as f64
        ));
    }
    let model = Model::from_source(cfg, source, &|_| !args.calib.offload)?;
    let (tok, notes) = open_tokenizer(&args.model)?;
    for note in &notes {
        warn(note);
    }
    // Tokenized as `eval` does (special tokens once, at the start), so that with --eval-offset 0
    // the windows are `eval --ctx N`'s first windows and the numbers agree.
    let eval_tokens = eval::tokenize(&tok, &eval::read_text(&args.eval)?, None)?;
    let eval_windows =
        calibration_windows(&eval_tokens, eval_ctx, args.eval_samples, args.eval_offset)
            .map_err(|e| anyhow::anyhow!("`{}`: {e}", args.eval.display()))?;
    let calib_tokens = match &calib_path {
        Some(p) => tok.encode(&eval::read_text(p)?, false)?,
        None => Vec::new(),
    };
    let calib_windows = match &calib_path {
        Some(p) => calibration_windows(
            &calib_tokens,
            args.calib.ctx,
            args.calib.samples,
            args.calib.calib_offset,
        )
        .map_err(|e| anyhow::anyhow!("`{}`: {e}", p.display()))?,
        None => Vec::new(),
    };
    let calibration = calib_path.as_ref().map(|p| Calibration {
        file: p.display().to_string(),
        ctx: args.calib.ctx,
        samples: args.calib.samples,
        offset_tokens: args.calib.calib_offset,
        tokens: args.calib.tokens.clone(),
    });
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("`{}`: cannot create the output folder", args.out.display()))?;

    let max_k = counts.last().copied().unwrap_or(0);
    let mut strategies = Vec::new();
    for spec in &specs {
        let opts = ScoreOptions {
            metric: spec.metric,
            tokens: if args.calib.tokens == "all" {
                TokenSel::All
            } else {
                TokenSel::Last
            },
            max_block: args.calib.max_block.unwrap_or(n),
            batch: args.calib.batch,
            greedy_steps: Some(max_k.max(1)),
        };
        eprintln!("scoring: {}", spec.label());
        let mut out = score(&model, &calib_windows, &opts, &Bar::items())?;
        out.scores.calibration = calibration.clone();
        out.scores.model = args.model.display().to_string();
        strategies.push((*spec, out.scores));
    }
    // Healing fits on --heal-samples tokens of the calibration text from --calib-offset (as
    // `prune --heal` does), whole windows of --ctx.
    let heal_tokens: &[u32] = {
        let start = args.calib.calib_offset.min(calib_tokens.len());
        let end = (start + args.heal_fit.heal_samples).min(calib_tokens.len());
        &calib_tokens[start..end]
    };
    let heal = match &args.heal {
        Some(m) if m == "kd" => anyhow::bail!(
            "--heal kd is not available in sweep: distilling every cell takes minutes each; distil the chosen removal with `prune --heal kd` or `heal --method kd`"
        ),
        Some(method) => Some((args.heal_fit.options(method, args.calib.ctx)?, heal_tokens)),
        None => None,
    };
    let cache = DenseCache::build(&model, eval_windows, &Bar::items())?;
    let plan = sweep::SweepPlan {
        strategies,
        counts,
        protect,
        heal,
        eval: EvalSet {
            file: args.eval.display().to_string(),
            ctx: eval_ctx,
            windows: args.eval_samples,
            offset_tokens: args.eval_offset,
            scored_tokens: args.eval_samples * (eval_ctx - 1),
        },
        calibration,
    };
    let result = sweep::run(&model, &args.model, &cache, plan, &Bar::items())?;
    let files = write_outputs(&args.out, &result)?;
    if args.report {
        let k = args
            .report_k
            .unwrap_or_else(|| super::report::default_k(&result));
        let report = super::report::write_report(&args.out, &result, &model, &tok, k, None)?;
        eprintln!("report: {}", report.display());
    }
    if args.json {
        return print_json(&result);
    }
    let mut t = table(&result)?;
    writeln!(t, "\nwrote:")?;
    for f in files {
        writeln!(t, "  {}", f.display())?;
    }
    print(&t)
}

/// The sweep as a text table: one row per count, one perplexity column per strategy.
fn table(s: &Sweep) -> Result<String> {
    let mut t = String::new();
    writeln!(t, "model        {} ({} layers)", s.model, s.n_layers)?;
    writeln!(
        t,
        "evaluation   `{}`, {} windows of {} tokens from token {}; dense perplexity {:.3}",
        s.eval.file, s.eval.windows, s.eval.ctx, s.eval.offset_tokens, s.dense_perplexity
    )?;
    writeln!(
        t,
        "calibration  {}",
        super::score::describe_calibration(&s.calibration)
    )?;
    let healed = s.heal.is_some();
    writeln!(
        t,
        "\nperplexity{} by layers removed (KL to dense in brackets):",
        if healed { " unhealed / healed" } else { "" }
    )?;
    write!(t, "{:>3}", "k")?;
    for name in &s.strategies {
        write!(t, "  {name:>26}")?;
    }
    writeln!(t)?;
    for &k in &s.counts {
        write!(t, "{k:>3}")?;
        for name in &s.strategies {
            let cell = s
                .rows
                .iter()
                .find(|r| &r.strategy == name && r.k == k)
                .map(|r| match &r.healed {
                    Some(h) => format!(
                        "{:.1} / {:.1} ({:.2})",
                        r.measured.perplexity, h.perplexity, h.mean_kl
                    ),
                    None => format!("{:.2} ({:.3})", r.measured.perplexity, r.measured.mean_kl),
                })
                .unwrap_or_default();
            write!(t, "  {cell:>26}")?;
        }
        writeln!(t)?;
    }
    writeln!(t, "\nbest by perplexity:")?;
    for &k in s.counts.iter().filter(|&&k| k > 0) {
        if let Some(r) = s.best_at(k) {
            writeln!(
                t,
                "  k={k:<3} {:<16} --drop {:<24} ({:.1}% of parameters kept)",
                r.strategy,
                r.drop,
                100.0 * r.params_kept
            )?;
        }
    }
    Ok(t)
}

/// Writes sweep.csv, sweep.json, per-strategy scores and plots; returns the files written.
fn write_outputs(dir: &Path, s: &Sweep) -> Result<Vec<PathBuf>> {
    let write = |name: &str, text: &str| -> Result<PathBuf> {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("`{}`: cannot write", p.display()))?;
        Ok(p)
    };
    let mut files = vec![
        write("sweep.csv", &csv(s)?)?,
        write("sweep.json", &serde_json::to_string_pretty(s)?)?,
    ];
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots)
        .with_context(|| format!("`{}`: cannot create", plots.display()))?;
    for sc in &s.scores {
        if sc.metric.needs_model() {
            plot_scores(&plots, sc)?;
        }
    }
    files.extend(sweep_plots(&plots, s)?);
    Ok(files)
}

/// One CSV row per strategy and count.
pub fn csv(s: &Sweep) -> Result<String> {
    let mut t = String::from(
        "strategy,k,drop,params,params_kept,perplexity,mean_kl,top1_agreement,heal_choices,healed_perplexity,healed_mean_kl,healed_top1_agreement\n",
    );
    for r in &s.rows {
        let h = |f: fn(&sweep::Measured) -> f64| {
            r.healed
                .as_ref()
                .map(f)
                .map(|v| v.to_string())
                .unwrap_or_default()
        };
        writeln!(
            t,
            "{},{},\"{}\",{},{:.6},{},{},{},\"{}\",{},{},{}",
            r.strategy,
            r.k,
            r.drop,
            r.params,
            r.params_kept,
            r.measured.perplexity,
            r.measured.mean_kl,
            r.measured.top1_agreement,
            r.heal_choices.as_deref().unwrap_or_default().join(" "),
            h(|m| m.perplexity),
            h(|m| m.mean_kl),
            h(|m| m.top1_agreement),
        )?;
    }
    Ok(t)
}

/// Perplexity against layers removed and against parameters kept, and KL against layers removed.
fn sweep_plots(dir: &Path, s: &Sweep) -> Result<Vec<PathBuf>> {
    let series = |x: fn(&sweep::SweepRow) -> f64, y: fn(&sweep::Measured) -> f64| {
        let mut out = Vec::new();
        for name in &s.strategies {
            let rows = s.rows.iter().filter(|r| &r.strategy == name);
            out.push(Series {
                name: name.clone(),
                points: rows.clone().map(|r| (x(r), y(&r.measured))).collect(),
            });
            if s.heal.is_some() {
                out.push(Series {
                    name: format!("{name} + heal"),
                    points: rows
                        .filter_map(|r| r.healed.as_ref().map(|h| (x(r), y(h))))
                        .collect(),
                });
            }
        }
        out
    };
    let dense = Reference {
        label: format!("dense model ({:.2})", s.dense_perplexity),
        y: s.dense_perplexity,
    };
    let mut files = line_chart(
        &dir.join("ppl_vs_removed"),
        "evaluation perplexity by layers removed",
        "layers removed",
        "perplexity (log scale)",
        &series(|r| r.k as f64, |m| m.perplexity),
        true,
        Some(&dense),
    )?;
    files.extend(line_chart(
        &dir.join("ppl_vs_params"),
        "evaluation perplexity by parameters kept",
        "parameters kept (millions)",
        "perplexity (log scale)",
        &series(|r| r.params as f64 / 1e6, |m| m.perplexity),
        true,
        Some(&dense),
    )?);
    files.extend(line_chart(
        &dir.join("kl_vs_removed"),
        "KL divergence from the dense model by layers removed",
        "layers removed",
        "mean KL(dense ‖ pruned), nats",
        &series(|r| r.k as f64, |m| m.mean_kl),
        false,
        None,
    )?);
    Ok(files)
}
