//! Writing a pruned checkpoint: HF folders streamed tensor by tensor with config surgery, a
//! model card and provenance; GGUF files with per-layer arrays sliced; optionally healed.

use super::choose::{choose, Chosen, LayerChoice};
use super::finalists::{choose_heal_aware, Budgeted, SELECTION_SHARE};
use super::heal::{heal_gguf_with, heal_hf_with, HealFit, HealMethod, HealRequest, Healed, Output};
use super::ModelSource;
use crate::arch::params::reduction_pct;
use crate::arch::ParamCounts;
use crate::base::guard::check_output;
use crate::checkpoint::atomic::Overwrite;
use crate::checkpoint::gguf::{self, Edits, GgmlType, GgufModel, PruneReport, Value};
use crate::checkpoint::hf::HfCheckpoint;
use crate::checkpoint::hf_prune::{prune_hf, PruneOptions, DEFAULT_MAX_SHARD};
use crate::checkpoint::provenance::Provenance;
use crate::error::{Error, Result};
use crate::hub::Need;
use crate::progress::Progress;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The floating-point types a prune may convert to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum FloatType {
    F32,
    F16,
    Bf16,
}

impl FloatType {
    pub fn name(self) -> &'static str {
        match self {
            FloatType::F32 => "f32",
            FloatType::F16 => "f16",
            FloatType::Bf16 => "bf16",
        }
    }
}

/// What `prune` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(default)]
pub struct PruneRequest {
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub choice: LayerChoice,
    /// Output folder (HF) or file (GGUF).
    #[cfg_attr(feature = "cli", arg(long, short))]
    pub out: PathBuf,
    /// Convert floating-point tensors to this dtype (HF only); otherwise bytes are copied unchanged.
    /// With --heal on a GGUF: the type of the healed tensors (f32 or f16; default their own).
    #[cfg_attr(feature = "cli", arg(long, value_enum))]
    pub dtype: Option<FloatType>,
    /// Largest shard to write: bytes, or with units (5GB, 500MB, 2GiB).
    #[cfg_attr(feature = "cli", arg(long, value_parser = crate::fmt::parse_size, value_name = "SIZE"))]
    pub max_shard_size: Option<u64>,
    /// Replace an existing non-empty output.
    #[cfg_attr(feature = "cli", arg(long))]
    pub force: bool,
    /// With --heal kd: continue the distillation a run cut off saved beside --out (its best
    /// maps, saved at every validation).
    #[cfg_attr(feature = "cli", arg(long))]
    pub resume: bool,
    /// Heal the pruned model: fold a linear map per removed block into the `down_proj` before it
    /// (needs --calib). `auto` (the default) lets held-out validation choose among `lstsq`,
    /// `weighted` and `scale` per block, and leaves a block unhealed when no map helps; `cosine`
    /// refines the least-squares map by cosine distance; `kd` then trains the maps on the dense
    /// model's next-token distribution (--steps, --lr). For a GGUF each healed tensor is written
    /// back in its own ggml type (a healed Q4_K_M stays Q4_K_M; --dtype f32|f16 to keep the
    /// fit unrounded), the rest copied.
    #[cfg_attr(feature = "cli", arg(long, value_enum, num_args = 0..=1, default_missing_value = "auto", value_name = "METHOD"))]
    pub heal: Option<HealMethod>,
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub heal_fit: HealFit,
    /// With --heal: the tasks the heal is checked on.
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub tasks: super::heal::tasks::HealTasks,
    /// The command line recorded in provenance (default: the equivalent `depthprune prune`).
    #[cfg_attr(feature = "cli", arg(skip))]
    pub command: Option<Vec<String>>,
    /// How the call runs: precision, threads, symlink policy (the CLI's global flags).
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", arg(skip))]
    pub run: crate::api::RunOptions,
}

