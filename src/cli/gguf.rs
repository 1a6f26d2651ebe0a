//! `inspect`, `plan` and `prune` for GGUF files: the library's answers as text on stdout.

use super::output::{print, warn};
use depthprune::api::plan::GgufPlan;
use depthprune::api::prune::GgufPruned;
use depthprune::arch::params::reduction_pct;
use depthprune::arch::{MoeParams, ParamCounts};
use depthprune::checkpoint::gguf::GgufInfo;
use depthprune::fmt::{human_bytes, thousands};
use depthprune::select::{format_ranges, to_ranges, Removal};
use std::fmt::Write as _;

/// `depthprune inspect MODEL.gguf`.
pub fn inspect(info: &GgufInfo, moe: Option<&MoeParams>) -> anyhow::Result<()> {
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
    if let Some(m) = moe {
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

/// `depthprune plan MODEL.gguf`, after the explanation of a strategy's choice.
pub fn plan(p: &GgufPlan, removal: &Removal, explain: Option<&str>) -> anyhow::Result<()> {
    let mut s = explain.unwrap_or_default().to_string();
    let _ = writeln!(
        s,
        "model         {} ({}, {} layers)",
        p.model.display(),
        p.architecture,
        removal.n_layers()
    );
    Summary {
        before: p.params_before,
        after: p.params_after,
        removal,
    }
    .write(&mut s);
    let _ = writeln!(
        s,
        "tensors       {} → {} ({} → {} of data)",
        p.tensors_before,
        p.tensors_after,
        human_bytes(p.tensor_bytes_before),
        human_bytes(p.tensor_bytes_after)
    );
    let _ = writeln!(
        s,
        "metadata      `{}` = {}",
        p.block_count_key,
        removal.n_kept()
    );
    keys(&mut s, &p.per_layer_keys, &p.adjusted_keys);
    print(&s)
}

/// `depthprune prune MODEL.gguf --drop SPEC --out OUT.gguf`: what was written.
pub fn pruned(p: &GgufPruned, removal: &Removal) -> anyhow::Result<()> {
    let report = &p.report;
    let mut s = String::new();
    for o in &report.outputs {
        let _ = writeln!(s, "wrote         {}", o.display());
    }
    Summary {
        before: p.params_before,
        after: p.params_after,
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
    keys(&mut s, &report.per_layer_keys, &report.adjusted_keys);
    print(&s)
}

/// The metadata lines `plan` and `prune` share: per-layer arrays sliced, counts adjusted.
fn keys(s: &mut String, per_layer: &[String], adjusted: &[String]) {
    let _ = writeln!(s, "per-layer     {}", list_or_none(per_layer));
    if !adjusted.is_empty() {
        let _ = writeln!(s, "adjusted      {}", adjusted.join(", "));
    }
}

/// The layer and parameter lines `plan` and `prune` share.
struct Summary<'a> {
    before: u64,
    after: u64,
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
        let (b, a) = (self.before, self.after);
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
