//! A model as the user names it: an HF folder, a `config.json`, a `.gguf` file, or a hub ID
//! (`org/name[@revision]`, `org/name:file.gguf`), resolved through the HF cache to files on disk.

use crate::error::Result;
use crate::hub::{self, HubConfig, Need, Resolved};
use crate::progress::Progress;
use std::path::{Path, PathBuf};

/// A model named by path or hub ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource(pub PathBuf);

impl ModelSource {
    pub fn new(name: impl Into<PathBuf>) -> Self {
        ModelSource(name.into())
    }

    /// The name as given, for messages and provenance.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Files on disk for this model: a local path as it is; a hub ID from the HF cache
    /// (`HF_HOME`, `HF_ENDPOINT`, `HF_HUB_OFFLINE` as the hub's own tools read them), downloading
    /// what `need` requires, with the download's progress in bytes.
    pub fn resolve(&self, need: Need, progress: &dyn Progress) -> Result<Resolved> {
        let bytes = BytesOnly(progress);
        hub::resolve(self.0.as_os_str(), need, &HubConfig::from_env(), &bytes)
    }

    /// Whether the model is a GGUF file (by its name, before anything is read).
    pub fn is_gguf(&self) -> bool {
        crate::model::is_gguf(&self.0)
    }
}

impl<T: Into<PathBuf>> From<T> for ModelSource {
    fn from(p: T) -> Self {
        ModelSource(p.into())
    }
}

/// Downloads are measured in bytes whatever the caller's bar counts.
pub(crate) struct BytesOnly<'a>(pub(crate) &'a dyn Progress);

impl Progress for BytesOnly<'_> {
    fn start(&self, label: &str, total: u64) {
        self.0.start_bytes(label, total)
    }
    fn start_bytes(&self, label: &str, total: u64) {
        self.0.start_bytes(label, total)
    }
    fn advance(&self, n: u64) {
        self.0.advance(n)
    }
    fn message(&self, msg: &str) {
        self.0.message(msg)
    }
    fn finish(&self) {
        self.0.finish()
    }
    fn warn(&self, msg: &str) {
        self.0.warn(msg)
    }
}
