//! What a prune would produce, writing nothing: the removal (as a list, as ranges and as the
//! old → new mapping), parameters before and after, and the config or metadata it would change.

use super::choose::{choose, Chosen, LayerChoice};
use super::inspect::{counted_from, open_gguf};
use super::ModelSource;
use crate::arch::params::reduction_pct;
use crate::arch::ParamCounts;
use crate::checkpoint::config_surgery::prune_config;
use crate::checkpoint::gguf::prune::plan as gguf_plan;
use crate::checkpoint::hf::{self, HfCheckpoint};
use crate::checkpoint::provenance::HubSource;
use crate::error::Result;
use crate::hub::Need;
use crate::progress::Progress;
use crate::select::{Removal, RemovalSummary};
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;

/// Parameters before and after.
#[derive(Debug, Clone, Serialize)]
pub struct ParamChange {
    pub before: u64,
    pub after: u64,
    pub reduction_pct: f64,
    pub layer_reduction_pct: f64,
}

/// The plan for an HF checkpoint or config, as `plan --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct HfPlan {
    pub model: String,
    pub hub: Option<HubSource>,
    pub counted_from: &'static str,
    pub layers: RemovalSummary,
    pub params: ParamChange,
    pub config_changes: Vec<String>,
    pub command: String,
    pub method: Value,
}

/// The plan for a GGUF file, as `plan --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct GgufPlan {
    pub model: PathBuf,
    pub architecture: String,
    pub removal: RemovalSummary,
    pub params_before: u64,
    pub params_after: u64,
    pub param_reduction_pct: f64,
    pub layer_reduction_pct: f64,
    pub tensors_before: usize,
    pub tensors_after: usize,
    pub tensor_bytes_before: u64,
    pub tensor_bytes_after: u64,
    pub block_count_key: String,
    pub per_layer_keys: Vec<String>,
    pub adjusted_keys: Vec<String>,
    pub method: Value,
}

/// Either plan, with what the text form needs besides.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum PlanReport {
    Hf(Box<HfPlan>),
    Gguf(Box<GgufPlan>),
}

/// A plan with the removal it describes and how it was chosen.
#[derive(Debug, Clone)]
pub struct Planned {
    pub report: PlanReport,
    pub removal: Removal,
    pub chosen: Chosen,
    /// Warnings of the config surgery.
    pub warnings: Vec<String>,
}

/// Plans the prune `choice` describes on `model`; for a hub ID, `exact` counts parameters from
/// the shard headers instead of the config.
pub fn plan(
    model: &ModelSource,
    choice: &LayerChoice,
    exact: bool,
    progress: &dyn Progress,
) -> Result<Planned> {
    // A strategy that runs its metric opens the checkpoint (weights and tokenizer), wherever it
    // is; only saved scores spare that.
    let need = if choice.runs_metric() {
        Need::Snapshot
    } else if exact {
        Need::Headers
    } else {
        Need::Config
    };
    let mut resolved = model.resolve(need, progress)?;
    let path = resolved.path.clone();
    if crate::model::is_gguf(&path) {
        let m = open_gguf(&mut resolved)?;
        let n = m.block_count()?;
        let before = ParamCounts::from_tensors(m.tensor_elements());
        let chosen = choose(m.path(), choice, n, &before, &Default::default(), progress)?;
        let removal = chosen.removal.clone();
        // Expert tensors that contradict the metadata are refused before anything is planned.
        crate::model::gguf_moe::check_gguf_moe(&m)?;
        let p = gguf_plan(&m, &removal)?;
        let after = before.after(&removal);
        let report = GgufPlan {
            model: m.path().to_path_buf(),
            architecture: m.architecture()?.to_string(),
            removal: removal.summary(),
            params_before: before.total(),
            params_after: after.total(),
            param_reduction_pct: reduction_pct(before.total(), after.total()),
            layer_reduction_pct: removal.layer_reduction_pct(),
            tensors_before: m.tensors().len(),
            tensors_after: p.tensors.len(),
            tensor_bytes_before: m.tensor_bytes(),
            tensor_bytes_after: p.tensors.iter().map(|(_, t)| t.n_bytes()).sum(),
            block_count_key: p.block_count_key,
            per_layer_keys: p.per_layer_keys,
            adjusted_keys: p.adjusted_keys,
            method: chosen.method.clone(),
        };
        return Ok(Planned {
            report: PlanReport::Gguf(Box::new(report)),
            removal,
            chosen,
            warnings: Vec::new(),
        });
    }
    let remote = resolved.remote.is_some();
    let weights = remote || (path.is_dir() && hf::has_weights(&path));
    let (arch, raw, before) = if weights {
        let ckpt = match resolved.remote.take() {
            Some(c) => c,
            None => HfCheckpoint::open(&path)?,
        };
        let counts = ckpt.param_counts();
        (ckpt.arch, ckpt.config, counts)
    } else {
        let (arch, raw, _) = hf::read_config(&path)?;
        let counts = ParamCounts::from_config(&arch);
        (arch, raw, counts)
    };
    let chosen = choose(
        &path,
        choice,
        arch.num_hidden_layers,
        &before,
        &Default::default(),
        progress,
    )?;
    let removal = chosen.removal.clone();
    let after = before.after(&removal);
    let surgery = prune_config(&raw, &arch, &removal, None);
    let name = resolved.name();
    let report = HfPlan {
        command: format!(
            "depthprune prune {name} --drop {} --out OUT",
            removal.drop_spec()
        ),
        model: name,
        hub: resolved.hub.clone(),
        counted_from: counted_from(remote, weights, ""),
        layers: removal.summary(),
        params: ParamChange {
            before: before.total(),
            after: after.total(),
            reduction_pct: reduction_pct(before.total(), after.total()),
            layer_reduction_pct: removal.layer_reduction_pct(),
        },
        config_changes: surgery.changes,
        method: chosen.method.clone(),
    };
    Ok(Planned {
        report: PlanReport::Hf(Box::new(report)),
        removal,
        chosen,
        warnings: surgery.warnings,
    })
}
