//! `inspect`, `plan` and `prune` for GGUF files: turn the library's answers into text or JSON on
//! stdout. Progress and warnings go to stderr.

use super::common::LayerArgs;
use super::output::{print, print_json, warn, Bar};
use super::strategy::{Chosen, StrategyArgs};
use depthprune::arch::params::reduction_pct;
use depthprune::arch::ParamCounts;
use depthprune::checkpoint::atomic::Overwrite;
use depthprune::checkpoint::gguf::{
    self, prune::plan as prune_plan, Edits, GgufInfo, GgufModel, PruneOptions, Value,
};
use depthprune::fmt::{human_bytes, thousands};
use depthprune::hub::Resolved;
use depthprune::select::{format_ranges, to_ranges, Removal};
use serde_json::json;
use std::fmt::Write as _;
use std::path::Path;

/// The GGUF model a MODEL argument names: the header read over HTTP for a hub file that is not
/// in the cache, else the file (and its split parts) on disk.
pub fn open(resolved: &mut Resolved) -> anyhow::Result<GgufModel> {
    Ok(match resolved.remote_gguf.take() {
        Some(m) => m,
        None => GgufModel::open(&resolved.path)?,
    })
}

/// `depthprune inspect MODEL.gguf`.
pub fn inspect(model: &GgufModel, json: bool) -> anyhow::Result<()> {
    let info = GgufInfo::of(model);
    let moe = depthprune::model::gguf_moe::gguf_moe_params(model);
    if json {
        let mut v = serde_json::to_value(&info)?;
        if let (Some(m), Some(o)) = (&moe, v.as_object_mut()) {
            o.insert("active_params".into(), json!(m.active));
            o.insert("moe_params".into(), serde_json::to_value(m)?);
        }
        return print_json(&v);
    }
    let mut s = String::new();
    let parts = match info.parts.len() {
        1 => "1 file".to_string(),
        n => format!("{n} split parts"),
    };
    let _ = writeln!(s, "model         {}", info.path.display());
    let _ = writeln!(
        s,
        "format        GGUF v{}, alignment {}, {parts}, {}",
        info.version,
        info.alignment,
        human_bytes(info.file_bytes)
    );
    let arch = info
        .architecture
        .as_deref()
        .unwrap_or("(missing general.architecture)");
    match &info.name {
        Some(name) => _ = writeln!(s, "architecture  {arch} ({name})"),
        None => _ = writeln!(s, "architecture  {arch}"),
    }
    match (info.block_count, &info.block_count_problem) {
        (Some(n), _) => _ = writeln!(s, "layers        {n}"),
        (None, Some(problem)) => {
            _ = writeln!(s, "layers        unknown");
            warn(problem);
        }
        (None, None) => {}
    }
    let _ = writeln!(
        s,
        "tensors       {}, {} of data, {} parameters",
        info.n_tensors,
        human_bytes(info.tensor_bytes),
        thousands(info.params_total)
    );

    let _ = writeln!(s, "\nparameters by component");
    write_params(&mut s, &info.params);
    if let Some(m) = &moe {
        // Issue 17: the experts a token uses, and everything else, which it always uses.
        let experts = format!("experts ({} x {})", m.sparse_layers, m.num_experts);
        let active = format!("active ({} of {})", m.experts_per_token, m.num_experts);
        for (label, n) in [
            (experts.as_str(), m.experts),
            (active.as_str(), m.active_experts),
            ("routers", m.routers),
            ("shared experts", m.shared_experts),
            ("active/token", m.active),
        ] {
            let _ = writeln!(s, "  {label:<14} {:>16}", thousands(n));
        }
    }

    let _ = writeln!(s, "\ntensors by type");
    let _ = writeln!(
        s,
        "  {:<10} {:>8} {:>14} {:>16}",
        "type", "tensors", "bytes", "parameters"
    );
    for t in &info.tensor_types {
        let _ = writeln!(
            s,
            "  {:<10} {:>8} {:>14} {:>16}",
            t.ggml_type.name(),
            t.tensors,
            human_bytes(t.bytes),
            thousands(t.params)
        );
    }

    let _ = writeln!(s, "\nmetadata ({} keys)", info.metadata.len());
    let width = info.metadata.iter().map(|e| e.key.len()).max().unwrap_or(0);
    for e in &info.metadata {
        let ty = match e.len {
            Some(n) => format!("{}[{n}]", e.ty),
            None => e.ty.clone(),
        };
        let mut value = e.value.to_string();
        if e.truncated {
            value.push_str(" …");
        }
        let _ = writeln!(s, "  {:<width$}  {:<18} {value}", e.key, ty);
    }
    let _ = writeln!(
        s,
        "\nper-layer arrays (sliced by prune): {}",
        list_or_none(&info.per_layer_keys)
    );
    for p in info.parts.iter().filter(|_| info.parts.len() > 1) {
        let _ = writeln!(
            s,
            "part          {} ({} tensors, {})",
            p.path.display(),
            p.tensors,
            human_bytes(p.bytes)
        );
    }
    print(&s)
}

