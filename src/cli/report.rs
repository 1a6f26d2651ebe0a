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
    #[command(flatten)]
    pub req: ReportRequest,
}

pub fn run(args: Args) -> Result<()> {
    let out = report(&args.dir, &args.req, &Bar::items())?;
    print(&format!("{}\n", out.display()))
}
