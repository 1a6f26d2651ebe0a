//! `depthprune inspect` (being written).

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model: an HF folder, a config.json, or a GGUF file.
    pub model: std::path::PathBuf,
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`inspect` is being written")
}