impl Default for PruneRequest {
    fn default() -> Self {
        PruneRequest {
            choice: LayerChoice::default(),
            out: PathBuf::new(),
            dtype: None,
            max_shard_size: None,
            force: false,
            resume: false,
            heal: None,
            heal_fit: HealFit::default(),
            tasks: Default::default(),
            command: None,
            run: crate::api::RunOptions::default(),
        }
    }
}

/// An unhealed GGUF prune, as `prune --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct GgufPruned {
    pub model: PathBuf,
    pub method: serde_json::Value,
    pub report: PruneReport,
    pub params_before: u64,
    pub params_after: u64,
    pub param_reduction_pct: f64,
    pub layer_reduction_pct: f64,
}

/// What a prune wrote.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Pruned {
    /// An HF folder: its provenance (`pruning.json`).
    Hf {
        #[serde(flatten)]
        provenance: Box<Provenance>,
        #[serde(skip)]
        out: PathBuf,
    },
    Gguf(Box<GgufPruned>),
    Healed(Box<Healed>),
}

/// A prune with how its layers were chosen.
#[derive(Debug, Clone)]
pub struct PruneOutcome {
    pub pruned: Pruned,
    pub chosen: Chosen,
}

impl PruneRequest {
    fn output(&self, model: &Path) -> Output {
        Output {
            out: self.out.clone(),
            force: self.force,
            resume: self.resume,
            max_shard_size: self.max_shard_size,
            command: self.command.clone().unwrap_or_else(|| {
                let mut c = vec!["depthprune".into(), "prune".into()];
                c.push(model.display().to_string());
                c.extend(["--out".into(), self.out.display().to_string()]);
                c
            }),
        }
    }

    /// Calibration text given for an unhealed prune chosen by hand is not used; says so.
    fn warn_unused_calib(&self, progress: &dyn Progress) {
        if self.choice.calib.text.calib.is_some() && self.choice.layers.strategy.is_none() {
            progress.warn(
                "calibration text is only used to choose layers or to heal; writing an unhealed prune",
            );
        }
    }

    /// The heal asked for; with a time budget, training gets what is left of it by now
    /// (`started`), at least a tenth of it.
    fn heal_request(&self, method: HealMethod, started: Instant) -> HealRequest {
        let c = &self.choice.calib;
        let mut fit = self.heal_fit.clone();
        fit.time_budget = fit
            .time_budget
            .map(|t| (t - started.elapsed().as_secs_f64()).max(0.1 * t));
        HealRequest {
            method,
            text: c.text.clone(),
            fit,
            offload: c.offload,
            tasks: self.tasks.clone(),
            run: self.run.clone(),
        }
    }

    /// The layer choice, with `strategy` `healed` when healing chooses by an amount alone.
    fn layer_choice(&self) -> std::borrow::Cow<'_, LayerChoice> {
        let c = &self.choice;
        let l = &c.layers;
        if self.heal.is_some()
            && l.strategy.is_none()
            && l.drop.is_none()
            && l.keep.is_none()
            && c.amount().is_some()
        {
            let mut c = c.clone();
            c.layers.strategy = Some(crate::score::Metric::Healed);
            return std::borrow::Cow::Owned(c);
        }
        std::borrow::Cow::Borrowed(c)
    }

    /// When the finalists of heal-aware selection must be done: a share of the time budget.
    fn selection_deadline(&self, started: Instant) -> Option<Instant> {
        self.heal_fit
            .time_budget
            .map(|t| started + Duration::from_secs_f64(SELECTION_SHARE * t))
    }

    /// Heal-aware selection with finalists on the model at `path`, when this prune asks for it
    /// (healing, and no layers or other strategy named).
    fn heal_aware(
        &self,
        path: &Path,
        tok: impl FnOnce() -> Result<crate::tokenizer::HfTokenizer>,
        counts: &ParamCounts,
        started: Instant,
        progress: &dyn Progress,
    ) -> Result<Option<(Chosen, Option<crate::heal::Healing>)>> {
        let Some(method) = self.heal else {
            return Ok(None);
        };
        if !self.choice.heal_aware_finalists() {
            return Ok(None);
        }
        let h = choose_heal_aware(
            path,
            &tok()?,
            &self.choice,
            &self.heal_request(method, started),
            counts,
            self.selection_deadline(started),
            progress,
        )?;
        Ok(Some((h.chosen, h.healing)))
    }
}

