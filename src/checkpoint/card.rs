//! The model card (`README.md`) of a pruned checkpoint: YAML front matter as the HF hub reads it,
//! then a body in the spirit of the seed card: what was removed, how it was chosen, what it cost.
//! The evaluation section sits between markers so `eval`/`report` can fill it in later.

use super::provenance::Provenance;
use crate::fmt::thousands;
use crate::select::format_ranges;
use crate::select::to_ranges;

pub const CARD_FILE: &str = "README.md";
pub const EVAL_START: &str = "<!-- depthprune:evaluation:start -->";
pub const EVAL_END: &str = "<!-- depthprune:evaluation:end -->";

/// What the card needs beyond the provenance record.
pub struct CardInfo<'a> {
    /// The hub ID or name of the source model.
    pub base_model: &'a str,
    pub model_type: &'a str,
    /// `transformers` for HF folders, `gguf` for GGUF files.
    pub library_name: &'a str,
    /// One sentence on how the layers were chosen.
    pub how_chosen: String,
    /// Extra notes (dtype conversions, healing).
    pub notes: Vec<String>,
}

/// A hub link for an `org/name` ID, plain text for anything else.
fn model_link(name: &str) -> String {
    if name.split('/').count() == 2 && !name.starts_with('.') {
        format!("[{name}](https://huggingface.co/{name})")
    } else {
        format!("`{name}`")
    }
}

/// Quotes a YAML scalar when needed.
fn yaml_str(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && !s.is_empty()
    {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Renders the card.
pub fn render(info: &CardInfo, prov: &Provenance) -> String {
    let l = &prov.layers;
    let p = &prov.params;
    let removed_n = l.removed.len();
    let mut s = String::new();
    s.push_str("---\n");
    s.push_str(&format!("base_model: {}\n", yaml_str(info.base_model)));
    s.push_str(&format!("library_name: {}\n", info.library_name));
    s.push_str("pipeline_tag: text-generation\n");
    s.push_str("tags:\n- pruned\n- depth-pruning\n- depthprune\n");
    s.push_str(&format!("- {}\n", yaml_str(info.model_type)));
    s.push_str("---\n\n");
    s.push_str(&format!(
        "# {} pruned to {} layers\n\n",
        info.base_model, l.layers_after
    ));
    s.push_str(&format!(
        "This model is {} with {} of its {} transformer layers removed \
         by depth pruning: {:.2}% fewer parameters ({} → {}) and {:.2}% fewer layers ({} → {}). \
         No weights were retrained{}.\n\n",
        model_link(info.base_model),
        removed_n,
        l.layers_before,
        p.reduction_pct,
        thousands(p.before),
        thousands(p.after),
        p.layer_reduction_pct,
        l.layers_before,
        l.layers_after,
        if prov.healing.is_some() {
            " (a closed-form linear map was folded into the weights; see below)"
        } else {
            ""
        }
    ));
    s.push_str("## What was removed\n\n");
    s.push_str("Layer numbers are 0-based and ranges are half-open (`a..b` includes `a`, excludes `b`).\n\n");
    s.push_str(&format!("- Removed layers: {:?}\n", l.removed));
    s.push_str(&format!(
        "- Removed ranges: `{}`\n",
        l.removed_ranges.join(", ")
    ));
    s.push_str(&format!(
        "- Kept layers (original numbers): `{}`\n",
        format_ranges(&to_ranges(l.kept.iter().copied()))
    ));
    s.push_str(&format!("- How they were chosen: {}\n", info.how_chosen));
    s.push_str("\n| new layer | original layer |\n|---:|---:|\n");
    for m in &l.mapping {
        s.push_str(&format!("| {} | {} |\n", m.new, m.old));
    }
    s.push_str("\n## Size\n\n| | before | after | reduction |\n|---|---:|---:|---:|\n");
    s.push_str(&format!(
        "| parameters | {} | {} | {:.2}% |\n| layers | {} | {} | {:.2}% |\n",
        thousands(p.before),
        thousands(p.after),
        p.reduction_pct,
        l.layers_before,
        l.layers_after,
        p.layer_reduction_pct
    ));
    if !prov.config_changes.is_empty() {
        s.push_str("\n## Config changes\n\n");
        for c in &prov.config_changes {
            s.push_str(&format!("- `{c}`\n"));
        }
    }
    if !info.notes.is_empty() {
        s.push_str("\n## Notes\n\n");
        for n in &info.notes {
            s.push_str(&format!("- {n}\n"));
        }
    }
    s.push_str("\n## Evaluation\n\n");
    s.push_str(EVAL_START);
    s.push_str("\nNot evaluated yet. Measure perplexity and KL divergence against the original with `depthprune eval`.\n");
    s.push_str(EVAL_END);
    s.push_str("\n\n## Reproduce\n\n```sh\n");
    s.push_str(&shell_join(&prov.command));
    s.push_str("\n```\n\n");
    s.push_str(&format!(
        "Made with depthprune {}. `pruning.json` records the source files and their SHA-256, the layer mapping, \
         and the hash of every file written. Expect degraded quality: removing layers without retraining costs \
         capability, more so the more layers go.\n",
        prov.version
    ));
    s
}

/// Replaces the evaluation section of an existing card.
pub fn replace_evaluation(card: &str, section: &str) -> Option<String> {
    let start = card.find(EVAL_START)? + EVAL_START.len();
    let end = card[start..].find(EVAL_END)? + start;
    Some(format!(
        "{}\n{}\n{}",
        &card[..start],
        section.trim_end(),
        &card[end..]
    ))
}

fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_evaluation_section() {
        let card = format!("a\n{EVAL_START}\nold\n{EVAL_END}\nb");
        let new = replace_evaluation(&card, "new table").unwrap();
        assert!(new.contains("new table") && !new.contains("old") && new.ends_with("\nb"));
    }
}
