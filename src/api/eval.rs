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
    /// Score multiple-choice questions (JSON Lines, see below) instead of perplexity.
    #[cfg_attr(feature = "cli", arg(long, value_name = "FILE.jsonl", conflicts_with_all = ["stride", "max_tokens", "reference"]))]
    pub tasks: Option<PathBuf>,
    /// With --tasks: score only the first N questions.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", requires = "tasks"))]
    pub limit: Option<usize>,
    /// With --tasks and --json: also list each question's log-likelihoods and predictions.
    #[cfg_attr(feature = "cli", arg(long, requires = "tasks"))]
    pub per_item: bool,
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
    /// Windows (with --tasks: question × choice requests) per forward pass.
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

/// Either measurement.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Evaluation {
    Perplexity(Box<EvalResult>),
    Tasks(Box<TaskResult>),
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
            (None, Some(_)) => Ok(Evaluation::Tasks(Box::new(eval_tasks(
                model, req, progress,
            )?))),
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
        |tok| eval::tokenize(&tok, &eval::read_text(text_path)?, req.max_tokens),
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
    let Some(file) = req.tasks.as_deref() else {
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
