//! The study: every strategy at every number of layers removed, pruned virtually (layers skipped
//! in memory) and measured against the dense model on three disjoint slices of text:
//! calibration (scores and heals), validation (picks the best removal at each count) and
//! evaluation (measures it), cut as `sweep/slices.rs` says. Optionally writes `sweep.csv`, `sweep.json`,
//! the plots and the report.

mod slices;
mod study;

use crate::api::heal::{HealFit, HealMethod};
use crate::api::score::{stability, CalibOptions};
use crate::api::text::{read_tokens, TextSlice};
use crate::api::ModelSource;
use crate::arch::ParamCounts;
use crate::choose::strategy::Protect;
use crate::error::{Error, IoContext, Result};
use crate::eval::{self, Bootstrap};
use crate::hub::Need;
use crate::model::{open_checkpoint, Model};
use crate::progress::Progress;
use crate::score::{check_resamples, resample_draws, score, LayerScores, ScoreOptions};
use crate::sweep::{self, cache_bytes, parse_counts, DenseCache, EvalSet, StrategySpec, Sweep};
use crate::tokenizer::open_tokenizer;
use serde::{Deserialize, Serialize};
use slices::{check_disjoint, check_sizes, windows};
use std::path::{Path, PathBuf};

/// Above this many bytes the dense activation caches earn a warning.
const CACHE_WARN_BYTES: u64 = 8 << 30;

