//! `depthprune plan MODEL --drop SPEC`: what a prune would produce, writing nothing.

use super::common::warn_duplicates;
use super::output::{print, print_json, warn, Bar};
use anyhow::Result;
use depthprune::api::choose::LayerChoice;
use depthprune::api::plan::{plan, PlanReport};
use depthprune::api::ModelSource;
use depthprune::arch::params::reduction_pct;
use depthprune::fmt::thousands;
use depthprune::select::{format_ranges, Removal};
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
    pub choice: LayerChoice,
    /// For a hub ID, count parameters exactly from each shard's header (a few KB, by HTTP range
    /// requests) instead of from config.json.
    #[arg(long)]
    pub exact: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    super::common::require_layers(&args.choice);
    let planned = plan(
        &ModelSource::new(&args.model),
        &args.choice,
        args.exact,
        &Bar::items(),
    )?;
    warn_duplicates(&planned.chosen.duplicates);
    for w in &planned.warnings {
        warn(w);
    }
    if args.json {
        return print_json(&planned.report);
    }
    let explain = planned.chosen.explain.as_deref();
    let p = match &planned.report {
        PlanReport::Gguf(p) => return super::gguf::plan(p, &planned.removal, explain),
        PlanReport::Hf(p) => p,
    };
    let mut text = explain.unwrap_or_default().to_string();
    text.push_str(&render(
        &p.model,
        p.counted_from,
        &planned.removal,
        p.params.before,
        p.params.after,
        &p.config_changes,
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
