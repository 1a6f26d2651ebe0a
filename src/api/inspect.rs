//! What a checkpoint is: architecture, parameters by component, dtypes and bytes, for an HF
//! folder, a `config.json`, a GGUF file or a hub ID.

use super::ModelSource;
use crate::arch::{ArchConfig, MoeParams, ParamCounts};
use crate::checkpoint::gguf::{GgufInfo, GgufModel};
use crate::checkpoint::hf::{self, HfCheckpoint};
use crate::checkpoint::provenance::HubSource;
use crate::error::Result;
use crate::hub::{Need, Resolved};
use crate::progress::Progress;
use serde::Serialize;
use std::collections::BTreeMap;

/// An HF checkpoint described, as `inspect --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct HfInspection {
    pub model: String,
    pub hub: Option<HubSource>,
    pub format: &'static str,
    /// `tensors`, `tensor headers on the hub` or `config.json (no weights found)`.
    pub counted_from: &'static str,
    pub architecture: ArchConfig,
    /// Tensors per dtype, when the weights (or their headers) were read.
    pub dtypes: Option<BTreeMap<String, usize>>,
    pub params: ParamCounts,
    pub total_params: u64,
    /// With experts: the parameters one token uses (issue 17).
    pub active_params: Option<u64>,
    /// With experts: routed, active, router and shared-expert parameters.
    pub moe_params: Option<MoeParams>,
    pub bytes_on_disk: Option<u64>,
    /// Whether the counts come from headers read over HTTP.
    #[serde(skip)]
    pub remote: bool,
}

/// A GGUF file described, as `inspect --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct GgufInspection {
    #[serde(flatten)]
    pub info: GgufInfo,
    /// With experts: the parameters one token uses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_params: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moe_params: Option<MoeParams>,
}

/// An HF checkpoint or a GGUF file described.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Inspection {
    Hf(Box<HfInspection>),
    Gguf(Box<GgufInspection>),
}

/// Describes `model`. For a hub ID, `exact` also reads each shard's header (a few KB by HTTP
/// range requests) to count parameters and dtypes exactly; local weights are always counted.
pub fn inspect(model: &ModelSource, exact: bool, progress: &dyn Progress) -> Result<Inspection> {
    let need = if exact { Need::Headers } else { Need::Config };
    let mut resolved = model.resolve(need, progress)?;
    if crate::model::is_gguf(&resolved.path) {
        let m = open_gguf(&mut resolved)?;
        let moe = crate::model::gguf_moe::gguf_moe_params(&m);
        return Ok(Inspection::Gguf(Box::new(GgufInspection {
            info: GgufInfo::of(&m),
            active_params: moe.as_ref().map(|p| p.active),
            moe_params: moe,
        })));
    }
    let path = resolved.path.clone();
    let remote = resolved.remote.is_some();
    let weights = remote || (path.is_dir() && hf::has_weights(&path));
    let (arch, params, moe, dtypes, bytes) = if weights {
        let ckpt = match resolved.remote.take() {
            Some(c) => c,
            None => HfCheckpoint::open(&path)?,
        };
        let dtypes = ckpt
            .dtypes()
            .into_iter()
            .map(|(d, n)| (d.name().to_string(), n))
            .collect();
        let counts = ckpt.param_counts();
        let bytes = ckpt.weight_bytes();
        let moe = MoeParams::from_tensors(
            &ckpt.arch,
            &counts,
            ckpt.tensors().map(|(_, t)| (t.name.as_str(), t.numel())),
        );
        (ckpt.arch, counts, moe, Some(dtypes), Some(bytes))
    } else {
        let (arch, _, _) = hf::read_config(&path)?;
        let counts = ParamCounts::from_config(&arch);
        let moe = MoeParams::from_config(&arch);
        (arch, counts, moe, None, None)
    };
    Ok(Inspection::Hf(Box::new(HfInspection {
        model: resolved.name(),
        hub: resolved.hub.clone(),
        format: "hf-safetensors",
        counted_from: counted_from(remote, weights, " (no weights found)"),
        architecture: arch,
        dtypes,
        total_params: params.total(),
        active_params: moe.as_ref().map(|m| m.active),
        moe_params: moe,
        params,
        bytes_on_disk: bytes,
        remote,
    })))
}

/// Where parameter counts come from, in words.
pub(crate) fn counted_from(remote: bool, weights: bool, none: &str) -> &'static str {
    match (remote, weights, none.is_empty()) {
        (true, _, _) => "tensor headers on the hub",
        (false, true, _) => "tensors",
        (false, false, true) => "config.json",
        (false, false, false) => "config.json (no weights found)",
    }
}

/// The GGUF model a resolved name points to: the header read over HTTP for a hub file that is
/// not in the cache, else the file (and its split parts) on disk.
pub fn open_gguf(resolved: &mut Resolved) -> Result<GgufModel> {
    match resolved.remote_gguf.take() {
        Some(m) => Ok(m),
        None => GgufModel::open(&resolved.path),
    }
}