/// What `sweep` runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(default)]
pub struct SweepRequest {
    /// Comma-separated strategies: angular, bi, minitron, ppl, greedy, healed, last, each
    /// optionally with `:block` or `:layers`.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_delimiter = ',',
            default_value = "angular,bi,ppl,last",
            value_name = "LIST"
        )
    )]
    pub strategies: Vec<String>,
    /// Numbers of layers to remove.
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value = "0..9", value_name = "COUNTS")
    )]
    pub remove: String,
    /// Never remove these: `first:K,last:K`.
    #[cfg_attr(feature = "cli", arg(long, value_name = "first:K,last:K"))]
    pub protect: Option<String>,
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub calib: CalibOptions,
    /// Evaluation text (UTF-8); may be the calibration file, with disjoint offsets.
    #[cfg_attr(feature = "cli", arg(long, value_name = "FILE"))]
    pub eval: PathBuf,
    /// Tokens per evaluation window (default: --ctx).
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub eval_ctx: Option<usize>,
    /// Evaluation windows.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 8, value_name = "N"))]
    pub eval_samples: usize,
    /// Tokens of the evaluation text to skip first.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0, value_name = "TOKENS"))]
    pub eval_offset: usize,
    /// Validation text, on which the best removal at each count is chosen before it is measured
    /// on the evaluation text (default: the calibration file, else the evaluation file).
    #[cfg_attr(feature = "cli", arg(long, value_name = "FILE"))]
    pub select_on: Option<PathBuf>,
    /// Tokens of the validation text to skip first (default: the first token after every other
    /// slice taken from the same file).
    #[cfg_attr(feature = "cli", arg(long, value_name = "TOKENS"))]
    pub select_offset: Option<usize>,
    /// Validation windows of --eval-ctx tokens (default: --eval-samples).
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub select_samples: Option<usize>,
    /// Also score each strategy on K bootstrap resamples of the calibration windows and report
    /// how stable each choice is.
    #[cfg_attr(feature = "cli", arg(long, value_name = "K"))]
    pub resamples: Option<usize>,
    /// Bootstrap resamples behind every 95% interval.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = eval::bootstrap::RESAMPLES, value_name = "N"))]
    pub ci_resamples: usize,
    /// Seed of the bootstrap and of the calibration resamples.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = eval::bootstrap::SEED, value_name = "N"))]
    pub seed: u64,
    /// Also measure every removal, unhealed and healed, on these benchmarks as `eval --tasks`
    /// does: lm-eval tasks by name, their data from the Hub (`mmlu,arc_easy`) or a local path
    /// (`mmlu=PATH,humaneval=PATH`), or one of our JSONL files. Each task's headline metric gets
    /// a 95% interval and its retention against the dense model.
    #[cfg_attr(feature = "cli", arg(long, value_name = "NAME[=PATH],...|FILE.jsonl"))]
    pub tasks: Option<String>,
    /// With --tasks: score only the first N questions of each task.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", requires = "tasks"))]
    pub limit: Option<usize>,
    /// With --tasks NAME=PATH: few-shot examples per question (default: the task's own, as
    /// `eval --tasks`).
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", requires = "tasks"))]
    pub num_fewshot: Option<usize>,
    /// With --tasks NAME=PATH: render each prompt with the checkpoint's chat template.
    #[cfg_attr(feature = "cli", arg(long, requires = "tasks"))]
    pub chat_template: bool,
    /// Allow tasks that run the code the model writes (humaneval), in every cell. Without it
    /// they are refused. Each program runs in its own process and temporary folder with time
    /// and memory limits, and without network where Linux allows.
    #[cfg_attr(feature = "cli", arg(long, requires = "tasks"))]
    pub confirm_run_unsafe_code: bool,
    /// Generation tasks: new tokens at most (default: the task's own).
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", requires = "tasks"))]
    pub max_gen_toks: Option<usize>,
    /// Code tasks: seconds each program may run.
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = 3.0, value_name = "S", requires = "tasks")
    )]
    pub code_timeout: f64,
    /// Also heal every removal and measure it healed (`auto`, `lstsq`, `weighted`, `scale` or
    /// `cosine`, as in `prune --heal`; validated on held-out calibration windows unless
    /// --holdout 0). Several methods, comma-separated, each get their own healed columns; the
    /// best choice at each count follows the first.
    #[cfg_attr(feature = "cli", arg(long, value_enum, num_args = 0..=1, value_delimiter = ',', default_missing_value = "auto", value_name = "METHOD[,METHOD...]"))]
    pub heal: Vec<HealMethod>,
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub heal_fit: HealFit,
    /// With --heal and the `healed` strategy: per count, heal the heal-aware proxy's K best sets
    /// (a beam search) and the greedy set with its last choice swapped, Block Influence's set
    /// and the best angular block, judge them on the held-out calibration windows and measure
    /// the lowest KL (as `prune --heal` chooses). Each count then costs one heal per finalist.
    #[cfg_attr(feature = "cli", arg(long, value_name = "K", requires = "heal"))]
    pub finalists: Option<usize>,
    /// Output folder for sweep.csv, sweep.json, scores and plots (nothing is written without one).
    #[cfg_attr(feature = "cli", arg(long, short, required = true))]
    pub out: Option<PathBuf>,
    /// Also write report.md (generations, tables and plots) into the output folder.
    #[cfg_attr(feature = "cli", arg(long))]
    pub report: bool,
    /// Layers removed for the report's pruned generations (default: the largest count ≤ 8).
    #[cfg_attr(feature = "cli", arg(long, value_name = "K"))]
    pub report_k: Option<usize>,
    /// Continue the study in --out: the cells it saved with the same settings are kept, the
    /// others measured (a changed setting is refused, by name).
    #[cfg_attr(feature = "cli", arg(long))]
    pub resume: bool,
    /// Start over in an --out that holds another study's saved cells (they are discarded).
    #[cfg_attr(feature = "cli", arg(long, conflicts_with = "resume"))]
    pub force: bool,
    /// How the call runs: precision, threads, symlink policy (the CLI's global flags).
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", arg(skip))]
    pub run: crate::api::RunOptions,
}

impl Default for SweepRequest {
    fn default() -> Self {
        SweepRequest {
            strategies: ["angular", "bi", "ppl", "last"].map(String::from).to_vec(),
            remove: "0..9".into(),
            protect: None,
            calib: CalibOptions::default(),
            eval: PathBuf::new(),
            eval_ctx: None,
            eval_samples: 8,
            eval_offset: 0,
            select_on: None,
            select_offset: None,
            select_samples: None,
            resamples: None,
            ci_resamples: eval::bootstrap::RESAMPLES,
            seed: eval::bootstrap::SEED,
            tasks: None,
            limit: None,
            num_fewshot: None,
            chat_template: false,
            confirm_run_unsafe_code: false,
            max_gen_toks: None,
            code_timeout: 3.0,
            heal: Vec::new(),
            heal_fit: HealFit::default(),
            finalists: None,
            out: None,
            report: false,
            report_k: None,
            resume: false,
            force: false,
            run: crate::api::RunOptions::default(),
        }
    }
}