/// Chooses the layers of a GGUF model as `--drop`/`--keep` or `--strategy` (scoring the file
/// itself, as `score` does) say; the same choice an HF folder gets.
pub fn choose(
    model: &GgufModel,
    layers: &LayerArgs,
    strategy: &StrategyArgs,
) -> anyhow::Result<Chosen> {
    // The blocks are checked against the tensors before anything is sized by them.
    let n = model.block_count()?;
    let counts = ParamCounts::from_tensors(model.tensor_elements());
    super::strategy::resolve(layers, strategy, model.path(), n, &counts)
}

/// The metadata a prune records beside its own when a strategy chose the layers.
pub fn how_chosen_metadata(chosen: &Chosen) -> Vec<(String, Value)> {
    match chosen.method.get("kind").and_then(|k| k.as_str()) {
        Some("strategy") => vec![(
            "depthprune.how_chosen".to_string(),
            Value::string(&chosen.how_chosen),
        )],
        _ => Vec::new(),
    }
}

/// `depthprune plan MODEL.gguf --drop SPEC` (or `--strategy M --remove N`).
pub fn plan(
    model: &GgufModel,
    layers: &LayerArgs,
    strategy: &StrategyArgs,
    json: bool,
) -> anyhow::Result<()> {
    let n = model.block_count()?;
    let chosen = choose(model, layers, strategy)?;
    let removal = chosen.removal;
    let plan = prune_plan(model, &removal)?;
    let before = ParamCounts::from_tensors(model.tensor_elements());
    let after = before.after(&removal);
    let bytes_after: u64 = plan.tensors.iter().map(|(_, t)| t.n_bytes()).sum();
    let summary = Summary {
        before: &before,
        after: &after,
        removal: &removal,
    };
    if json {
        return print_json(&json!({
            "model": model.path(),
            "architecture": model.architecture()?,
            "removal": removal.summary(),
            "params_before": before.total(),
            "params_after": after.total(),
            "param_reduction_pct": reduction_pct(before.total(), after.total()),
            "layer_reduction_pct": removal.layer_reduction_pct(),
            "tensors_before": model.tensors().len(),
            "tensors_after": plan.tensors.len(),
            "tensor_bytes_before": model.tensor_bytes(),
            "tensor_bytes_after": bytes_after,
            "block_count_key": plan.block_count_key,
            "per_layer_keys": plan.per_layer_keys,
            "adjusted_keys": plan.adjusted_keys,
            "method": chosen.method,
        }));
    }
    let mut s = chosen.explain.unwrap_or_default();
    let _ = writeln!(
        s,
        "model         {} ({}, {n} layers)",
        model.path().display(),
        model.architecture()?
    );
    summary.write(&mut s);
    let _ = writeln!(
        s,
        "tensors       {} → {} ({} → {} of data)",
        model.tensors().len(),
        plan.tensors.len(),
        human_bytes(model.tensor_bytes()),
        human_bytes(bytes_after)
    );
    let _ = writeln!(
        s,
        "metadata      `{}` = {}",
        plan.block_count_key,
        removal.n_kept()
    );
    let _ = writeln!(s, "per-layer     {}", list_or_none(&plan.per_layer_keys));
    if !plan.adjusted_keys.is_empty() {
        let _ = writeln!(s, "adjusted      {}", plan.adjusted_keys.join(", "));
    }
    print(&s)
}

