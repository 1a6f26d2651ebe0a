//! `depthprune sweep MODEL --strategies … --remove 0..K --calib FILE --eval FILE --out DIR`:
//! every strategy at every number of layers removed, pruned virtually and measured against the
//! dense model; writes `sweep.csv`, `sweep.json`, the plots, and with `--report` the report.

use super::heal::HealFitArgs;
use super::output::{print, print_json, warn, Bar};
use super::score::{plot as plot_scores, CalibArgs};
use anyhow::{bail, Context, Result};
use depthprune::arch::ParamCounts;
use depthprune::eval::{self, Bootstrap, TaskOpts};
use depthprune::model::{open_checkpoint, Model};
use depthprune::score::{
    calibration_windows, resample_windows, score, Calibration, LayerScores, ScoreOptions, TokenSel,
};
use depthprune::select::strategy::Protect;
use depthprune::sweep::{
    self, cache_bytes, parse_counts, DenseCache, EvalSet, StrategySpec, Sweep, SweepRow,
};
use depthprune::tokenizer::{open_tokenizer, HfTokenizer};
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
    are computed once and reused, so each cell restarts at the first layer it removes.\n\n\
    Three slices of text, refused when they overlap in one file: calibration (scores the layers),\n\
    validation (--select-on; picks the best removal at each count) and evaluation (measures it).\n\
    Every perplexity, KL and top-1 figure carries a 95% interval from a seeded bootstrap over the\n\
    evaluation windows; differences (against dense, best against runner-up) are paired.")]
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
    /// Validation text, on which the best removal at each count is chosen before it is measured
    /// on the evaluation text (default: the calibration file, else the evaluation file).
    #[arg(long, value_name = "FILE")]
    pub select_on: Option<PathBuf>,
    /// Tokens of the validation text to skip first (default: the first token after every other
    /// slice taken from the same file).
    #[arg(long, value_name = "TOKENS")]
    pub select_offset: Option<usize>,
    /// Validation windows of --eval-ctx tokens (default: --eval-samples).
    #[arg(long, value_name = "N")]
    pub select_samples: Option<usize>,
    /// Also score each strategy on K bootstrap resamples of the calibration windows and report
    /// how stable each choice is.
    #[arg(long, value_name = "K")]
    pub resamples: Option<usize>,
    /// Bootstrap resamples behind every 95% interval.
    #[arg(long, default_value_t = eval::bootstrap::RESAMPLES, value_name = "N")]
    pub ci_resamples: usize,
    /// Seed of the bootstrap and of the calibration resamples.
    #[arg(long, default_value_t = eval::bootstrap::SEED, value_name = "N")]
    pub seed: u64,
    /// Also measure zero-shot accuracy of every removal on these questions (the formats
    /// `eval --tasks` reads).
    #[arg(long, value_name = "FILE.jsonl")]
    pub tasks: Option<PathBuf>,
    /// With --tasks: score only the first N questions.
    #[arg(long, value_name = "N", requires = "tasks")]
    pub limit: Option<usize>,
    /// Also heal every removal and measure it healed (`auto`, `lstsq`, `weighted`, `scale` or
    /// `cosine`, as in `prune --heal`; validated on held-out calibration windows unless
    /// --holdout 0). Several methods, comma-separated, each get their own healed columns; the
    /// best choice at each count follows the first.
    #[arg(long, value_parser = super::heal::HEAL_METHODS, num_args = 0..=1, value_delimiter = ',', default_missing_value = "auto", value_name = "METHOD[,METHOD...]")]
    pub heal: Option<Vec<String>>,
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

/// A slice of one file: its name in messages, the flag that moves it, the file and its token range.
struct Slice<'a> {
    name: &'static str,
    flag: &'static str,
    file: &'a Path,
    tokens: std::ops::Range<usize>,
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The calibration slice (scoring and healing) and the evaluation slice. Healing takes at most
/// `calib_tokens`, the calibration text's length in tokens.
fn fixed_slices(args: &Args, eval_ctx: usize, calib_tokens: usize) -> Vec<Slice<'_>> {
    let mut out = Vec::new();
    if let Some(calib) = &args.calib.calib {
        let scored = args.calib.ctx * args.calib.samples;
        let healed = if args.heal.is_some() {
            args.heal_fit
                .heal_samples
                .min(calib_tokens.saturating_sub(args.calib.calib_offset))
        } else {
            0
        };
        out.push(Slice {
            name: "calibration",
            flag: "--calib-offset",
            file: calib,
            tokens: args.calib.calib_offset..args.calib.calib_offset + scored.max(healed),
        });
    }
    out.push(Slice {
        name: "evaluation",
        flag: "--eval-offset",
        file: &args.eval,
        tokens: args.eval_offset..args.eval_offset + eval_ctx * args.eval_samples,
    });
    out
}

