//! `depthprune verify OUT [--source SRC]`: re-hash and re-check a pruned checkpoint.

use super::output::{print, print_json};
use anyhow::{bail, Result};
use depthprune::checkpoint::verify::{verify_gguf, verify_hf};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune verify ./Qwen3-4B-10L\n  \
    depthprune verify ./Qwen3-4B-10L --source ./Qwen3-4B\n  \
    depthprune verify pruned.gguf --source model.gguf\n\n\
    Exit 0 only when every check holds.")]
pub struct Args {
    /// A folder written by `depthprune prune` (it holds pruning.json), or a pruned `.gguf` file
    /// (its `depthprune.*` metadata records the removal).
    pub out: PathBuf,
    /// The source it was pruned from: each kept tensor must be byte-identical to its source.
    #[arg(long)]
    pub source: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let report = if depthprune::model::is_gguf(&args.out) {
        verify_gguf(&args.out, args.source.as_deref())?
    } else {
        verify_hf(&args.out, args.source.as_deref())?
    };
    if args.json {
        print_json(&report)?;
    } else {
        let mut s = String::new();
        for c in &report.checks {
            s.push_str(&format!(
                "{} {}: {}\n",
                if c.ok { "ok  " } else { "FAIL" },
                c.what,
                c.detail
            ));
        }
        print(&s)?;
    }
    if !report.ok() {
        let failed = report.checks.iter().filter(|c| !c.ok).count();
        bail!(
            "`{}`: {failed} of {} checks failed",
            args.out.display(),
            report.checks.len()
        );
    }
    Ok(())
}
