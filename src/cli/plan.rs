//! `depthprune plan MODEL --drop SPEC`: what a prune would produce, writing nothing.

use super::common::{is_gguf, resolve_model, LayerArgs};
use super::output::{print, print_json, warn};
use anyhow::Result;
use depthprune::arch::params::reduction_pct;
use depthprune::arch::ParamCounts;
use depthprune::checkpoint::config_surgery::prune_config;
use depthprune::checkpoint::hf::{self, HfCheckpoint};
use depthprune::fmt::thousands;
use depthprune::hub::Need;
use depthprune::select::{format_ranges, Removal};
use serde_json::json;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune plan ./Qwen3-4B/config.json --drop 3..29     # the seed card: 36 -> 10 layers\n  \
    depthprune plan ./Qwen3-4B --keep 0..3,29..            # the same, said the other way\n  \
    depthprune plan model.gguf --drop last:8 --json\n  \
    depthprune plan Qwen/Qwen3-4B --drop 3..29           # hub ID: fetches config.json only")]
pub struct Args {
    /// An HF folder, a config.json (no weights needed), a GGUF file, or a hub ID
    /// (`org/name[@revision]`, `org/name:file.gguf`).
    pub model: PathBuf,
    #[command(flatten)]
    pub layers: LayerArgs,
    #[command(flatten)]
    pub strategy: super::strategy::StrategyArgs,
    /// For a hub ID, count parameters exactly from each shard's header (a few KB, by HTTP range
    /// requests) instead of from config.json.
    #[arg(long)]
    pub exact: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    // A strategy that runs its metric opens the checkpoint (weights and tokenizer), wherever
    // it is; only saved `--scores` spare that.
    let scores_weights = args.layers.strategy.is_some() && args.strategy.scores.is_none();
    let need = if scores_weights {
        Need::Snapshot
    } else if args.exact {
        Need::Headers
    } else {
        Need::Config
    };
    let mut resolved = resolve_model(&args.model, need)?;
    let path = resolved.path.clone();
    if is_gguf(&path) {
        let model = super::gguf::open(&mut resolved)?;
        return super::gguf::plan(&model, &args.layers, &args.strategy, args.json);
    }
    let remote = resolved.remote.is_some();
    let weights = remote || (path.is_dir() && hf::has_weights(&path));
    let (arch, raw, before) = if weights {
        let ckpt = match resolved.remote.take() {
            Some(c) => c,
            None => HfCheckpoint::open(&path)?,
        };
        let counts = ckpt.param_counts();
        (ckpt.arch, ckpt.config, counts)
    } else {
        let (arch, raw, _) = hf::read_config(&path)?;
        let counts = ParamCounts::from_config(&arch);
        (arch, raw, counts)
    };
    let chosen = super::strategy::resolve(
        &args.layers,
        &args.strategy,
        &path,
        arch.num_hidden_layers,
        &before,
    )?;
    let removal = chosen.removal;
    let after = before.after(&removal);
    let surgery = prune_config(&raw, &arch, &removal, None);
    for w in &surgery.warnings {
        warn(w);
    }
    let counted_from = if remote {
        "tensor headers on the hub"
    } else if weights {
        "tensors"
    } else {
        "config.json"
    };
    let model = resolved.name();
    if args.json {
        return print_json(&json!({
            "model": model,
            "hub": resolved.hub,
            "counted_from": counted_from,
            "layers": removal.summary(),
            "params": {
                "before": before.total(),
                "after": after.total(),
                "reduction_pct": reduction_pct(before.total(), after.total()),
                "layer_reduction_pct": removal.layer_reduction_pct(),
            },
            "config_changes": surgery.changes,
            "command": format!("depthprune prune {} --drop {} --out OUT", model, removal.drop_spec()),
            "method": chosen.method,
        }));
    }
    let mut text = chosen.explain.unwrap_or_default();
    text.push_str(&render(
        &model,
        counted_from,
        &removal,
        before.total(),
        after.total(),
        &surgery.changes,
    ));
    print(&text)
}

/// The plan as text; shared with GGUF.
pub fn render(
    model: &str,
    counted_from: &str,
    removal: &Removal,
    before: u64,
    after: u64,
    changes: &[String],
) -> String {
    let mut s = String::new();
    let removed = removal.removed();
    let _ = writeln!(s, "model: {model} (parameters counted from {counted_from})");
    let _ = writeln!(
        s,
        "layers: {} → {} ({} removed, {:.2}% layer reduction)",
        removal.n_layers(),
        removal.n_kept(),
        removed.len(),
        removal.layer_reduction_pct()
    );
    let _ = writeln!(
        s,
        "parameters: {} → {} ({:.2}% parameter reduction)",
        thousands(before),
        thousands(after),
        reduction_pct(before, after)
    );
    let _ = writeln!(s, "removed layers: {removed:?}");
    let _ = writeln!(
        s,
        "removed ranges: {}",
        format_ranges(&removal.removed_ranges())
    );
    let _ = writeln!(s, "kept layers: {:?}", removal.kept());
    let _ = writeln!(s, "kept ranges: {}", format_ranges(&removal.kept_ranges()));
    let _ = writeln!(s, "mapping (old → new):");
    for chunk in removal.mapping().chunks(8) {
        let line: Vec<String> = chunk
            .iter()
            .map(|(o, n)| format!("{o:>3} → {n:<3}"))
            .collect();
        let _ = writeln!(s, "  {}", line.join("  ").trim_end());
    }
    if !changes.is_empty() {
        let _ = writeln!(s, "config changes:");
        for c in changes {
            let _ = writeln!(s, "  {c}");
        }
    }
    let _ = writeln!(
        s,
        "to write it: depthprune prune {model} --drop {} --out OUT",
        removal.drop_spec()
    );
    s
}
