//! `depthprune inspect MODEL`: architecture, parameters by component, dtypes and bytes on disk.

use super::output::{print, print_json, Bar};
use anyhow::Result;
use depthprune::api::inspect::{inspect, Inspection};
use depthprune::api::ModelSource;
use depthprune::arch::MoeParams;
use depthprune::fmt::{human_bytes, thousands};
use std::fmt::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    depthprune inspect ./Qwen3-4B\n  \
    depthprune inspect ./Qwen3-4B/config.json      # config only: counts from the config\n  \
    depthprune inspect model.gguf --json\n  \
    depthprune inspect Qwen/Qwen3-4B --exact          # hub ID: config plus shard headers, no weights")]
pub struct Args {
    /// An HF folder (config.json + safetensors), a config.json, a GGUF file, or a hub ID
    /// (`org/name[@revision]`, `org/name:file.gguf`).
    pub model: PathBuf,
    /// For a hub ID, also read each shard's header (a few KB, by HTTP range requests) to count
    /// parameters and dtypes exactly; local folders with weights are always counted exactly.
    #[arg(long)]
    pub exact: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let found = inspect(&ModelSource::new(&args.model), args.exact, &Bar::items())?;
    if args.json {
        return print_json(&found);
    }
    let i = match found {
        Inspection::Gguf(g) => return super::gguf::inspect(&g.info, g.moe_params.as_ref()),
        Inspection::Hf(i) => i,
    };
    let (arch, counts, source) = (&i.architecture, &i.params, i.counted_from);
    let dtypes = &i.dtypes;
    let bytes = i.bytes_on_disk;
    let mut s = String::new();
    let yes = |b: bool| if b { "yes" } else { "no" };
    writeln!(s, "model            {}", i.model)?;
    if let Some(h) = &i.hub {
        writeln!(s, "commit           {}", h.commit)?;
    }
    writeln!(
        s,
        "architecture     {} ({})",
        arch.model_type,
        arch.architectures.join(", ")
    )?;
    writeln!(s, "layers           {}", arch.num_hidden_layers)?;
    writeln!(s, "hidden size      {}", arch.hidden_size)?;
    writeln!(
        s,
        "heads            {} (kv heads {}, head_dim {})",
        arch.num_attention_heads, arch.num_key_value_heads, arch.head_dim
    )?;
    writeln!(s, "intermediate     {}", arch.intermediate_size)?;
    if let Some(m) = &arch.moe {
        writeln!(
            s,
            "experts          {} ({} per token, expert size {})",
            m.num_experts, m.num_experts_per_tok, m.moe_intermediate_size
        )?;
    }
    writeln!(s, "vocab            {}", arch.vocab_size)?;
    writeln!(s, "tied embeddings  {}", yes(arch.tie_word_embeddings))?;
    writeln!(s, "rope_theta       {}", arch.rope_theta)?;
    if let Some(d) = &dtypes {
        let list: Vec<String> = d
            .iter()
            .map(|(k, n)| format!("{k} ({n} tensors)"))
            .collect();
        writeln!(s, "dtypes           {}", list.join(", "))?;
    } else if let Some(d) = &arch.torch_dtype {
        writeln!(s, "dtype (config)   {d}")?;
    }
    writeln!(s, "\nparameters (counted from {source})")?;
    let total = counts.total().max(1) as f64;
    let row = |s: &mut String, name: &str, n: u64| {
        writeln!(
            s,
            "  {:<22}{:>16}  {:>6.2}%",
            name,
            thousands(n),
            100.0 * n as f64 / total
        )
    };
    row(&mut s, "embeddings", counts.embeddings)?;
    let sum =
        |f: fn(&depthprune::arch::LayerParams) -> u64| counts.layers.iter().map(f).sum::<u64>();
    row(
        &mut s,
        &format!("layers ({})", counts.layers.len()),
        counts.layers_total(),
    )?;
    row(&mut s, "  attention", sum(|l| l.attention))?;
    row(&mut s, "  mlp", sum(|l| l.mlp))?;
    if let Some(m) = &i.moe_params {
        write_moe_rows(&mut s, m, &row)?;
    }
    row(&mut s, "  norms", sum(|l| l.norms))?;
    if sum(|l| l.other) > 0 {
        row(&mut s, "  other", sum(|l| l.other))?;
    }
    row(&mut s, "final norm", counts.final_norm)?;
    if counts.lm_head == 0 && arch.tie_word_embeddings {
        writeln!(s, "  {:<22}{:>16}", "lm_head", "tied")?;
    } else {
        row(&mut s, "lm_head", counts.lm_head)?;
    }
    if counts.other > 0 {
        row(&mut s, "other", counts.other)?;
    }
    writeln!(s, "  {:<22}{:>16}", "total", thousands(counts.total()))?;
    if let Some(m) = &i.moe_params {
        row(&mut s, "active per token", m.active)?;
    }
    if let Some(b) = bytes {
        let label = if i.remote {
            "bytes on the hub"
        } else {
            "bytes on disk   "
        };
        writeln!(s, "{label} {} ({})", thousands(b), human_bytes(b))?;
    }
    writeln!(
        s,
        "\nper layer\n  {:>5} {:>14} {:>14} {:>8} {:>14}",
        "layer", "attention", "mlp", "norms", "total"
    )?;
    for (i, l) in counts.layers.iter().enumerate() {
        writeln!(
            s,
            "  {:>5} {:>14} {:>14} {:>8} {:>14}",
            i,
            thousands(l.attention),
            thousands(l.mlp),
            thousands(l.norms),
            thousands(l.total())
        )?;
    }
    print(&s)
}

/// The feed-forward rows of a model with experts (issue 17): routed experts (and the share one
/// token uses), routers, shared experts and the dense MLPs of layers without experts.
fn write_moe_rows(
    s: &mut String,
    m: &MoeParams,
    row: &dyn Fn(&mut String, &str, u64) -> std::fmt::Result,
) -> std::fmt::Result {
    let experts = format!("    experts ({} x {})", m.sparse_layers, m.num_experts);
    row(s, &experts, m.experts)?;
    let active = format!("    active ({} of {})", m.experts_per_token, m.num_experts);
    row(s, &active, m.active_experts)?;
    row(s, "    routers", m.routers)?;
    if m.shared_experts > 0 {
        row(s, "    shared experts", m.shared_experts)?;
    }
    if m.dense_mlp > 0 {
        row(s, "    dense mlp", m.dense_mlp)?;
    }
    Ok(())
}
