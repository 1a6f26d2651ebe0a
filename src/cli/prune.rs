//! `depthprune prune MODEL --drop SPEC --out DIR`: write the pruned checkpoint.

use super::common::{parse_size, warn_duplicates, LayerArgs};
use super::output::{print, print_json, Bar};
use anyhow::Result;
use depthprune::api::heal::HealMethod;
use depthprune::api::prune::{prune, FloatType, PruneRequest, Pruned};
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
    pub layers: LayerArgs,
    #[command(flatten)]
    pub strategy: super::strategy::StrategyArgs,
    /// Output folder (HF) or file (GGUF).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Convert floating-point tensors to this dtype (HF only); otherwise bytes are copied unchanged.
    /// With --heal on a GGUF: the type of the healed tensors (f32 or f16).
    #[arg(long, value_parser = parse_float_type)]
    pub dtype: Option<FloatType>,
    /// Largest shard to write: bytes, or with units (5GB, 500MB, 2GiB).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_shard_size: Option<u64>,
    /// Replace an existing non-empty output.
    #[arg(long)]
    pub force: bool,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    pub json: bool,
    /// Heal the pruned model: fold a linear map per removed block into the `down_proj` before it
    /// (needs --calib). `auto` (the default) lets held-out validation choose among `lstsq`,
    /// `weighted` and `scale` per block, and leaves a block unhealed when no map helps; `cosine`
    /// refines the least-squares map by cosine distance; `kd` then trains the maps on the dense
    /// model's next-token distribution (--steps, --lr). For a GGUF the healed `ffn_down` tensors
    /// are written as F32 (or F16 with --dtype f16), the rest copied.
    #[arg(long, value_parser = super::heal::parse_method, num_args = 0..=1, default_missing_value = "auto", value_name = "METHOD")]
    pub heal: Option<HealMethod>,
    #[command(flatten)]
    pub heal_fit: super::heal::HealFitArgs,
}

/// `--dtype`.
pub fn parse_float_type(s: &str) -> Result<FloatType, String> {
    match s {
        "f32" => Ok(FloatType::F32),
        "f16" => Ok(FloatType::F16),
        "bf16" => Ok(FloatType::Bf16),
        _ => Err(format!("`{s}`: expected f32, f16 or bf16")),
    }
}

pub fn run(args: Args) -> Result<()> {
    let req = PruneRequest {
        choice: args.layers.choice(&args.strategy),
        out: args.out.clone(),
        dtype: args.dtype,
        max_shard_size: args.max_shard_size,
        force: args.force,
        heal: args.heal,
        heal_fit: args.heal_fit.fit(),
        command: Some(super::common::command_line()),
    };
    if args.heal.is_some() && args.strategy.calib.calib.is_none() {
        anyhow::bail!("healing needs calibration text\nhint: add --calib FILE");
    }
    let done = prune(&ModelSource::new(&args.model), &req, &Bar::bytes())?;
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
