//! A resolved removal plan: which layers go, which stay, and how the survivors are renumbered.

use super::spec::LayerSpec;
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::BTreeSet;
use std::ops::Range;

/// Which of a model's `n_layers` layers are removed. Built only through constructors that check
/// that at least one layer is removed and at least one is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    n_layers: usize,
    removed: BTreeSet<usize>,
    /// Layers the spec named more than once (merged).
    duplicates: BTreeSet<usize>,
}

impl Removal {
    /// Layers named by `spec` are removed.
    pub fn drop(spec: &LayerSpec, n_layers: usize) -> Result<Self> {
        let r = spec.resolve(n_layers)?;
        Self::from_parts(spec.text(), n_layers, r.layers, r.duplicates)
    }

    /// Layers named by `spec` are kept; all others are removed.
    pub fn keep(spec: &LayerSpec, n_layers: usize) -> Result<Self> {
        let r = spec.resolve(n_layers)?;
        let removed = (0..n_layers).filter(|i| !r.layers.contains(i)).collect();
        if r.layers.len() == n_layers {
            return Err(Error::Spec {
                spec: spec.text().to_string(),
                msg: "it keeps every layer, so nothing would be removed".into(),
            });
        }
        Self::from_parts(spec.text(), n_layers, removed, r.duplicates)
    }

    /// Removes exactly `layers` (as chosen by a strategy).
    pub fn from_layers(n_layers: usize, layers: impl IntoIterator<Item = usize>) -> Result<Self> {
        let removed: BTreeSet<usize> = layers.into_iter().collect();
        let text = format_ranges(&to_ranges(removed.iter().copied()));
        if let Some(&bad) = removed.iter().find(|&&i| i >= n_layers) {
            return Err(Error::Spec {
                spec: text,
                msg: format!("layer {bad} is out of range: the model has {n_layers} layers"),
            });
        }
        if removed.is_empty() {
            return Err(Error::Spec {
                spec: text,
                msg: "the spec names no layer".into(),
            });
        }
        Self::from_parts(&text, n_layers, removed, BTreeSet::new())
    }

    fn from_parts(
        spec: &str,
        n_layers: usize,
        removed: BTreeSet<usize>,
        duplicates: BTreeSet<usize>,
    ) -> Result<Self> {
        if removed.len() >= n_layers {
            return Err(Error::Spec {
                spec: spec.to_string(),
                msg: format!("it removes all {n_layers} layers; at least one must stay"),
            });
        }
        Ok(Removal {
            n_layers,
            removed,
            duplicates,
        })
    }

    pub fn n_layers(&self) -> usize {
        self.n_layers
    }

    pub fn n_kept(&self) -> usize {
        self.n_layers - self.removed.len()
    }

    pub fn is_removed(&self, layer: usize) -> bool {
        self.removed.contains(&layer)
    }

    /// Removed layers, ascending.
    pub fn removed(&self) -> Vec<usize> {
        self.removed.iter().copied().collect()
    }

    /// Kept layers (old numbers), ascending.
    pub fn kept(&self) -> Vec<usize> {
        (0..self.n_layers)
            .filter(|i| !self.removed.contains(i))
            .collect()
    }

    pub fn duplicates(&self) -> Vec<usize> {
        self.duplicates.iter().copied().collect()
    }

    /// The removed layers as maximal half-open ranges.
    pub fn removed_ranges(&self) -> Vec<Range<usize>> {
        to_ranges(self.removed.iter().copied())
    }

    /// The kept layers as maximal half-open ranges.
    pub fn kept_ranges(&self) -> Vec<Range<usize>> {
        to_ranges(self.kept())
    }

    /// The new number of an old layer, or `None` if it is removed.
    pub fn new_index(&self, old: usize) -> Option<usize> {
        if old >= self.n_layers || self.removed.contains(&old) {
            return None;
        }
        Some(old - self.removed.range(..old).count())
    }

    /// The name HF tensor `name` takes in the pruned checkpoint: a kept layer's tensor is
    /// renumbered; a removed layer's, or one outside the layers, keeps its name.
    pub fn renamed_hf(&self, name: &str) -> String {
        self.renamed(name, super::naming::hf_layer(name))
    }

    /// The name GGUF tensor `name` (`blk.N.…`) takes in the pruned file, as [`Self::renamed_hf`].
    pub fn renamed_gguf(&self, name: &str) -> String {
        self.renamed(name, super::naming::gguf_layer(name))
    }