/// The validation slice: `--select-on` (else the calibration file, else the evaluation file) from
/// `--select-offset` (else the first token after every other slice of the same file).
fn select_slice<'a>(args: &'a Args, eval_ctx: usize, fixed: &[Slice<'a>]) -> Slice<'a> {
    let file: &Path = args
        .select_on
        .as_deref()
        .or(args.calib.calib.as_deref())
        .unwrap_or(&args.eval);
    let start = args.select_offset.unwrap_or_else(|| {
        fixed
            .iter()
            .filter(|s| same_file(s.file, file))
            .map(|s| s.tokens.end)
            .max()
            .unwrap_or(0)
    });
    let samples = args.select_samples.unwrap_or(args.eval_samples);
    Slice {
        name: "validation",
        flag: "--select-offset",
        file,
        tokens: start..start + eval_ctx * samples,
    }
}

/// Refuses two slices of the same file that share a token.
fn check_disjoint(slices: &[Slice<'_>]) -> Result<()> {
    for (i, a) in slices.iter().enumerate() {
        for b in &slices[i + 1..] {
            let overlap = a.tokens.start < b.tokens.end && b.tokens.start < a.tokens.end;
            if overlap && same_file(a.file, b.file) {
                bail!(
                    "{} tokens {}..{} and {} tokens {}..{} of `{}` overlap\nhint: set {} or {} so they are disjoint",
                    a.name,
                    a.tokens.start,
                    a.tokens.end,
                    b.name,
                    b.tokens.start,
                    b.tokens.end,
                    a.file.display(),
                    a.flag,
                    b.flag
                );
            }
        }
    }
    Ok(())
}

/// Windows of `ctx` tokens from `slice`, tokenized as `eval` does (special tokens once, at the
/// start), so that with offset 0 they are `eval --ctx N`'s first windows and the numbers agree.
fn slice_windows(tok: &HfTokenizer, slice: &Slice<'_>, ctx: usize) -> Result<Vec<Vec<u32>>> {
    let tokens = eval::tokenize(tok, &eval::read_text(slice.file)?, Some(slice.tokens.end))?;
    if tokens.len() < slice.tokens.end {
        bail!(
            "`{}`: the {} slice needs tokens {}..{}, but the text has {} tokens\nhint: a longer text, fewer windows, or {}{}",
            slice.file.display(),
            slice.name,
            slice.tokens.start,
            slice.tokens.end,
            tokens.len(),
            slice.flag,
            if slice.name == "validation" {
                " (--select-on takes another file; healing uses up to --heal-samples tokens of the calibration text)"
            } else {
                ""
            }
        );
    }
    let samples = slice.tokens.len() / ctx;
    Ok(calibration_windows(
        &tokens,
        ctx,
        samples,
        slice.tokens.start,
    )?)
}

pub fn run(args: Args) -> Result<()> {
    let methods = args.heal.clone().unwrap_or_default();
    if methods.iter().any(|m| m == "kd") {
        bail!(
            "--heal kd is not available in sweep: distilling every cell takes minutes each; distil the chosen removal with `prune --heal kd` or `heal --method kd`"
        );
    }
    if let Some((_, m)) = methods
        .iter()
        .enumerate()
        .find(|(i, m)| methods[..*i].contains(m))
    {
        bail!("--heal names `{m}` twice");
    }
    let specs = args
        .strategies
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(StrategySpec::parse)
        .collect::<depthprune::error::Result<Vec<_>>>()?;
    if specs.is_empty() {
        bail!("--strategies is empty");
    }
    if args.resamples == Some(0) {
        bail!("--resamples must be at least 1");
    }
    if args.limit == Some(0) {
        bail!("--limit must be at least 1");
    }
    if args.select_samples == Some(0) {
        bail!("--select-samples must be at least 1");
    }
    let boot = Bootstrap::new(args.ci_resamples, args.seed)?;
    let eval_ctx = args.eval_ctx.unwrap_or(args.calib.ctx);
    // Disjoint as far as the flags alone say (healing's extent is known once the text is read).
    let mut slices = fixed_slices(&args, eval_ctx, usize::MAX);
    slices.push(select_slice(&args, eval_ctx, &slices));
    check_disjoint(&slices)?;
    let protect = match &args.protect {
        Some(p) => Protect::parse(p)?,
        None => Protect::default(),
    };
    // Read the questions first: a bad file fails before the model loads.
    let task_items = match &args.tasks {
        Some(f) => Some(eval::read_tasks(f, args.limit)?),
        None => None,
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
    let select_samples = args.select_samples.unwrap_or(args.eval_samples);
    let bytes = cache_bytes(n, args.eval_samples + select_samples, eval_ctx, hidden);
    if bytes > CACHE_WARN_BYTES {
        warn(format!(
            "the dense activation caches need {:.1} GiB (lower --eval-samples, --select-samples or --eval-ctx)",
            bytes as f64 / (1u64 << 30) as f64
        ));
    }
    let (tok, notes) = open_tokenizer(&args.model)?;
    for note in &notes {
        warn(note);
    }
    let calib_tokens = match &calib_path {
        Some(p) => tok.encode(&eval::read_text(p)?, false)?,
        None => Vec::new(),
    };
    // The slices again, with healing's extent clipped to the calibration text.
    let mut slices = fixed_slices(&args, eval_ctx, calib_tokens.len());
    let select = select_slice(&args, eval_ctx, &slices);
    slices.push(select);
    check_disjoint(&slices)?;
    let select = slices.pop().context("no validation slice")?;
    let eval_slice = slices
        .iter()
        .find(|s| s.name == "evaluation")
        .context("no evaluation slice")?;
    let eval_windows = slice_windows(&tok, eval_slice, eval_ctx)?;
    let select_windows = slice_windows(&tok, &select, eval_ctx)?;
    let model = Model::from_source(cfg, source, &|_| !args.calib.offload)?;
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
    let encoded = match &task_items {
        Some(items) => Some(
            items
                .iter()
                .map(|i| eval::encode_item(&tok, i))
                .collect::<depthprune::error::Result<Vec<_>>>()?,
        ),
        None => None,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("`{}`: cannot create the output folder", args.out.display()))?;

    let max_k = counts.last().copied().unwrap_or(0);
    let resampled_windows = args
        .resamples
        .map(|k| resample_windows(&calib_windows, k, args.seed));
    let mut strategies = Vec::new();
    let mut resampled = Vec::new();
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
        let mut again = Vec::new();
        for (i, w) in resampled_windows.iter().flatten().enumerate() {
            if !spec.metric.needs_model() {
                again.push(out.scores.clone());
                continue;
            }
            eprintln!("scoring: {}, calibration resample {}", spec.label(), i + 1);
            again.push(score(&model, w, &opts, &Bar::items())?.scores);
        }
        strategies.push((*spec, out.scores));
        resampled.push(again);
    }
    // Healing fits on --heal-samples tokens of the calibration text from --calib-offset (as
    // `prune --heal` does), whole windows of --ctx.
    let heal_tokens: &[u32] = {
        let start = args.calib.calib_offset.min(calib_tokens.len());
        let end = (start + args.heal_fit.heal_samples).min(calib_tokens.len());
        &calib_tokens[start..end]
    };
    let methods = args.heal.clone().unwrap_or_default();
    let heal = match methods.first() {
        Some(method) => Some((args.heal_fit.options(method, args.calib.ctx)?, heal_tokens)),
        None => None,
    };
    let heal_also = methods
        .iter()
        .skip(1)
        .map(|m| Ok((m.clone(), args.heal_fit.options(m, args.calib.ctx)?)))
        .collect::<Result<Vec<_>>>()?;
    let set = |s: &Slice<'_>, windows: usize| EvalSet {
        file: s.file.display().to_string(),
        ctx: eval_ctx,
        windows,
        offset_tokens: s.tokens.start,
        scored_tokens: windows * (eval_ctx - 1),
    };
    let eval_set = set(eval_slice, args.eval_samples);
    let select_set = set(&select, select_samples);
    let cache = DenseCache::build(&model, eval_windows, &Bar::items())?;
    let select_cache = DenseCache::build(&model, select_windows, &Bar::items())?;
    let stability_inputs: Vec<(String, Vec<LayerScores>)> = specs
        .iter()
        .zip(&resampled)
        .filter(|(s, r)| s.metric.needs_model() && !r.is_empty())
        .map(|(s, r)| (s.label(), r.clone()))
        .collect();
    let plan = sweep::SweepPlan {
        strategies,
        resampled: if args.resamples.is_some() {
            resampled
        } else {
            Vec::new()
        },
        counts,
        protect,
        heal,
        heal_also,
        eval: eval_set,
        select: select_set,
        calibration,
        tasks: match (&args.tasks, &encoded) {
            (Some(f), Some(items)) => Some(sweep::TaskPlan {
                file: f.display().to_string(),
                items,
                opts: TaskOpts::for_model(&model),
            }),
            _ => None,
        },
        bootstrap: boot,
    };
    let mut result = sweep::run(
        &model,
        &args.model,
        &cache,
        &select_cache,
        plan,
        &Bar::items(),
    )?;
    let k = args
        .report_k
        .unwrap_or_else(|| super::report::default_k(&result))
        .max(1);
    let counts_p = ParamCounts::from_config(&model.config().arch);
    for (label, r) in &stability_inputs {
        let st = super::score::stability(r, k, result.protect, &counts_p)?;
        result.layer_stability.push((label.clone(), st));
    }
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
    let dense_ci = s
        .dense_perplexity_ci
        .map(|c| format!(" [{:.3}, {:.3}]", c[0], c[1]))
        .unwrap_or_default();
    writeln!(
        t,
        "evaluation   `{}`, {} windows of {} tokens from token {}; dense perplexity {:.3}{dense_ci}",
        s.eval.file, s.eval.windows, s.eval.ctx, s.eval.offset_tokens, s.dense_perplexity
    )?;
    if let Some(v) = &s.select {
        writeln!(
            t,
            "validation   `{}`, {} windows of {} tokens from token {} (the best choices are made here)",
            v.file, v.windows, v.ctx, v.offset_tokens
        )?;
    }
    writeln!(
        t,
        "calibration  {}",
        super::score::describe_calibration(&s.calibration)
    )?;
    let healed = s.heal.is_some();
    writeln!(
        t,
        "\nevaluation perplexity{} by layers removed (KL to dense in brackets):",
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
    writeln!(
        t,
        "\nbest by validation perplexity, measured on the evaluation slice (95% intervals):"
    )?;
    for &k in s.counts.iter().filter(|&&k| k > 0) {
        let (Some(r), Some(b)) = (s.best_at(k), s.best.get(&k.to_string())) else {
            continue;
        };
        writeln!(
            t,
            "  k={k:<3} {:<16} --drop {:<24} ppl {:.2}{} ({:.1}% of parameters kept){}",
            r.strategy,
            r.drop,
            b.perplexity,
            b.perplexity_ci
                .map(|c| format!(" [{:.2}, {:.2}]", c[0], c[1]))
                .unwrap_or_default(),
            100.0 * r.params_kept,
            match &b.runner_up {
                Some(u) if !u.difference.separates() => format!(
                    "; not distinguishable from {} (runner-up {:+.2} [{:.2}, {:.2}])",
                    u.strategy, u.difference.estimate, u.difference.ci[0], u.difference.ci[1]
                ),
                Some(u) if u.difference.estimate < 0.0 => format!(
                    "; runner-up {} {:+.2} [{:.2}, {:.2}] is lower on evaluation",
                    u.strategy, u.difference.estimate, u.difference.ci[0], u.difference.ci[1]
                ),
                Some(u) => format!(
                    "; runner-up {} {:+.2} [{:.2}, {:.2}]",
                    u.strategy, u.difference.estimate, u.difference.ci[0], u.difference.ci[1]
                ),
                None => String::new(),
            }
        )?;
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
    for (label, st) in &s.layer_stability {
        if let Some(sc) = s
            .strategies
            .iter()
            .zip(&s.scores)
            .find(|(l, _)| *l == label)
        {
            files.extend(super::score::plot_stability(&plots, sc.1, st)?);
        }
    }
    files.extend(super::sweep_plots::sweep_plots(&plots, s)?);
    Ok(files)
}

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

/// One CSV row per strategy and count, with the columns of [`COLUMNS`], then, for each extra
/// healing method `M` (`--heal A,M,…`), `healed_M_perplexity`, `healed_M_mean_kl` and
/// `healed_M_top1_agreement`.
pub fn csv(s: &Sweep) -> Result<String> {
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
        writeln!(t, "{}", cells.join(","))?;
    }
    Ok(t)
}
