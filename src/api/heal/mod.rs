//! Healing a prune: the maps fitted on the dense model (and, for `kd`, distilled) and written
//! with the pruned checkpoint, for `prune --heal` and for `heal PRUNED --from DENSE`. What is
//! asked of a heal ([`HealRequest`], [`HealFit`], [`HealMethod`]) is in `heal/options.rs`.

mod checks;
mod options;
pub mod tasks;

pub use options::{HealFit, HealMethod, HealRequest};

use super::choose::Chosen;
use crate::base::guard::check_output;
use crate::checkpoint::atomic::Overwrite;
use crate::checkpoint::gguf::{GgmlType, GgufModel, Value};
use crate::checkpoint::hf::HfCheckpoint;
use crate::checkpoint::hf_prune::{prune_hf, PruneOptions, DEFAULT_MAX_SHARD};
use crate::checkpoint::provenance::Provenance;
use crate::checkpoint::verify::read_provenance;
use crate::error::{Error, Result};
use crate::heal::gguf::{write_healed_gguf, GgufHealOptions};
use crate::heal::{self, Healing};
use crate::model::with_offload;
use crate::progress::Progress;
use crate::select::{format_ranges, Removal};
use crate::tokenizer::{gguf_tokenizer, HfTokenizer};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where a healed checkpoint goes.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub out: PathBuf,
    pub force: bool,
    /// Largest shard (HF) or split part (GGUF) in bytes.
    pub max_shard_size: Option<u64>,
    /// The command line recorded in provenance.
    pub command: Vec<String>,
    /// With `kd`: continue the distillation saved beside `out` by a run that was cut off.
    pub resume: bool,
}

impl Output {
    /// Where `kd` saves its best state while it trains: `.NAME.depthprune-kd.safetensors`
    /// beside the output (issue 33), removed once the output is written.
    pub(crate) fn kd_checkpoint(&self) -> Result<crate::heal::KdCheckpoint> {
        Ok(crate::heal::KdCheckpoint {
            path: crate::checkpoint::lock::hidden_sibling(&self.out, ".depthprune-kd.safetensors")?,
            resume: self.resume,
        })
    }

    pub(crate) fn overwrite_mode(&self) -> Overwrite {
        if self.force {
            Overwrite::Force
        } else {
            Overwrite::Refuse
        }
    }
}

/// A healed checkpoint written: its provenance (HF) or report (GGUF), and the healing.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Healed {
    Hf {
        #[serde(flatten)]
        provenance: Box<Provenance>,
        #[serde(skip)]
        healing: Box<Healing>,
        #[serde(skip)]
        out: PathBuf,
        /// With `tasks`: each task before and after the heal (in the provenance's `healing`).
        #[serde(skip)]
        tasks: Vec<tasks::TaskEffect>,
    },
    Gguf {
        report: Box<crate::checkpoint::gguf::PruneReport>,
        healing: serde_json::Value,
        #[serde(skip)]
        lines: Box<Healing>,
        #[serde(skip)]
        tasks: Vec<tasks::TaskEffect>,
    },
}

impl Healed {
    /// The per-block lines printed after healing, then what the heal did to each task.
    pub fn block_lines(&self) -> String {
        let (h, effects) = match self {
            Healed::Hf { healing, tasks, .. } => (healing, tasks),
            Healed::Gguf { lines, tasks, .. } => (lines, tasks),
        };
        let mut s: String = h.sites().map(|b| b.describe() + "\n").collect();
        if let Some(d) = &h.distillation {
            s.push_str(&d.describe());
            s.push('\n');
        }
        for e in effects {
            s.push_str(&tasks::line(e));
            s.push('\n');
        }
        s
    }
}

