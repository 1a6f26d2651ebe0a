//! The layer SPEC grammar. Layer numbers are 0-based; ranges are half-open.
//!
//! ```text
//! spec  := item ("," item)*
//! item  := N            one layer
//!        | A..B         layers A, A+1, …, B-1
//!        | A..          layers A to the last
//!        | ..B          layers 0 to B-1
//!        | first:K      the first K layers
//!        | last:K       the last K layers
//! ```
//!
//! Whitespace around items is ignored. `A..=B` is refused with a hint, because inclusive ranges
//! are exactly the ambiguity this grammar exists to remove.

use crate::error::{Error, Result};
use std::collections::BTreeSet;

/// One item of a SPEC, before it is resolved against a layer count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecItem {
    Layer(usize),
    Range {
        start: Option<usize>,
        end: Option<usize>,
    },
    First(usize),
    Last(usize),
}

/// A parsed SPEC: the items in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpec {
    text: String,
    items: Vec<SpecItem>,
}

/// What a SPEC names once resolved against a layer count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub layers: BTreeSet<usize>,
    /// Layers named more than once; they merge, and the caller may warn.
    pub duplicates: BTreeSet<usize>,
}

fn spec_err(spec: &str, msg: impl Into<String>) -> Error {
    Error::Spec {
        spec: spec.to_string(),
        msg: msg.into(),
    }
}

fn parse_num(spec: &str, s: &str) -> Result<usize> {
    let s = s.trim();
    if s.is_empty() {
        return Err(spec_err(spec, "expected a layer number"));
    }
    if s.starts_with('-') {
        return Err(spec_err(
            spec,
            format!("`{s}` is negative; layers are numbered from 0 (use `last:K` to count from the end)"),
        ));
    }
    s.parse::<usize>()
        .map_err(|_| spec_err(spec, format!("`{s}` is not a layer number")))
}

