//! `depthprune heal PRUNED --from DENSE`, and what `heal` and `prune --heal` print. Both fit
//! the maps on the dense model and write the pruned checkpoint with the healed `down_proj`
//! tensors (F32) in place of the copied ones; for a GGUF model the healed `ffn_down` tensors are
//! F32 (or F16), every other tensor copied byte for byte.

use super::output::{print, print_json, Bar};
use anyhow::{bail, Result};
use depthprune::api::heal::{heal, HealRequest, Healed, Output};
use depthprune::api::ModelSource;
use depthprune::checkpoint::gguf::GgmlType;
use std::path::PathBuf;

fn parse_healed_type(s: &str) -> Result<GgmlType, String> {
    match s {
        "f32" => Ok(GgmlType::F32),
        "f16" => Ok(GgmlType::F16),
        _ => Err(format!("`{s}`: expected f32 or f16")),
    }
}

/// `depthprune heal PRUNED --from DENSE --calib FILE --out DIR`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune heal ./smol-22L --from ./SmolLM2-135M --calib wiki.train.txt --out ./smol-22L-healed\n  \
    depthprune heal smol-22L.gguf --from SmolLM2-135M.Q4_1.gguf --calib wiki.train.txt --out smol-22L-healed.gguf\n\n\
    The removed layers are read from PRUNED's pruning.json (or, for GGUF, its `depthprune.removed_layers`);\n\
    DENSE must be the model it was pruned from.")]
pub struct Args {
    /// A folder or `.gguf` file written by `depthprune prune` (which records the removed layers).
    pub pruned: PathBuf,
    /// The dense model it was pruned from (an HF folder, or the `.gguf` file for a GGUF prune).
    #[arg(long)]
    pub from: PathBuf,
    #[command(flatten)]
    pub heal: HealRequest,
    /// Output folder (HF) or file (GGUF).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Type of every healed tensor in a GGUF output (default: each keeps its source type where
    /// depthprune can requantize it, every ggml type but Q8_K and the i-quants, else F32; HF
    /// outputs store them as F32).
    #[arg(long, value_parser = parse_healed_type)]
    pub dtype: Option<GgmlType>,
    /// Replace an existing non-empty output.
    #[arg(long)]
    pub force: bool,
    /// With --method kd: continue the distillation a run cut off saved beside --out.
    #[arg(long)]
    pub resume: bool,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.heal.text.calib.is_none() {
        bail!("healing needs calibration text\nhint: add --calib FILE");
    }
    let out = Output {
        out: args.out.clone(),
        force: args.force,
        max_shard_size: None,
        command: super::common::command_line(),
        resume: args.resume,
    };
    let healed = heal(
        &args.pruned,
        &ModelSource::new(&args.from),
        &args.heal,
        args.dtype,
        &out,
        &Bar::items(),
    )?;
    if args.json {
        return print_json(&healed);
    }
    print_healed(&healed)
}

/// What a heal wrote, and one line per healed block.
pub fn print_healed(h: &Healed) -> Result<()> {
    let mut s = String::new();
    match h {
        Healed::Hf { out, .. } => s.push_str(&format!("wrote {}\n", out.display())),
        Healed::Gguf { report, .. } => {
            for o in &report.outputs {
                s.push_str(&format!("wrote {}\n", o.display()));
            }
        }
    }
    s.push_str(&h.block_lines());
    print(&s)
}
