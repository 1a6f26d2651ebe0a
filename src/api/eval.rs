//! Measuring a model, optionally with layers skipped as if pruned: perplexity on a text under
//! the literature's window conventions with the divergence from a reference, or zero-shot
//! multiple-choice accuracy on a task file.

use super::ModelSource;
use crate::error::{Error, Result};
use crate::eval::choice::max_len;
use crate::eval::{self, Convention, EvalReport, Run, TaskOpts, TaskReport};
use crate::hub::Need;
use crate::model::kernel::KernelRecord;
use crate::model::{open_checkpoint, Model};
use crate::progress::Progress;
use crate::select::{LayerSpec, Removal};
use crate::tokenizer::{open_tokenizer, HfTokenizer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What `eval` measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(default)]
pub struct EvalRequest {
    /// The text to score (UTF-8), tokenized as one stream.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "FILE",
            required_unless_present = "tasks",
            conflicts_with = "tasks"
        )
    )]
    pub text: Option<PathBuf>,
    /// Score standard benchmarks instead of perplexity: `NAME[=PATH],...` (mmlu, arc_easy,
    /// arc_challenge, hellaswag, winogrande, piqa, boolq, openbookqa, lambada_openai, humaneval,
    /// gsm8k; a name alone fetches its Hub dataset into the HF cache; PATH a parquet, JSON Lines
    /// or .jsonl.gz file or a folder of them in the Hub dataset's schema), or one JSONL file of
    /// our own multiple-choice format.
    #[cfg_attr(feature = "cli", arg(long, value_name = "TASKS", conflicts_with_all = ["stride", "max_tokens", "reference"]))]
    pub tasks: Option<String>,
    /// With --tasks: score only the first N questions of each task.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", requires = "tasks"))]
    pub limit: Option<usize>,
    /// With --tasks and --json: also list each question's log-likelihoods, predictions or
    /// generations.
    #[cfg_attr(feature = "cli", arg(long, requires = "tasks"))]
    pub per_item: bool,
    /// With --tasks NAME[=PATH]: few-shot examples per question (default: the task's own, 5 for
    /// gsm8k, else 0); they come from the few-shot split (mmlu: `dev`), in PATH's folder or on
    /// the Hub.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", requires = "tasks"))]
    pub num_fewshot: Option<usize>,
    /// With --tasks NAME[=PATH]: render each prompt with the checkpoint's chat template (as
    /// lm-eval's --apply_chat_template).
    #[cfg_attr(feature = "cli", arg(long, requires = "tasks"))]
    pub chat_template: bool,
    /// Allow tasks that run the code the model writes (humaneval). Without it they are refused.
    /// Each program runs with `python3` in its own process and temporary folder, with a time
    /// limit, a 2 GiB address-space limit and, where Linux allows, no network.
    #[cfg_attr(feature = "cli", arg(long, requires = "tasks"))]
    pub confirm_run_unsafe_code: bool,
    /// Generation tasks: samples per prompt (pass@k needs k ≤ N; sample with --temperature).
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = 1, value_name = "N", requires = "tasks")
    )]
    pub samples: usize,
    /// Generation tasks: also report pass@K from the samples.
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = 1, value_name = "K", requires = "tasks")
    )]
    pub pass_k: usize,
    /// Generation tasks: sampling temperature (0, the default, is greedy).
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = 0.0, value_name = "T", requires = "tasks")
    )]
    pub temperature: f32,
    /// Generation tasks: nucleus sampling's total probability.
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = 1.0, value_name = "P", requires = "tasks")
    )]
    pub top_p: f32,
    /// Generation tasks: the sampling seed.
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = 0, value_name = "S", requires = "tasks")
    )]
    pub seed: u64,
    /// Generation tasks: new tokens at most (default: the task's, 1024 for humaneval, 256 for
    /// gsm8k).
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", requires = "tasks"))]
    pub max_gen_toks: Option<usize>,
    /// Code tasks: seconds each program may run (lm-eval's code_eval allows 3).
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = 3.0, value_name = "S", requires = "tasks")
    )]
    pub code_timeout: f64,
    /// Tokens per window.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 512, value_name = "N"))]
    pub ctx: usize,
    /// Start a window every S tokens and score only new tokens (sliding convention).
    #[cfg_attr(feature = "cli", arg(long, value_name = "S"))]
    pub stride: Option<usize>,
    /// Use only the first N tokens of the text.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub max_tokens: Option<usize>,
    /// Skip these layers (0-based SPEC, e.g. `20..28`) as if they were pruned.
    #[cfg_attr(feature = "cli", arg(long, value_name = "SPEC"))]
    pub skip: Option<String>,
    /// Also report KL(reference ‖ model) and top-1 agreement against this model (often the
    /// dense MODEL itself, with --skip on the evaluated side).
    #[cfg_attr(feature = "cli", arg(long, value_name = "DENSE"))]
    pub reference: Option<PathBuf>,
    /// Windows per forward pass; with --tasks, requests per forward (a question's choices, or
    /// prompts generating together, one sample each).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 4, value_name = "B"))]
    pub batch: usize,
    /// Keep only one layer's weights resident, read from the mapped file as the batches pass
    /// layer by layer (slower, for models larger than memory).
    #[cfg_attr(feature = "cli", arg(long))]
    pub offload: bool,
    /// How the call runs: precision, threads, symlink policy (the CLI's global flags).
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", arg(skip))]
    pub run: crate::api::RunOptions,
}

