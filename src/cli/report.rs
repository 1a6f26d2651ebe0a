//! `depthprune report DIR`: turns a sweep folder into `report.md`: the setting, the table, the
//! plots, written checkpoints measured the same way, and greedy generations side by side. With
//! `--pruned`, a pruned HF folder's model card gets the same evaluation section.

use super::output::{print, Bar};
use anyhow::Result;
use depthprune::api::report::{report, ReportRequest};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune report study/\n  \
    depthprune report study/ --k 8 --pruned smol-22L-healed/ --text-note study/TEXT.md\n\n\
    DIR holds sweep.json from `depthprune sweep`. The generations are greedy (deterministic), from\n\
    the dense model, the sweep's best choice at --k layers removed (skipped in memory), and each\n\
    --pruned checkpoint.")]
pub struct Args {
    /// A folder written by `depthprune sweep` (holds sweep.json).
    pub dir: PathBuf,
    /// Layers removed for the summary and the generations (default: the largest count ≤ 8).
    #[arg(long, value_name = "K")]
    pub k: Option<usize>,
    /// Pruned checkpoints (HF folder or .gguf) to measure and generate from; an HF folder's
    /// README.md gets the evaluation section.
    #[arg(long, value_name = "PATH")]
    pub pruned: Vec<PathBuf>,
    /// Prompts, one per line (default: four built-in prompts).
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// New tokens per generation.
    #[arg(long, default_value_t = 40, value_name = "N")]
    pub max_new_tokens: usize,
    /// Markdown to include about where the text came from and its limits.
    #[arg(long, value_name = "FILE")]
    pub text_note: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let req = ReportRequest {
        k: args.k,
        pruned: args.pruned,
        prompts: args.prompts,
        max_new_tokens: args.max_new_tokens,
        text_note: args.text_note,
    };
    let out = report(&args.dir, &req, &Bar::items())?;
    print(&format!("{}\n", out.display()))
}