/// Runs the study on `model`.
pub fn sweep(model: &ModelSource, req: &SweepRequest, progress: &dyn Progress) -> Result<Sweep> {
    // `offload` reaches the models the sweep builds inside (healing's dense model) as well.
    req.run.install(progress, || crate::model::with_offload(req.calib.offload, || {
    if req.heal.contains(&HealMethod::Kd) {
        return Err(Error::Invalid("heal kd is not available in sweep: distilling every cell takes minutes each; distil the chosen removal with `prune` or `heal`".into()));
    }
    if let Some((_, m)) = req
        .heal
        .iter()
        .enumerate()
        .find(|(i, m)| req.heal[..*i].contains(m))
    {
        return Err(Error::Invalid(format!("`heal` names `{}` twice", m.name())));
    }
    let specs = req
        .strategies
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.trim().is_empty())
        .map(StrategySpec::parse)
        .collect::<Result<Vec<_>>>()?;
    if specs.is_empty() {
        return Err(Error::Invalid("`strategies` is empty".into()));
    }
    if let Some(r) = req.resamples {
        check_resamples(r, "resamples")?;
    }
    for (v, name) in [
        (req.limit, "limit"),
        (req.max_gen_toks, "max_gen_toks"),
        (req.select_samples, "select_samples"),
        (req.report_k, "report_k"),
    ] {
        if v == Some(0) {
            return Err(Error::Invalid(format!("`{name}` must be at least 1")));
        }
    }
    if req.eval.as_os_str().is_empty() {
        return Err(Error::Invalid(
            "a sweep needs evaluation text (`eval`)".into(),
        ));
    }
    req.calib.check()?;
    let boot = Bootstrap::new(req.ci_resamples, req.seed)?;
    // Disjoint as far as the options alone say (healing's extent is known once the text is read).
    let mut slices = req.fixed(usize::MAX);
    slices.push(req.select(&slices));
    check_sizes(&slices, req)?;
    check_disjoint(&slices)?;
    let protect = match &req.protect {
        Some(p) => Protect::parse(p)?,
        None => Protect::default(),
    };
    // Read the questions first: a bad file fails before the model loads.
    let suite = req.suite_opts();
    let task_data = match &req.tasks {
        Some(t) => Some(super::tasks::sweep_tasks(
            t,
            &suite,
            &crate::hub::HubConfig::from_env(),
            progress,
        )?),
        None => None,
    };
    let path = model.resolve(Need::Snapshot, progress)?.path;
    // The study folder: checked against the inputs and locked before anything is written.
    let study = match &req.out {
        Some(out) => Some(study::Study::open(out, req, model.path(), &path)?),
        None => None,
    };
    let (cfg, source) = open_checkpoint(&path)?;
    let n = cfg.n_layers();
    let counts = parse_counts(&req.remove, n)?;
    let mut journal = match &study {
        Some(s) => s.journal(req, model.path(), &path, &specs, &counts, progress)?,
        None => sweep::Journal::none(),
    };
    let needs_calib = specs.iter().any(|s| s.metric.needs_model()) || !req.heal.is_empty();
    if needs_calib && req.calib.text.calib.is_none() {
        return Err(Error::Invalid(
            "these strategies need calibration text\nhint: pass `calib`".into(),
        ));
    }
    let eval_ctx = req.eval_ctx();
    let select_samples = req.select_samples.unwrap_or(req.eval_samples);
    let bytes = cache_bytes(
        n,
        req.eval_samples + select_samples,
        eval_ctx,
        cfg.arch.hidden_size,
    );
    if bytes > CACHE_WARN_BYTES {
        progress.warn(&format!(
            "the dense activation caches need {:.1} GiB (fewer evaluation or validation windows, or a shorter eval_ctx)",
            bytes as f64 / (1u64 << 30) as f64
        ));
    }
    let (tok, notes) = open_tokenizer(&path)?;
    for note in &notes {
        progress.warn(note);
    }
    let calib_tokens = match &req.calib.text.calib {
        Some(p) => read_tokens(&tok, p, None)?,
        None => Vec::new(),
    };
    // The slices again, with healing's extent clipped to the calibration text.
    let mut slices = req.fixed(calib_tokens.len());
    let select = req.select(&slices);
    slices.push(select);
    check_disjoint(&slices)?;
    let select = slices
        .pop()
        .ok_or_else(|| Error::Invalid("no validation slice".into()))?;
    let eval_slice = slices
        .iter()
        .find(|s| s.role == "evaluation")
        .ok_or_else(|| Error::Invalid("no evaluation slice".into()))?;
    let eval_windows = windows(&tok, eval_slice)?;
    let select_windows = windows(&tok, &select)?;
    let resident = !req.calib.offload;
    let m = Model::from_source(cfg, source, &|_| resident)?;
    let calib_windows = match req.calib.slice() {
        Some(s) => s.windows_of(&calib_tokens, "calibration")?,
        None => Vec::new(),
    };
    let calibration = req.calib.describe();
    let scorer = match &task_data {
        Some(d) => Some(super::tasks::SweepScorer::new(d, &tok, &m, &suite)?),
        None => None,
    };
    let score_tasks = |model: &Model, skip: &[usize]| match &scorer {
        Some(s) => s.score(model, skip, &tok, &crate::progress::Silent),
        None => Ok(Vec::new()),
    };
    let max_k = counts.last().copied().unwrap_or(0);
    let draws = req
        .resamples
        .map(|k| resample_draws(calib_windows.len(), k, req.seed));
    let mut strategies = Vec::new();
    let mut resampled = Vec::new();
    for spec in &specs {
        let opts = ScoreOptions {
            metric: spec.metric,
            tokens: req.calib.tokens,
            max_block: req.calib.max_block.unwrap_or(n),
            batch: req.calib.batch,
            greedy_steps: Some(max_k.max(1)),
        };
        if let Some((scores, again)) = journal.take_scores(&spec.label()) {
            strategies.push((*spec, scores));
            resampled.push(again);
            continue;
        }
        if crate::base::cancel::requested() {
            journal.flush_scores()?;
            return Err(interrupted(
                "interrupted while scoring, before the first cell".into(),
                &req.out,
            ));
        }
        progress.message(&format!("scoring: {}", spec.label()));
        let mut out = score(&m, &calib_windows, &opts, progress)?;
        out.scores.calibration = calibration.clone();
        out.scores.model = model.path().display().to_string();
        // A calibration resample reweights the scored windows (one forward pass for all
        // resamples); greedy and healed scoring, whose path depends on the windows, score each
        // resample's windows again.
        let mut again = Vec::new();
        for (i, d) in draws.iter().flatten().enumerate() {
            if let Some(s) = out.reweighted(d) {
                again.push(s?);
                continue;
            }
            progress.message(&format!(
                "scoring: {}, calibration resample {}",
                spec.label(),
                i + 1
            ));
            let w: Vec<Vec<u32>> = d.iter().map(|&j| calib_windows[j].clone()).collect();
            again.push(score(&m, &w, &opts, progress)?.scores);
        }
        journal.record_scores(&spec.label(), &out.scores, &again)?;
        strategies.push((*spec, out.scores));
        resampled.push(again);
    }
    // Healing fits on heal_samples tokens of the calibration text from calib_offset (as
    // `prune` heals), whole windows of ctx.
    let heal_tokens = &calib_tokens[req
        .calib
        .text
        .heal_range(req.heal_fit.heal_samples, calib_tokens.len())];
    let heal = match req.heal.first() {
        Some(&method) => Some((req.heal_fit.options(method, req.calib.text.ctx)?, heal_tokens)),
        None => None,
    };
    let heal_also = req
        .heal
        .iter()
        .skip(1)
        .map(|&m| {
            Ok((
                m.name().to_string(),
                req.heal_fit.options(m, req.calib.text.ctx)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let set = |s: &TextSlice| EvalSet {
        file: s.file.display().to_string(),
        ctx: eval_ctx,
        windows: s.windows,
        offset_tokens: s.offset,
        scored_tokens: s.windows * (eval_ctx - 1),
    };
    let eval_set = set(&eval_slice.slice);
    let select_set = set(&select.slice);
    let cache = DenseCache::build(&m, eval_windows, progress)?;
    let select_cache = DenseCache::build(&m, select_windows, progress)?;
    let stability_inputs: Vec<(String, Vec<LayerScores>)> = specs
        .iter()
        .zip(&resampled)
        .filter(|(s, r)| s.metric.needs_model() && !r.is_empty())
        .map(|(s, r)| (s.label(), r.clone()))
        .collect();
    let plan = sweep::SweepPlan {
        strategies,
        resampled: if req.resamples.is_some() {
            resampled
        } else {
            Vec::new()
        },
        counts,
        protect,
        heal,
        heal_name: req.heal.first().map(|m| m.name().to_string()).unwrap_or_default(),
        finalists: req.finalists,
        heal_also,
        eval: eval_set,
        select: select_set,
        calibration,
        tasks: task_data.as_ref().map(|d| sweep::TaskPlan {
            tasks: d.names(),
            score: &score_tasks,
        }),
        bootstrap: boot,
    };
    let run = sweep::run(&m, model.path(), &cache, &select_cache, plan, &mut journal, progress);
    let mut result = match run {
        Err(Error::Interrupted(msg)) => {
            journal.flush_scores()?;
            return Err(interrupted(msg, &req.out));
        }
        r => r?,
    };
    result.model_name = Some(model_name(&path));
    result.kernels = crate::model::kernel::report();
    let k = req.report_k.unwrap_or_else(|| result.default_k()).max(1);
    let counts_p = ParamCounts::from_config(&m.config().arch);
    for (label, r) in &stability_inputs {
        let st = stability(r, k, result.protect, &counts_p)?;
        result.layer_stability.push((label.clone(), st));
    }
    // Nothing is written unless every cell is a number.
    eval::ensure_finite(&result, "the sweep", &path)?;
    if let Some(out) = &req.out {
        std::fs::create_dir_all(out).at(out)?;
        write_outputs(out, &result)?;
        if req.report {
            let report = super::report::write_report(out, &result, &m, &tok, k, None, progress)?;
            progress.message(&format!("report: {}", report.display()));
        }
    }
    Ok(result)
    }))
}

impl SweepRequest {
    /// How the tasks run: as `eval --tasks` runs them, greedy, one sample each.
    fn suite_opts(&self) -> super::tasks::SuiteOpts {
        super::tasks::SuiteOpts {
            chat_template: self.chat_template,
            code_timeout: self.code_timeout,
            ..super::tasks::SuiteOpts::greedy(
                self.limit,
                self.num_fewshot,
                self.confirm_run_unsafe_code,
                self.max_gen_toks,
            )
        }
    }
}

/// An interruption, with where the finished cells are and how to resume.
fn interrupted(msg: String, out: &Option<PathBuf>) -> Error {
    Error::Interrupted(match out {
        Some(o) => format!(
            "{msg}; what was finished is saved in `{}`\nhint: run the same command with `resume` to continue",
            o.display()
        ),
        None => format!("{msg}; nothing was saved (no `out`)"),
    })
}

/// The model's name for the report's title: a GGUF's `general.name` when it has one, else the
/// file or folder name.
fn model_name(path: &Path) -> String {
    use crate::checkpoint::gguf::{model::GgufModel, KEY_NAME};
    let named = crate::model::is_gguf(path)
        .then(|| GgufModel::open(path).ok())
        .flatten()
        .and_then(|g| g.metadata().get_str(KEY_NAME).map(str::to_string))
        .filter(|n| !n.trim().is_empty());
    named.unwrap_or_else(|| crate::report::study::model_name_of_path(&path.display().to_string()))
}

/// Writes sweep.csv, sweep.json, per-strategy scores and plots; returns the files written.
pub fn write_outputs(dir: &Path, s: &Sweep) -> Result<Vec<PathBuf>> {
    let write = |name: &str, text: &str| -> Result<PathBuf> {
        let p = dir.join(name);
        std::fs::write(&p, text).at(&p)?;
        Ok(p)
    };
    let json = serde_json::to_string_pretty(s).map_err(|e| Error::Invalid(e.to_string()))?;
    let mut files = vec![
        write("sweep.csv", &crate::sweep::csv::csv(s))?,
        write("sweep.json", &json)?,
    ];
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).at(&plots)?;
    for sc in &s.scores {
        if sc.metric.needs_model() {
            crate::report::score_plots::plot(&plots, sc)?;
        }
    }
    for (label, st) in &s.layer_stability {
        if let Some(sc) = s
            .strategies
            .iter()
            .zip(&s.scores)
            .find(|(l, _)| *l == label)
        {
            files.extend(crate::report::score_plots::plot_stability(
                &plots, sc.1, st,
            )?);
        }
    }
    files.extend(crate::report::sweep_plots::sweep_plots(&plots, s)?);
    Ok(files)
}