impl Default for EvalRequest {
    fn default() -> Self {
        EvalRequest {
            text: None,
            tasks: None,
            limit: None,
            per_item: false,
            num_fewshot: None,
            chat_template: false,
            confirm_run_unsafe_code: false,
            samples: 1,
            pass_k: 1,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            max_gen_toks: None,
            code_timeout: 3.0,
            ctx: 512,
            stride: None,
            max_tokens: None,
            skip: None,
            reference: None,
            batch: 4,
            offload: false,
            run: crate::api::RunOptions::default(),
        }
    }
}

/// Perplexity and divergence, as `eval --json` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct EvalResult {
    #[serde(flatten)]
    pub report: EvalReport,
    pub model: String,
    pub skip: Vec<usize>,
    pub reference: Option<String>,
    pub text: String,
    /// The precision the products ran in (`compute` resolved for this checkpoint: f32, bf16 or
    /// quant) and the threads the call ran on.
    pub compute: String,
    pub threads: usize,
    /// The kernels the products ran on, with their measured rates (issue 34).
    pub kernels: Vec<KernelRecord>,
    #[serde(skip)]
    pub n_layers: usize,
}

/// Multiple-choice accuracy, as `eval --tasks --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    #[serde(flatten)]
    pub report: TaskReport,
    pub model: String,
    pub tasks: String,
    pub skip: Vec<usize>,
    /// The kernels the products ran on, with their measured rates (issue 34).
    pub kernels: Vec<KernelRecord>,
    #[serde(skip)]
    pub n_layers: usize,
}

/// Standard benchmarks by name, as `eval --tasks NAME=PATH --json` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteResult {
    pub model: String,
    pub skip: Vec<usize>,
    pub tasks: Vec<crate::eval::suite::TaskScore>,
    pub compute: String,
    pub threads: usize,
    #[serde(skip)]
    pub n_layers: usize,
}

/// Either measurement.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Evaluation {
    Perplexity(Box<EvalResult>),
    Tasks(Box<TaskResult>),
    Suite(Box<SuiteResult>),
}

/// The layers `spec` names in a model of `n_layers`, sorted (none without a spec).
pub fn skip_list(spec: Option<&str>, n_layers: usize) -> Result<Vec<usize>> {
    Ok(match spec {
        Some(s) => Removal::drop(&LayerSpec::parse(s)?, n_layers)?.removed(),
        None => Vec::new(),
    })
}

/// The model (with `skip`ped layers left unloaded unless `keep_all`, and every layer unloaded
/// when `offload`: each is then read from the file when a forward needs it) and its tokenizer.
pub(crate) fn open_skipping(
    path: &Path,
    skip: Option<&str>,
    keep_all: bool,
    offload: bool,
    progress: &dyn Progress,
) -> Result<(Model, Vec<usize>, HfTokenizer)> {
    open_skipping_with(path, skip, keep_all, offload, progress, Ok)
}

/// [`open_skipping`], handing the tokenizer to `with` before the weights load: what `with`
/// returns is kept, and a tokenizer it drops (after tokenizing the text, say) frees its memory
/// for the weights instead of staying beside them.
pub(crate) fn open_skipping_with<T>(
    path: &Path,
    skip: Option<&str>,
    keep_all: bool,
    offload: bool,
    progress: &dyn Progress,
    with: impl FnOnce(HfTokenizer) -> Result<T>,
) -> Result<(Model, Vec<usize>, T)> {
    let (cfg, source) = open_checkpoint(path)?;
    let skip = skip_list(skip, cfg.n_layers())?;
    // The tokenizer before the weights: building it needs transient memory (a GGUF's vocabulary
    // and merges) that the weights can then reuse, rather than stack on top of.
    let kept = crate::model::alloc::trimming(|| {
        let (tok, notes) = open_tokenizer(path)?;
        for note in &notes {
            progress.warn(note);
        }
        with(tok)
    })?;
    let model = Model::from_source(cfg, source, &|i| {
        !offload && (keep_all || !skip.contains(&i))
    })?;
    Ok((model, skip, kept))
}