/// `heal PRUNED --from DENSE`: the removal read from PRUNED's provenance (or GGUF metadata),
/// fitted on DENSE and written to `out`. `dtype` is the type of the healed GGUF tensors.
pub fn heal(
    pruned: &Path,
    dense: &super::ModelSource,
    req: &HealRequest,
    dtype: Option<GgmlType>,
    out: &Output,
    progress: &dyn Progress,
) -> Result<Healed> {
    req.run.install(progress, || {
    let given = dense.path();
    let dense = dense.resolve(crate::hub::Need::Snapshot, progress)?.path;
    let calib = req.text.calib.clone().unwrap_or_default();
    check_output(&out.out, &[pruned, given, dense.as_path(), calib.as_path()])?;
    let is_gguf = crate::model::is_gguf;
    if is_gguf(pruned) || is_gguf(&dense) {
        if !(is_gguf(pruned) && is_gguf(&dense)) {
            return Err(Error::Invalid(format!(
                "`{}` and `{}`: heal a GGUF prune from the GGUF it was pruned from, or an HF prune from its HF folder",
                pruned.display(),
                dense.display()
            )));
        }
        let (pruned_model, before, removed) = gguf_removal(pruned)?;
        let model = GgufModel::open(&dense)?;
        let n = model.block_count()?;
        if before != n {
            return Err(wrong_dense(pruned, before, &dense, n));
        }
        let removal = Removal::from_layers(n, removed)?;
        checks::check_origin(
            &checks::Tensors::of_gguf(&pruned_model)?,
            &checks::Tensors::of_gguf(&model)?,
            &removal.kept(),
            crate::arch::naming::gguf_layer,
        )?;
        return heal_gguf(&model, &removal, req, dtype, Vec::new(), out, progress);
    }
    if dtype.is_some() {
        return Err(Error::Invalid(
            "a healed tensor type applies to GGUF outputs; healed HF tensors are written as F32"
                .into(),
        ));
    }
    let prov = read_provenance(pruned)?;
    let ckpt = HfCheckpoint::open(&dense)?;
    let n = ckpt.arch.num_hidden_layers;
    if prov.layers.layers_before != n {
        return Err(wrong_dense(pruned, prov.layers.layers_before, &dense, n));
    }
    let removal = Removal::from_layers(n, prov.layers.removed.iter().copied())?;
    let pruned_ckpt = HfCheckpoint::open(pruned)?;
    checks::check_origin(
        &checks::Tensors::of_hf(&pruned_ckpt),
        &checks::Tensors::of_hf(&ckpt),
        &removal.kept(),
        crate::arch::naming::hf_layer,
    )?;
    let chosen = Chosen {
        how_chosen: format!(
            "removed as in `{}` ({})",
            pruned.display(),
            format_ranges(&removal.removed_ranges())
        ),
        removal,
        method: prov.method.clone(),
        explain: None,
        duplicates: Vec::new(),
    };
    heal_hf(&ckpt, &chosen, req, out, progress)
    })
}

fn wrong_dense(pruned: &Path, before: usize, dense: &Path, n: usize) -> Error {
    Error::Invalid(format!(
        "`{}` was pruned from a {before}-layer model, but `{}` has {n} layers; the dense model must be the one it was pruned from",
        pruned.display(),
        dense.display()
    ))
}

/// The layer count before and the removed layers a GGUF prune records.
fn gguf_removal(pruned: &Path) -> Result<(GgufModel, usize, Vec<usize>)> {
    let m = GgufModel::open(pruned)?;
    let md = m.metadata();
    let not_ours = || {
        Error::Invalid(format!(
            "`{}` has no `depthprune.removed_layers` / `depthprune.layers_before` metadata; it must be a file written by `depthprune prune`",
            pruned.display()
        ))
    };
    let before = md
        .get("depthprune.layers_before")
        .and_then(Value::as_u64)
        .ok_or_else(not_ours)? as usize;
    let a = md
        .get("depthprune.removed_layers")
        .and_then(Value::as_array)
        .ok_or_else(not_ours)?;
    let removed = (0..a.len())
        .map(|i| a.get(i).and_then(|v| v.as_u64()).map(|x| x as usize))
        .collect::<Option<_>>()
        .ok_or_else(not_ours)?;
    Ok((m, before, removed))
}

