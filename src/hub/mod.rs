//! Models named the way Hugging Face users name them: `Qwen/Qwen3-4B`, `org/name@v1.0`,
//! `org/name:file.gguf`, resolved to files in the standard HF cache and downloaded when missing.
//!
//! - [`model_ref`]: parsing a MODEL argument (an existing local path always wins).
//! - [`config`]: `HF_HUB_CACHE`, `HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`.
//! - [`cache`]: the `models--ORG--NAME/{refs,blobs,snapshots}` layout.
//! - [`client`]: the hub's HTTP protocol (resolve URLs, ranges, resumable downloads).
//! - [`fetch`]: what each command needs, from the cache or the network.
//! - [`dataset`]: a dataset's files for one config and its splits (`eval --tasks mmlu`).
//!
//! Commands say what they [`Need`]: `plan` and `inspect` need only `config.json` (plus the
//! safetensors headers, read with range requests, for exact counts), or for a GGUF file its
//! header, read with range requests; `prune` needs the weights.
//! A snapshot that holds what is needed is used without any request, so a second run works
//! offline. With `HF_HUB_OFFLINE` set, nothing is ever requested and a missing file is an error
//! that says so.

pub mod cache;
pub mod client;
pub mod config;
pub mod dataset;
pub mod error;
pub mod fetch;
pub mod glob;
pub mod model_ref;

pub use config::HubConfig;
pub use error::HubError;
pub use model_ref::{HubRef, ModelRef};

use crate::checkpoint::gguf::GgufModel;
use crate::checkpoint::hf::HfCheckpoint;
use crate::checkpoint::provenance::HubSource;
use crate::error::Result;
use crate::progress::Progress;
use std::ffi::OsStr;
use std::path::PathBuf;

/// What a command needs of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `config.json` alone (counts from the config).
    Config,
    /// `config.json`, the index and every shard's header (exact counts), but no weights.
    Headers,
    /// Everything a checkpoint folder holds: config, weights, tokenizer and generation files.
    Snapshot,
}

/// A MODEL argument resolved to something on disk.
#[derive(Debug)]
pub struct Resolved {
    /// The folder, `config.json` or `.gguf` file to open.
    pub path: PathBuf,
    /// Where it came from, when it came from the hub.
    pub hub: Option<HubSource>,
    /// A checkpoint whose shard headers were read over HTTP ([`Need::Headers`] when the weights
    /// are not in the cache); its data cannot be read.
    pub remote: Option<HfCheckpoint>,
    /// A GGUF file (`org/name:file.gguf`) whose header was read over HTTP by range requests,
    /// when the command needs no more than that and the file is not in the cache; `path` is
    /// then where the file would be in the cache, and does not exist.
    pub remote_gguf: Option<GgufModel>,
}

impl Resolved {
    /// A local path, as given.
    pub fn local(path: PathBuf) -> Self {
        Resolved {
            path,
            hub: None,
            remote: None,
            remote_gguf: None,
        }
    }

    /// How to show the model to the user: `org/name@revision` (and `:file`) or the path.
    pub fn name(&self) -> String {
        match &self.hub {
            Some(h) => {
                let mut s = h.repo.clone();
                if h.revision != model_ref::DEFAULT_REVISION {
                    s.push('@');
                    s.push_str(&h.revision);
                }
                if let Some(f) = &h.file {
                    s.push(':');
                    s.push_str(f);
                }
                s
            }
            None => self.path.display().to_string(),
        }
    }
}

/// Resolves a MODEL argument: a local path is returned as is; a hub reference is served from
/// the cache, downloading what `need` requires when the cache lacks it and `cfg` allows it.
pub fn resolve(
    arg: &OsStr,
    need: Need,
    cfg: &HubConfig,
    progress: &dyn Progress,
) -> Result<Resolved> {
    match ModelRef::parse(arg)? {
        ModelRef::Local(path) => Ok(Resolved::local(path)),
        ModelRef::Hub(r) => fetch::fetch(&r, need, cfg, progress),
    }
}
