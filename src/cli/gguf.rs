//! GGUF subcommands (being written on the `gguf` branch).

use super::common::LayerArgs;
use anyhow::{bail, Result};
use std::path::Path;

pub fn inspect(path: &Path, _json: bool) -> Result<()> {
    bail!("`{}`: GGUF support is not merged yet", path.display())
}

pub fn plan(path: &Path, _layers: &LayerArgs, _json: bool) -> Result<()> {
    bail!("`{}`: GGUF support is not merged yet", path.display())
}

pub fn prune(
    path: &Path,
    _layers: &LayerArgs,
    _out: &Path,
    _force: bool,
    _split: Option<u64>,
    _json: bool,
) -> Result<()> {
    bail!("`{}`: GGUF support is not merged yet", path.display())
}