/// Prunes `model` as `req` says. With `heal` and no layers named (or `strategy` `healed`), an
/// amount chooses the layers heal-aware with finalists ([`crate::choose::finalists`]). A time
/// budget (`heal_fit.time_budget`) is the whole call's: selection and the finalists take up to
/// 40% of it, training what is left, and progress messages show the time left.
pub fn prune(
    model: &ModelSource,
    req: &PruneRequest,
    progress: &dyn Progress,
) -> Result<PruneOutcome> {
    let started = Instant::now();
    if let Some(t) = req
        .heal_fit
        .time_budget
        .filter(|t| !(t.is_finite() && *t > 0.0 && *t < 1e9))
    {
        return Err(Error::Invalid(format!(
            "`time_budget` {t}: give a number of seconds greater than 0 (e.g. 900)"
        )));
    }
    let budgeted = req.heal_fit.time_budget.map(|t| Budgeted {
        inner: progress,
        end: started + Duration::from_secs_f64(t),
    });
    let progress: &dyn Progress = match &budgeted {
        Some(b) => b,
        None => progress,
    };
    req.run.install(progress, || {
    if req.out.as_os_str().is_empty() {
        return Err(Error::Invalid("prune needs an output path (out)".into()));
    }
    if req.tasks.tasks.is_some() && req.heal.is_none() {
        return Err(Error::Invalid(
            "`tasks` says what a heal did to each task; pass `heal`, or score the written model with `eval --tasks`".into(),
        ));
    }
    let resolved = model.resolve(Need::Snapshot, progress)?;
    let path = &resolved.path;
    check_output(
        &req.out,
        &[
            Some(model.path()),
            Some(path.as_path()),
            req.choice.calib.text.calib.as_deref(),
            req.choice.scores.as_deref(),
        ]
        .map(|p| p.unwrap_or(Path::new(""))),
    )?;
    if crate::model::is_gguf(path) {
        return prune_gguf(req, path, started, progress);
    }
    let ckpt = HfCheckpoint::open(path)?;
    if req.heal.is_some() && req.dtype.is_some() {
        return Err(Error::Invalid("a dtype cannot be combined with healing (healed tensors are written as F32, the rest as stored)".into()));
    }
    let counts = ckpt.param_counts();
    let tok = || crate::tokenizer::HfTokenizer::open(&ckpt.dir);
    let (chosen, prefit) = match req.heal_aware(path, tok, &counts, started, progress)? {
        Some(c) => c,
        None => (
            choose(
                path,
                &req.layer_choice(),
                ckpt.arch.num_hidden_layers,
                &counts,
                &req.run,
                progress,
            )?,
            None,
        ),
    };
    let out = req.output(model.path());
    if let Some(method) = req.heal {
        let heal_req = req.heal_request(method, started);
        let healed = heal_hf_with(&ckpt, &chosen, &heal_req, &out, prefit, progress)?;
        return Ok(PruneOutcome {
            pruned: Pruned::Healed(Box::new(healed)),
            chosen,
        });
    }
    req.warn_unused_calib(progress);
    if !ckpt.arch.is_supported() {
        progress.warn(&format!(
            "architecture `{}` is not one depthprune knows ({}); layers named `model.layers.N.` are pruned, but per-layer config fields were not checked",
            ckpt.arch.model_type,
            crate::arch::registry::model_types().join(", ")
        ));
    }
    let opts = PruneOptions {
        dtype: req.dtype.map(FloatType::dtype),
        max_shard_size: req.max_shard_size.unwrap_or(DEFAULT_MAX_SHARD),
        overwrite: if req.force {
            Overwrite::Force
        } else {
            Overwrite::Refuse
        },
        command: out.command,
        method: chosen.method.clone(),
        how_chosen: chosen.how_chosen.clone(),
        base_model: resolved.hub.as_ref().map(|h| h.repo.clone()),
        hub: resolved.hub.clone(),
        replace: Default::default(),
        healing: None,
    };
    let result = prune_hf(&ckpt, &chosen.removal, &req.out, &opts, progress)?;
    for w in &result.warnings {
        progress.warn(w);
    }
    Ok(PruneOutcome {
        pruned: Pruned::Hf {
            provenance: Box::new(result.provenance),
            out: result.out,
        },
        chosen,
    })
    })
}