/// `depthprune prune MODEL.gguf --drop SPEC --out OUT.gguf [--max-shard-size SIZE]`: with a
/// size, the output is split into `OUT-00001-of-0000N.gguf` parts as llama.cpp's `gguf-split`
/// names them. `chosen` comes from [`choose`].
pub fn prune(
    model: &GgufModel,
    chosen: &Chosen,
    out: &Path,
    force: bool,
    split_max_size: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let removal = &chosen.removal;
    let opts = PruneOptions {
        overwrite: if force {
            Overwrite::Force
        } else {
            Overwrite::Refuse
        },
        split_max_bytes: split_max_size,
    };
    let edits = Edits {
        metadata: how_chosen_metadata(chosen),
        ..Edits::default()
    };
    let report = gguf::prune_with(model, removal, out, &opts, &edits, &Bar::bytes())?;
    let before = ParamCounts::from_tensors(model.tensor_elements());
    let after = before.after(removal);
    if json {
        return print_json(&json!({
            "model": model.path(),
            "method": chosen.method,
            "report": report,
            "params_before": before.total(),
            "params_after": after.total(),
            "param_reduction_pct": reduction_pct(before.total(), after.total()),
            "layer_reduction_pct": removal.layer_reduction_pct(),
        }));
    }
    let mut s = String::new();
    for o in &report.outputs {
        let _ = writeln!(s, "wrote         {}", o.display());
    }
    Summary {
        before: &before,
        after: &after,
        removal,
    }
    .write(&mut s);
    let _ = writeln!(
        s,
        "tensors       {} → {} ({} written)",
        report.tensors_before,
        report.tensors_after,
        human_bytes(report.bytes_written)
    );
    let _ = writeln!(s, "per-layer     {}", list_or_none(&report.per_layer_keys));
    if !report.adjusted_keys.is_empty() {
        let _ = writeln!(s, "adjusted      {}", report.adjusted_keys.join(", "));
    }
    print(&s)
}

/// The layer and parameter lines `plan` and `prune` share.
struct Summary<'a> {
    before: &'a ParamCounts,
    after: &'a ParamCounts,
    removal: &'a Removal,
}

impl Summary<'_> {
    fn write(&self, s: &mut String) {
        let r = self.removal;
        let removed = r.removed();
        let kept = r.kept();
        let _ = writeln!(
            s,
            "remove        {} layers: {}",
            removed.len(),
            format_ranges(&r.removed_ranges())
        );
        let _ = writeln!(s, "              {removed:?}");
        let _ = writeln!(
            s,
            "keep          {} layers: {}",
            kept.len(),
            format_ranges(&r.kept_ranges())
        );
        let _ = writeln!(s, "              {kept:?}");
        let _ = writeln!(s, "renumber      {}", mapping_ranges(r));
        let _ = writeln!(
            s,
            "layers        {} → {} (−{:.2} %)",
            r.n_layers(),
            r.n_kept(),
            r.layer_reduction_pct()
        );
        let (b, a) = (self.before.total(), self.after.total());
        let _ = writeln!(
            s,
            "parameters    {} → {} (−{:.2} %)",
            thousands(b),
            thousands(a),
            reduction_pct(b, a)
        );
    }
}

/// The old → new mapping as ranges: `0..20 → 0..20, 28..30 → 20..22`.
fn mapping_ranges(r: &Removal) -> String {
    to_ranges(r.kept())
        .iter()
        .map(|old| {
            let new = r.new_index(old.start).unwrap_or(0);
            format!("{}..{} → {}..{}", old.start, old.end, new, new + old.len())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_params(s: &mut String, p: &ParamCounts) {
    let sum = |f: fn(&depthprune::arch::LayerParams) -> u64| p.layers.iter().map(f).sum::<u64>();
    let rows = [
        ("embeddings", p.embeddings),
        ("attention", sum(|l| l.attention)),
        ("mlp", sum(|l| l.mlp)),
        ("norms", sum(|l| l.norms)),
        ("layer (other)", sum(|l| l.other)),
        ("final norm", p.final_norm),
        ("lm_head", p.lm_head),
        ("other", p.other),
    ];
    for (label, n) in rows.iter().filter(|(_, n)| *n > 0) {
        let _ = writeln!(s, "  {label:<14} {:>16}", thousands(*n));
    }
    let _ = writeln!(s, "  {:<14} {:>16}", "total", thousands(p.total()));
}

fn list_or_none(keys: &[String]) -> String {
    if keys.is_empty() {
        "none".into()
    } else {
        keys.iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_is_shown_as_ranges() {
        let r = Removal::from_layers(30, 20..28).unwrap();
        assert_eq!(mapping_ranges(&r), "0..20 → 0..20, 28..30 → 20..22");
    }
}
