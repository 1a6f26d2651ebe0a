//! `depthprune prune MODEL --drop SPEC --out DIR`: write the pruned checkpoint.

use super::common::{is_gguf, parse_size, resolve_model, LayerArgs};
use super::output::{print, print_json, warn, Bar};
use anyhow::Result;
use depthprune::checkpoint::atomic::Overwrite;
use depthprune::checkpoint::gguf::GgufModel;
use depthprune::checkpoint::hf::HfCheckpoint;
use depthprune::checkpoint::hf_prune::{prune_hf, PruneOptions, DEFAULT_MAX_SHARD};
use depthprune::checkpoint::safetensors::Dtype;
use depthprune::fmt::thousands;
use depthprune::hub::Need;
use depthprune::select::format_ranges;
use std::path::{Path, PathBuf};

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
    #[arg(long, value_parser = ["f32", "f16", "bf16"])]
    pub dtype: Option<String>,
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
    #[arg(long, value_parser = super::heal::HEAL_METHODS, num_args = 0..=1, default_missing_value = "auto", value_name = "METHOD")]
    pub heal: Option<String>,
    #[command(flatten)]
    pub heal_fit: super::heal::HealFitArgs,
}

pub fn run(args: Args) -> Result<()> {
    let resolved = resolve_model(&args.model, Need::Snapshot)?;
    let model = &resolved.path;
    if is_gguf(model) {
        return prune_gguf(&args, model);
    }
    let ckpt = HfCheckpoint::open(model)?;
    let chosen = super::strategy::resolve(
        &args.layers,
        &args.strategy,
        model,
        ckpt.arch.num_hidden_layers,
        &ckpt.param_counts(),
    )?;
    if let Some(e) = &chosen.explain {
        eprint!("{e}");
    }
    let removal = chosen.removal;
    if let Some(method) = &args.heal {
        if args.dtype.is_some() {
            anyhow::bail!("--dtype cannot be combined with --heal (healed tensors are written as F32, the rest as stored)");
        }
        let c = &args.strategy.calib;
        let heal_args = args
            .heal_fit
            .with_calib(method, c.calib.clone(), c.ctx, c.calib_offset);
        return super::heal::heal_and_write(
            &ckpt,
            &removal,
            &heal_args,
            &args.out,
            args.force,
            args.max_shard_size,
            chosen.method,
            chosen.how_chosen,
            args.json,
        );
    }
    if args.strategy.calib.calib.is_some() && args.layers.drop.is_some() {
        warn("--calib is only used with --strategy or --heal; writing an unhealed prune");
    }
    if !ckpt.arch.is_supported() {
        warn(format!(
            "architecture `{}` is not one depthprune knows ({}); layers named `model.layers.N.` are pruned, but per-layer config fields were not checked",
            ckpt.arch.model_type,
            depthprune::arch::config::SUPPORTED.join(", ")
        ));
    }
    let opts = PruneOptions {
        dtype: args.dtype.as_deref().map(|d| match d {
            "f32" => Dtype::F32,
            "f16" => Dtype::F16,
            _ => Dtype::BF16,
        }),
        max_shard_size: args.max_shard_size.unwrap_or(DEFAULT_MAX_SHARD),
        overwrite: if args.force {
            Overwrite::Force
        } else {
            Overwrite::Refuse
        },
        command: super::common::command_line(),
        method: chosen.method,
        how_chosen: chosen.how_chosen,
        base_model: resolved.hub.as_ref().map(|h| h.repo.clone()),
        hub: resolved.hub.clone(),
        replace: Default::default(),
        healing: None,
    };
    let result = prune_hf(&ckpt, &removal, &args.out, &opts, &Bar::bytes())?;
    for w in &result.warnings {
        warn(w);
    }
    if args.json {
        return print_json(&result.provenance);
    }
    let p = &result.provenance;
    let mut s = format!(
        "wrote {}\nlayers: {} → {} (removed {}; {:.2}% layer reduction)\nparameters: {} → {} ({:.2}% parameter reduction)\n",
        result.out.display(),
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

/// `prune MODEL.gguf`: the layers chosen as for an HF folder (`--drop`, `--keep` or
/// `--strategy`), then pruned, or healed and pruned with `--heal lstsq`.
fn prune_gguf(args: &Args, model: &Path) -> Result<()> {
    if args.heal.is_some() {
        if let Some(d) = args.dtype.as_deref().filter(|d| *d == "bf16") {
            anyhow::bail!(
                "`{}`: --dtype {d} with --heal on a GGUF: the healed tensors are written as f32 or f16",
                model.display()
            );
        }
    } else if let Some(d) = &args.dtype {
        anyhow::bail!(
            "`{}`: --dtype {d} applies to HF folders (or to the healed tensors with --heal); GGUF tensors are copied in their own ggml types (convert to HF first to change dtypes)",
            model.display()
        );
    }
    let gguf_model = GgufModel::open(model)?;
    let chosen = super::gguf::choose(&gguf_model, &args.layers, &args.strategy)?;
    if let Some(e) = &chosen.explain {
        eprint!("{e}");
    }
    if args.heal.is_none() {
        if args.strategy.calib.calib.is_some() && args.layers.strategy.is_none() {
            warn("--calib is only used with --strategy or --heal; writing an unhealed prune");
        }
        return super::gguf::prune(
            &gguf_model,
            &chosen,
            &args.out,
            args.force,
            args.max_shard_size,
            args.json,
        );
    }
    let c = &args.strategy.calib;
    let method = args.heal.as_deref().unwrap_or("auto");
    let heal_args = args
        .heal_fit
        .with_calib(method, c.calib.clone(), c.ctx, c.calib_offset);
    super::heal::heal_and_write_gguf(
        &gguf_model,
        &chosen.removal,
        &heal_args,
        &args.out,
        args.force,
        args.max_shard_size,
        args.dtype.as_deref(),
        super::gguf::how_chosen_metadata(&chosen),
        args.json,
    )
}
