//! `pruning.json`: what was done, to what, by which version, with hashes of every file read and
//! written, so a pruned checkpoint can be verified and reproduced.

use crate::error::{IoContext, Result};
use crate::select::removal::RemovalSummary;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

pub const PROVENANCE_FILE: &str = "pruning.json";

/// A file and its hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileHash {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Parameters before and after.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ParamSummary {
    pub before: u64,
    pub after: u64,
    pub reduction_pct: f64,
    pub layer_reduction_pct: f64,
}

/// Where the model came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Source {
    pub path: String,
    pub format: String,
    /// The hub repo and commit, when the model was named by a hub ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubSource>,
    pub files: Vec<FileHash>,
}

/// A model's origin on the Hugging Face hub.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HubSource {
    /// `org/name`.
    pub repo: String,
    /// The revision asked for: `main`, a branch, a tag or a commit.
    pub revision: String,
    /// The commit it resolved to.
    pub commit: String,
    /// The one file used, for GGUF repos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// The whole provenance record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Provenance {
    pub tool: String,
    pub version: String,
    pub command: Vec<String>,
    pub source: Source,
    pub layers: RemovalSummary,
    pub params: ParamSummary,
    /// How the layers were chosen: `{"kind": "manual", "spec": …}` or a strategy with its scores.
    pub method: Value,
    /// A dtype conversion applied to floating-point tensors, if any.
    pub dtype: Option<String>,
    pub config_changes: Vec<String>,
    /// Healing applied after removal, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healing: Option<Value>,
    pub output: Vec<FileHash>,
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes a whole file, streaming.
pub fn hash_file(path: &Path) -> Result<FileHash> {
    let mut f = std::fs::File::open(path).at(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileHash {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes,
        sha256: hex(&h.finalize()),
    })
}