/// Tokenizes the calibration text and fits the maps for `removal` on the dense model at `dense`;
/// `prefit` is a closed-form heal of the same removal on the same tokens and options, made
/// while choosing the layers, which is then used instead of fitting again.
fn fit(
    tok: &HfTokenizer,
    dense: &Path,
    removal: &Removal,
    req: &HealRequest,
    prefit: Option<Healing>,
    kd_checkpoint: Option<&crate::heal::KdCheckpoint>,
    progress: &dyn Progress,
) -> Result<Healing> {
    let opts = req.fit.options(req.method, req.text.ctx)?;
    let tokens = req.text.heal_tokens(tok, req.fit.heal_samples, progress)?;
    let healing = with_offload(req.offload, || -> Result<Healing> {
        let started = std::time::Instant::now();
        let healing = match prefit.filter(|h| h.removed() == removal.removed()) {
            Some(h) => h,
            None => heal::heal(dense, &removal.removed(), &tokens, &opts, progress)?,
        };
        // A time budget is the whole heal's: the closed-form fit's time counts against it.
        let mut kd = req.fit.kd();
        kd.time_limit = kd
            .time_limit
            .map(|t| (t - started.elapsed().as_secs_f64()).max(0.1 * t));
        Ok(if req.method == HealMethod::Kd {
            heal::distil_with(dense, &tokens, &healing, &kd, kd_checkpoint, progress)?
        } else {
            healing
        })
    })?;
    checks::ensure_finite_healing(&healing, dense)?;
    Ok(healing)
}

/// Fits the maps for `removal` on the GGUF `model` and writes the healed, pruned GGUF, the
/// healed tensors as `dtype` (F32 unless F16), with `extra` metadata after the healing's own.
pub fn heal_gguf(
    model: &GgufModel,
    removal: &Removal,
    req: &HealRequest,
    dtype: Option<GgmlType>,
    extra: Vec<(String, Value)>,
    out: &Output,
    progress: &dyn Progress,
) -> Result<Healed> {
    heal_gguf_with(model, removal, req, dtype, extra, out, None, progress)
}

/// [`heal_gguf`] with the closed-form heal already made while choosing the layers (`prefit`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn heal_gguf_with(
    model: &GgufModel,
    removal: &Removal,
    req: &HealRequest,
    dtype: Option<GgmlType>,
    extra: Vec<(String, Value)>,
    out: &Output,
    prefit: Option<Healing>,
    progress: &dyn Progress,
) -> Result<Healed> {
    // By default each healed tensor keeps its source type where it can be requantized (all but
    // Q8_K and the i-quants, which are written as F32). An explicit type applies to every
    // healed tensor.
    let keep_types = dtype.is_none();
    let ty = match dtype {
        None | Some(GgmlType::F32) => GgmlType::F32,
        Some(GgmlType::F16) => GgmlType::F16,
        Some(other) => {
            return Err(Error::Invalid(format!(
                "healed GGUF tensors are written as f32 or f16, not {}",
                other.name()
            )))
        }
    };
    let task_data = req.tasks.load(progress)?;
    let (tok, warnings) = gguf_tokenizer(model)?;
    for w in warnings {
        progress.warn(&w);
    }
    let kd = out.kd_checkpoint()?;
    let healing = fit(
        &tok,
        model.path(),
        removal,
        req,
        prefit,
        Some(&kd),
        progress,
    )?;
    let effects = match &task_data {
        Some(d) => {
            let removed = removal.removed();
            Some(
                req.tasks
                    .effect(d, &tok, model.path(), &removed, &healing, progress)?,
            )
        }
        None => None,
    };
    let mut metadata = Vec::new();
    if let Some(c) = &req.text.calib {
        metadata.push((
            "depthprune.healing.calib".to_string(),
            Value::string(&c.display().to_string()),
        ));
        metadata.push((
            "depthprune.healing.calib_offset".to_string(),
            Value::U64(req.text.calib_offset as u64),
        ));
    }
    if let Some(e) = &effects {
        metadata.push((
            "depthprune.healing.tasks".to_string(),
            Value::string(&tasks::describe(e)),
        ));
    }
    metadata.extend(extra);
    let opts = GgufHealOptions {
        overwrite: out.overwrite_mode(),
        split_max_bytes: out.max_shard_size,
        ty,
        keep_types,
        metadata,
    };
    let report = write_healed_gguf(model, removal, &healing, &out.out, &opts, progress)?;
    kd.remove();
    let arch = model.architecture()?.to_string();
    let mut record = healing.provenance(&|n: &str| {
        // The healed tensor's name in the written GGUF (the family's table names the norms).
        let g = crate::arch::gguf_names::hf_to_gguf_for(&arch, n).unwrap_or_else(|| n.to_string());
        removal.renamed_gguf(&g)
    });
    if let (Some(o), Some(e)) = (record.as_object_mut(), &effects) {
        o.insert("tasks".into(), json_of(e)?);
    }
    Ok(Healed::Gguf {
        report: Box::new(report),
        healing: record,
        lines: Box::new(healing),
        tasks: effects.unwrap_or_default(),
    })
}