    /// `name`, parsed as `layer`, renumbered when its layer is kept; else unchanged.
    fn renamed(&self, name: &str, layer: Option<super::naming::LayerName<'_>>) -> String {
        layer
            .and_then(|l| self.new_index(l.layer).map(|n| l.renumbered(n)))
            .unwrap_or_else(|| name.to_string())
    }

    /// `(old, new)` for every kept layer.
    pub fn mapping(&self) -> Vec<(usize, usize)> {
        self.kept()
            .into_iter()
            .enumerate()
            .map(|(new, old)| (old, new))
            .collect()
    }

    /// A SPEC that reproduces this removal with `--drop`.
    pub fn drop_spec(&self) -> String {
        self.removed_ranges()
            .iter()
            .map(|r| {
                if r.len() == 1 {
                    r.start.to_string()
                } else {
                    format!("{}..{}", r.start, r.end)
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Share of layers removed, in percent.
    pub fn layer_reduction_pct(&self) -> f64 {
        100.0 * self.removed.len() as f64 / self.n_layers as f64
    }

    /// A JSON-ready summary: lists, ranges and mapping.
    pub fn summary(&self) -> RemovalSummary {
        RemovalSummary {
            layers_before: self.n_layers,
            layers_after: self.n_kept(),
            removed: self.removed(),
            removed_ranges: self.removed_ranges().iter().map(range_str).collect(),
            kept: self.kept(),
            kept_ranges: self.kept_ranges().iter().map(range_str).collect(),
            mapping: self
                .mapping()
                .into_iter()
                .map(|(old, new)| LayerMap { old, new })
                .collect(),
            drop_spec: self.drop_spec(),
        }
    }
}

/// One kept layer's old and new numbers.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct LayerMap {
    pub old: usize,
    pub new: usize,
}

/// The removal as it appears in JSON outputs and `pruning.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RemovalSummary {
    pub layers_before: usize,
    pub layers_after: usize,
    pub removed: Vec<usize>,
    pub removed_ranges: Vec<String>,
    pub kept: Vec<usize>,
    pub kept_ranges: Vec<String>,
    pub mapping: Vec<LayerMap>,
    pub drop_spec: String,
}

fn range_str(r: &Range<usize>) -> String {
    format!("{}..{}", r.start, r.end)
}

/// Groups ascending layer numbers into maximal half-open ranges.
pub fn to_ranges(layers: impl IntoIterator<Item = usize>) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for i in layers {
        match out.last_mut() {
            Some(r) if r.end == i => r.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// `0..3, 7..8`: ranges written half-open, comma separated.
pub fn format_ranges(ranges: &[Range<usize>]) -> String {
    ranges.iter().map(range_str).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_card_prune_maps_layers() {
        let spec = LayerSpec::parse("3..29").unwrap();
        let r = Removal::drop(&spec, 36).unwrap();
        assert_eq!(r.n_kept(), 10);
        assert_eq!(r.new_index(2), Some(2));
        assert_eq!(r.new_index(3), None);
        assert_eq!(r.new_index(29), Some(3));
        assert_eq!(r.new_index(35), Some(9));
        assert_eq!(format!("{:.2}", r.layer_reduction_pct()), "72.22");
        assert_eq!(r.drop_spec(), "3..29");
        assert_eq!(format_ranges(&r.kept_ranges()), "0..3, 29..36");
    }

    #[test]
    fn keep_is_the_complement_of_drop() {
        let keep = Removal::keep(&LayerSpec::parse("0..3,29..").unwrap(), 36).unwrap();
        let drop = Removal::drop(&LayerSpec::parse("3..29").unwrap(), 36).unwrap();
        assert_eq!(keep.removed(), drop.removed());
    }

    #[test]
    fn refuses_removing_every_layer() {
        let e = Removal::drop(&LayerSpec::parse("0..4").unwrap(), 4).unwrap_err();
        assert!(e.to_string().contains("removes all 4 layers"), "{e}");
        let e = Removal::keep(&LayerSpec::parse("0..4").unwrap(), 4).unwrap_err();
        assert!(e.to_string().contains("keeps every layer"), "{e}");
    }

    #[test]
    fn drop_spec_round_trips() {
        let r = Removal::from_layers(30, [1, 2, 3, 7, 20, 21]).unwrap();
        assert_eq!(r.drop_spec(), "1..4,7,20..22");
        let again = Removal::drop(&LayerSpec::parse(&r.drop_spec()).unwrap(), 30).unwrap();
        assert_eq!(again.removed(), r.removed());
    }
}