/// The metadata a prune records beside its own when a strategy chose the layers.
pub fn how_chosen_metadata(chosen: &Chosen) -> Vec<(String, Value)> {
    match chosen.method.get("kind").and_then(|k| k.as_str()) {
        Some("strategy") => vec![(
            "depthprune.how_chosen".to_string(),
            Value::string(&chosen.how_chosen),
        )],
        _ => Vec::new(),
    }
}

/// `prune MODEL.gguf`: the layers chosen as for an HF folder, then pruned, or healed and pruned.
fn prune_gguf(
    req: &PruneRequest,
    path: &Path,
    started: Instant,
    progress: &dyn Progress,
) -> Result<PruneOutcome> {
    let healed_type = match (req.heal, req.dtype) {
        (Some(_), Some(FloatType::Bf16)) => {
            return Err(Error::Invalid(format!(
                "`{}`: dtype bf16 with healing on a GGUF: the healed tensors are written as f32 or f16",
                path.display()
            )))
        }
        (None, Some(d)) => {
            return Err(Error::Invalid(format!(
                "`{}`: dtype {} applies to HF folders (or to the healed tensors when healing); GGUF tensors are copied in their own ggml types (convert to HF first to change dtypes)",
                path.display(),
                d.name()
            )))
        }
        (_, Some(FloatType::F16)) => Some(GgmlType::F16),
        (_, Some(FloatType::F32)) => Some(GgmlType::F32),
        (_, None) => None,
    };
    let model = GgufModel::open(path)?;
    // The blocks are checked against the tensors before anything is sized by them.
    let n = model.block_count()?;
    let before = ParamCounts::from_tensors(model.tensor_elements());
    let tok = || Ok(crate::tokenizer::gguf_tokenizer(&model)?.0);
    let (chosen, prefit) = match req.heal_aware(model.path(), tok, &before, started, progress)? {
        Some(c) => c,
        None => (
            choose(
                model.path(),
                &req.layer_choice(),
                n,
                &before,
                &req.run,
                progress,
            )?,
            None,
        ),
    };
    let out = req.output(path);
    if let Some(method) = req.heal {
        let healed = heal_gguf_with(
            &model,
            &chosen.removal,
            &req.heal_request(method, started),
            healed_type,
            how_chosen_metadata(&chosen),
            &out,
            prefit,
            progress,
        )?;
        return Ok(PruneOutcome {
            pruned: Pruned::Healed(Box::new(healed)),
            chosen,
        });
    }
    req.warn_unused_calib(progress);
    let opts = gguf::PruneOptions {
        overwrite: out.overwrite_mode(),
        split_max_bytes: req.max_shard_size,
    };
    let edits = Edits {
        metadata: how_chosen_metadata(&chosen),
        ..Edits::default()
    };
    // Expert tensors that contradict the metadata are refused before anything is written.
    crate::model::gguf_moe::check_gguf_moe(&model)?;
    let report = gguf::prune_with(&model, &chosen.removal, &req.out, &opts, &edits, progress)?;
    let after = before.after(&chosen.removal);
    let pruned = GgufPruned {
        model: model.path().to_path_buf(),
        method: chosen.method.clone(),
        report,
        params_before: before.total(),
        params_after: after.total(),
        param_reduction_pct: reduction_pct(before.total(), after.total()),
        layer_reduction_pct: chosen.removal.layer_reduction_pct(),
    };
    Ok(PruneOutcome {
        pruned: Pruned::Gguf(Box::new(pruned)),
        chosen,
    })
}