/// The tasks before and after the heal, as the heal's record holds them.
fn json_of(effects: &[tasks::TaskEffect]) -> Result<serde_json::Value> {
    serde_json::to_value(effects).map_err(|e| Error::Invalid(e.to_string()))
}

/// Fits the maps for the removal in `chosen` on `ckpt` and writes the healed, pruned checkpoint.
pub fn heal_hf(
    ckpt: &HfCheckpoint,
    chosen: &Chosen,
    req: &HealRequest,
    out: &Output,
    progress: &dyn Progress,
) -> Result<Healed> {
    heal_hf_with(ckpt, chosen, req, out, None, progress)
}

/// [`heal_hf`] with the closed-form heal already made while choosing the layers (`prefit`).
pub(crate) fn heal_hf_with(
    ckpt: &HfCheckpoint,
    chosen: &Chosen,
    req: &HealRequest,
    out: &Output,
    prefit: Option<Healing>,
    progress: &dyn Progress,
) -> Result<Healed> {
    let removal = &chosen.removal;
    let Some(calib) = &req.text.calib else {
        return Err(Error::Invalid(
            "healing needs calibration text (`calib`)".into(),
        ));
    };
    // The tasks' data first: bad data fails before the fit.
    let task_data = req.tasks.load(progress)?;
    let tok = HfTokenizer::open(&ckpt.dir)?;
    let kd = out.kd_checkpoint()?;
    let healing = fit(&tok, &ckpt.dir, removal, req, prefit, Some(&kd), progress)?;
    let effects = match &task_data {
        Some(d) => {
            let removed = removal.removed();
            Some(
                req.tasks
                    .effect(d, &tok, &ckpt.dir, &removed, &healing, progress)?,
            )
        }
        None => None,
    };
    let renamed = |name: &str| removal.renamed_hf(name);
    let mut record = healing.provenance(&renamed);
    if let Some(o) = record.as_object_mut() {
        o.insert("calib".into(), calib.display().to_string().into());
        o.insert("calib_offset".into(), req.text.calib_offset.into());
        if let Some(e) = &effects {
            o.insert("tasks".into(), json_of(e)?);
        }
    }
    let mut note = format!(
        "{} ({}): {} (with any low-rank updates merged into the kept layers' weights), so these \
         tensors differ from the original and are stored as F32: {}.",
        healing.headline(),
        healing.summary(),
        healing.fold_phrase("down_proj", "post_feedforward_layernorm"),
        healing
            .tensors
            .keys()
            .map(|k| format!("`{}`", renamed(k)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(e) = &effects {
        note.push(' ');
        note.push_str(&tasks::describe(e));
    }
    let opts = PruneOptions {
        dtype: None,
        max_shard_size: out.max_shard_size.unwrap_or(DEFAULT_MAX_SHARD),
        overwrite: out.overwrite_mode(),
        command: out.command.clone(),
        method: chosen.method.clone(),
        how_chosen: chosen.how_chosen.clone(),
        base_model: None,
        hub: None,
        replace: healing.tensors.clone(),
        healing: Some((record, note)),
    };
    let result = prune_hf(ckpt, removal, &out.out, &opts, progress)?;
    kd.remove();
    for w in &result.warnings {
        progress.warn(w);
    }
    Ok(Healed::Hf {
        provenance: Box::new(result.provenance),
        healing: Box::new(healing),
        out: result.out,
        tasks: effects.unwrap_or_default(),
    })
}