impl LayerSpec {
    /// Parses a SPEC without knowing the layer count.
    pub fn parse(text: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Err(spec_err(text, "the spec is empty; it names no layer"));
        }
        let mut items = Vec::new();
        for raw in text.split(',') {
            let item = raw.trim();
            if item.is_empty() {
                return Err(spec_err(text, "empty item between commas"));
            }
            items.push(Self::parse_item(text, item)?);
        }
        Ok(LayerSpec {
            text: text.to_string(),
            items,
        })
    }

    fn parse_item(text: &str, item: &str) -> Result<SpecItem> {
        if let Some(k) = item.strip_prefix("first:") {
            return Ok(SpecItem::First(parse_num(text, k)?));
        }
        if let Some(k) = item.strip_prefix("last:") {
            return Ok(SpecItem::Last(parse_num(text, k)?));
        }
        if item.contains("..=") {
            return Err(spec_err(
                text,
                format!("`{item}`: inclusive ranges are not accepted; ranges are half-open, so write `a..b+1`"),
            ));
        }
        if let Some((a, b)) = item.split_once("..") {
            let start = if a.trim().is_empty() {
                None
            } else {
                Some(parse_num(text, a)?)
            };
            let end = if b.trim().is_empty() {
                None
            } else {
                Some(parse_num(text, b)?)
            };
            if let (Some(s), Some(e)) = (start, end) {
                if e < s {
                    return Err(spec_err(
                        text,
                        format!("`{item}`: the range ends before it starts"),
                    ));
                }
            }
            return Ok(SpecItem::Range { start, end });
        }
        if item.contains(':') {
            return Err(spec_err(
                text,
                format!("`{item}`: unknown form; use N, A..B, A.., ..B, first:K or last:K"),
            ));
        }
        Ok(SpecItem::Layer(parse_num(text, item)?))
    }

    /// The SPEC as the user wrote it.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn items(&self) -> &[SpecItem] {
        &self.items
    }

    /// Resolves against a model with `n_layers` layers. Fails on any layer out of range and on a
    /// spec that names nothing.
    pub fn resolve(&self, n_layers: usize) -> Result<Resolved> {
        let mut layers = BTreeSet::new();
        let mut duplicates = BTreeSet::new();
        let out_of_range = |what: String| {
            spec_err(
                &self.text,
                format!("{what} is out of range: the model has {n_layers} layers, numbered 0..{n_layers}"),
            )
        };
        for item in &self.items {
            let range = match *item {
                SpecItem::Layer(i) => {
                    if i >= n_layers {
                        return Err(out_of_range(format!("layer {i}")));
                    }
                    i..i + 1
                }
                SpecItem::Range { start, end } => {
                    let s = start.unwrap_or(0);
                    let e = end.unwrap_or(n_layers);
                    if e > n_layers || s > e {
                        return Err(out_of_range(format!("range `{s}..{e}`")));
                    }
                    s..e
                }
                SpecItem::First(k) => {
                    if k > n_layers {
                        return Err(out_of_range(format!("`first:{k}`")));
                    }
                    0..k
                }
                SpecItem::Last(k) => {
                    if k > n_layers {
                        return Err(out_of_range(format!("`last:{k}`")));
                    }
                    n_layers - k..n_layers
                }
            };
            for i in range {
                if !layers.insert(i) {
                    duplicates.insert(i);
                }
            }
        }
        if layers.is_empty() {
            return Err(spec_err(&self.text, "the spec names no layer"));
        }
        Ok(Resolved { layers, duplicates })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[usize]) -> BTreeSet<usize> {
        v.iter().copied().collect()
    }

    #[test]
    fn parses_every_form() {
        let s = LayerSpec::parse(" 3..6, 9 ,last:2, first:1, 20.., ..1").unwrap();
        let r = s.resolve(24).unwrap();
        let mut want: Vec<usize> = vec![0, 3, 4, 5, 9, 22, 23];
        want.extend(20..24);
        assert_eq!(r.layers, want.into_iter().collect::<BTreeSet<_>>());
        assert_eq!(r.duplicates, set(&[0, 22, 23]));
    }

    #[test]
    fn ranges_are_half_open() {
        let r = LayerSpec::parse("3..29").unwrap().resolve(36).unwrap();
        assert_eq!(r.layers.len(), 26);
        assert!(r.layers.contains(&3) && r.layers.contains(&28) && !r.layers.contains(&29));
    }

    #[test]
    fn rejects_out_of_range_layer() {
        let e = LayerSpec::parse("30").unwrap().resolve(30).unwrap_err();
        assert!(e.to_string().contains("layer 30 is out of range"), "{e}");
        let e = LayerSpec::parse("25..31").unwrap().resolve(30).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        let e = LayerSpec::parse("last:31")
            .unwrap()
            .resolve(30)
            .unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    #[test]
    fn rejects_spec_naming_nothing() {
        for s in ["5..5", "last:0", "first:0"] {
            let e = LayerSpec::parse(s).unwrap().resolve(10).unwrap_err();
            assert!(e.to_string().contains("names no layer"), "{s}: {e}");
        }
        assert!(LayerSpec::parse("  ").is_err());
    }

    #[test]
    fn rejects_malformed_items() {
        for s in ["a", "3..x", "-1", "1,,2", "4..2", "2..=5", "mid:3", "1.5"] {
            assert!(LayerSpec::parse(s).is_err(), "{s} should not parse");
        }
        let e = LayerSpec::parse("2..=5").unwrap_err();
        assert!(e.to_string().contains("half-open"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn resolved_layers_are_always_in_range(
            n in 1usize..80,
            items in proptest::collection::vec((0usize..100, 0usize..100, 0u8..4), 1..6),
        ) {
            let text: Vec<String> = items.iter().map(|&(a, b, kind)| match kind {
                0 => format!("{a}"),
                1 => format!("{}..{}", a.min(b), a.max(b)),
                2 => format!("last:{a}"),
                _ => format!("first:{b}"),
            }).collect();
            let spec = LayerSpec::parse(&text.join(",")).unwrap();
            if let Ok(r) = spec.resolve(n) {
                proptest::prop_assert!(!r.layers.is_empty());
                proptest::prop_assert!(r.layers.iter().all(|&i| i < n));
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,40}", n in 0usize..50) {
            if let Ok(spec) = LayerSpec::parse(&text) {
                let _ = spec.resolve(n);
            }
        }
    }
}