/// Measures `model` as `req` says: perplexity on `text`, or accuracy on `tasks`.
pub fn eval(model: &ModelSource, req: &EvalRequest, progress: &dyn Progress) -> Result<Evaluation> {
    req.run.install(progress, || {
        if req.batch == 0 {
            return Err(Error::Invalid("`batch` must be at least 1".into()));
        }
        match (&req.text, &req.tasks) {
            (Some(_), Some(_)) => Err(Error::Invalid(
                "give a text or a task file, not both".into(),
            )),
            (None, Some(t)) => match super::tasks::parse_tasks(t)?.as_slice() {
                [super::tasks::TaskSource::File(_)] => Ok(Evaluation::Tasks(Box::new(eval_tasks(
                    model, req, progress,
                )?))),
                sources => Ok(Evaluation::Suite(Box::new(eval_suite(
                    model, req, sources, progress,
                )?))),
            },
            (Some(_), None) => Ok(Evaluation::Perplexity(Box::new(perplexity(
                model, req, progress,
            )?))),
            (None, None) => Err(Error::Invalid(
                "give a text (perplexity) or a task file (multiple choice)".into(),
            )),
        }
    })
}

/// Perplexity of `model` on `req.text`, and the divergence from `req.reference`.
pub fn perplexity(
    model: &ModelSource,
    req: &EvalRequest,
    progress: &dyn Progress,
) -> Result<EvalResult> {
    let Some(text_path) = req.text.as_deref() else {
        return Err(Error::Invalid("perplexity needs a text".into()));
    };
    if req.max_tokens == Some(0) {
        return Err(Error::Invalid("`max_tokens` must be at least 1".into()));
    }
    let conv = Convention::new(req.ctx, req.stride)?;
    let path = model.resolve(Need::Snapshot, progress)?.path;
    let self_reference = req
        .reference
        .as_deref()
        .is_some_and(|r| super::text::same_file(r, &path) && r.exists());
    // The text is tokenized before the weights load, and the tokenizer dropped.
    let (m, skip, tokens) = open_skipping_with(
        &path,
        req.skip.as_deref(),
        self_reference,
        req.offload,
        progress,
        |tok| super::text::read_tokens(&tok, text_path, req.max_tokens),
    )?;
    if self_reference && skip.is_empty() {
        progress.warn("the reference is the model itself and nothing is skipped, so the divergence is zero; skip some layers");
    }
    let other = match &req.reference {
        Some(r) if !self_reference => {
            let (cfg, source) = open_checkpoint(r)?;
            Some(Model::from_source(cfg, source, &|_| !req.offload)?)
        }
        _ => None,
    };
    let reference = req.reference.as_ref().map(|_| Run {
        model: other.as_ref().unwrap_or(&m),
        skip: &[],
    });
    let windows = eval::plan(tokens.len(), conv)
        .map_err(|e| Error::Invalid(format!("`{}`: {e}", text_path.display())))?;
    let report = eval::evaluate(
        Run {
            model: &m,
            skip: &skip,
        },
        reference,
        &tokens,
        &windows,
        conv,
        req.batch,
        progress,
    )?;
    let result = EvalResult {
        report,
        model: model.path().display().to_string(),
        skip,
        reference: req.reference.as_ref().map(|p| p.display().to_string()),
        text: text_path.display().to_string(),
        compute: m.config().compute.name().to_string(),
        threads: rayon::current_num_threads(),
        kernels: crate::model::kernel::report(),
        n_layers: m.n_layers(),
    };
    eval::ensure_finite(&result, "the evaluation", &path)?;
    Ok(result)
}

