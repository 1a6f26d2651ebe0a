//! `depthprune prune MODEL --drop SPEC --out DIR`: write the pruned checkpoint.

use super::common::warn_duplicates;
use super::output::{print, print_json, Bar};
use anyhow::Result;
use depthprune::api::prune::{prune, PruneRequest, Pruned};
use depthprune::api::ModelSource;
use depthprune::fmt::thousands;
use depthprune::select::format_ranges;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune prune ./Qwen3-4B --drop 3..29 --out ./Qwen3-4B-10L\n  \
    depthprune prune ./Llama-3.1-8B --drop 24..28 --dtype bf16 --max-shard-size 2GB --out ./llama-28L\n  \
    depthprune prune model.gguf --drop last:8 --out pruned.gguf\n  \
    depthprune prune model.gguf --strategy bi --remove 8 --calib train.txt --out pruned.gguf\n  \
    depthprune prune ./SmolLM2-135M --drop 13..20,25 --heal --calib train.txt --out ./smol-22L-healed\n  \
    depthprune prune ./SmolLM2-135M --strategy healed --remove 8 --calib train.txt --heal kd --out ./smol-22L-kd\n  \
    depthprune prune Qwen/Qwen3-4B --drop 3..29 --out ./Qwen3-4B-10L   # downloads into the HF cache\n\n\
    The output is written to a temporary sibling (`.NAME.depthprune-tmp`) and renamed into place\n\
    when complete. It holds the weights, config.json, tokenizer files, a model card (README.md)\n\
    and pruning.json (provenance with SHA-256 of every file).")]
pub struct Args {
    /// An HF folder (config.json + safetensors), a GGUF file, or a hub ID (`org/name[@revision]`,
    /// `org/name:file.gguf`).
    pub model: PathBuf,
    #[command(flatten)]
    pub req: PruneRequest,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut req = args.req;
    super::common::require_layers(&req.choice);
    req.command = Some(super::common::command_line());
    if req.heal.is_some() && req.choice.calib.text.calib.is_none() {
        anyhow::bail!("healing needs calibration text\nhint: add --calib FILE");
    }
    let done = prune(&ModelSource::new(&args.model), &req, &Bar::items())?;
    warn_duplicates(&done.chosen.duplicates);
    if let Some(e) = &done.chosen.explain {
        eprint!("{e}");
    }
    let removal = &done.chosen.removal;
    let p = match &done.pruned {
        _ if args.json => return print_json(&done.pruned),
        Pruned::Gguf(g) => return super::gguf::pruned(g, removal),
        Pruned::Healed(h) => return super::heal::print_healed(h),
        Pruned::Hf { provenance, .. } => provenance,
    };
    let out = match &done.pruned {
        Pruned::Hf { out, .. } => out.display().to_string(),
        _ => String::new(),
    };
    let mut s = format!(
        "wrote {out}\nlayers: {} → {} (removed {}; {:.2}% layer reduction)\nparameters: {} → {} ({:.2}% parameter reduction)\n",
        p.layers.layers_before,
        p.layers.layers_after,
        format_ranges(&removal.removed_ranges()),
        p.params.layer_reduction_pct,
        thousands(p.params.before),
        thousands(p.params.after),
        p.params.reduction_pct,
    );
    for f in &p.output {
        s.push_str(&format!(
            "  {:<40} {:>16} bytes  sha256 {}\n",
            f.name,
            thousands(f.bytes),
            &f.sha256[..16]
        ));
    }
    print(&s)
}