/// Zero-shot multiple-choice accuracy of `model` on `req.tasks`.
pub fn eval_tasks(
    model: &ModelSource,
    req: &EvalRequest,
    progress: &dyn Progress,
) -> Result<TaskResult> {
    let Some(file) = req.tasks.as_deref().map(Path::new) else {
        return Err(Error::Invalid("multiple choice needs a task file".into()));
    };
    if req.limit == Some(0) {
        return Err(Error::Invalid("`limit` must be at least 1".into()));
    }
    if req.batch == 0 {
        return Err(Error::Invalid("`batch` must be at least 1".into()));
    }
    // Read the questions first: a bad file fails before the model loads.
    let items = eval::read_tasks(file, req.limit)?;
    let path = model.resolve(Need::Snapshot, progress)?.path;
    let (m, skip, tok) = open_skipping(&path, req.skip.as_deref(), false, req.offload, progress)?;
    let encoded = items
        .iter()
        .map(|i| eval::encode_item(&tok, i))
        .collect::<Result<Vec<_>>>()?;
    let opts = TaskOpts {
        max_len: max_len(&m),
        batch: req.batch,
    };
    let mut report = eval::score_encoded(&m, &skip, &encoded, opts, progress)?;
    // Checked with every question's log-likelihoods, which are not kept unless asked for: an
    // accuracy counted from NaN scores is no accuracy.
    eval::ensure_finite(&report, "the multiple-choice evaluation", &path)?;
    if report.truncated > 0 {
        progress.warn(&format!(
            "{} of the question × choice inputs were longer than {} tokens and lost their start",
            report.truncated, report.max_len
        ));
    }
    if !req.per_item {
        report.items.clear();
    }
    Ok(TaskResult {
        report,
        model: model.path().display().to_string(),
        tasks: file.display().to_string(),
        skip,
        kernels: crate::model::kernel::report(),
        n_layers: m.n_layers(),
    })
}

/// Standard benchmarks by name (`--tasks NAME=PATH,...`) on `model`.
pub fn eval_suite(
    model: &ModelSource,
    req: &EvalRequest,
    sources: &[super::tasks::TaskSource],
    progress: &dyn Progress,
) -> Result<SuiteResult> {
    use super::tasks::{check_consent, load_all, run_all, SuiteOpts, TaskSource};
    if sources.iter().any(|s| matches!(s, TaskSource::File(_))) {
        return Err(Error::Invalid(
            "a JSONL task file of our own format goes alone in `--tasks`".into(),
        ));
    }
    if req.limit == Some(0) || req.samples == 0 || req.pass_k == 0 {
        return Err(Error::Invalid(
            "`limit`, `samples` and `pass_k` must be at least 1".into(),
        ));
    }
    if req.pass_k > req.samples {
        return Err(Error::Invalid(format!(
            "pass@{} needs at least {} samples; `samples` is {}",
            req.pass_k, req.pass_k, req.samples
        )));
    }
    let sampling = crate::model::Sampling {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: 0,
        seed: req.seed,
    };
    sampling.validate()?;
    if req.samples > 1 && req.temperature == 0.0 {
        progress.warn(
            "several samples at temperature 0 are all the same greedy text; give `--temperature`",
        );
    }
    check_consent(sources, req.confirm_run_unsafe_code)?;
    let mut o = SuiteOpts {
        limit: req.limit,
        num_fewshot: req.num_fewshot,
        chat_template: req.chat_template,
        confirm_run_unsafe_code: req.confirm_run_unsafe_code,
        opts: TaskOpts {
            max_len: 1,
            batch: req.batch,
        },
        samples: req.samples,
        pass_k: req.pass_k,
        sampling,
        max_gen_toks: req.max_gen_toks,
        code_timeout: req.code_timeout,
    };
    // The data first: a bad file fails before the model loads.
    let data = load_all(sources, &o, &crate::hub::HubConfig::from_env(), progress)?;
    let path = model.resolve(Need::Snapshot, progress)?.path;
    let (m, skip, tok) = open_skipping(&path, req.skip.as_deref(), false, req.offload, progress)?;
    o.opts.max_len = max_len(&m);
    let tasks = run_all(&m, &skip, &tok, &data, &o, progress)?;
    let mut result = SuiteResult {
        model: model.path().display().to_string(),
        skip,
        tasks,
        compute: m.config().compute.name().to_string(),
        threads: rayon::current_num_threads(),
        n_layers: m.n_layers(),
    };
    for t in &result.tasks {
        if t.truncated > 0 {
            progress.warn(&format!(
                "`{}`: {} inputs were longer than {} tokens and lost their start",
                t.task, t.truncated, o.opts.max_len
            ));
        }
        for note in &t.notes {
            progress.warn(note);
        }
    }
    if !req.per_item {
        for t in &mut result.tasks {
            t.items.clear();
        }
    }
    Ok(result)
}
