//! The sweep's two small grammars: strategy names (`angular`, `bi:block`, …) and the numbers of
//! layers to remove (`0..13`, half-open like layer ranges, or `2,4,8`).

use crate::error::{Error, Result};
use crate::score::Metric;

/// A criterion and whether it removes one contiguous block or individual layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrategySpec {
    pub metric: Metric,
    pub contiguous: bool,
}

impl StrategySpec {
    /// `METRIC` uses the criterion's own form (a block for `angular`, layers for the others);
    /// `METRIC:block` or `METRIC:layers` chooses.
    pub fn parse(s: &str) -> Result<Self> {
        let (name, form) = match s.split_once(':') {
            Some((n, f)) => (n.trim(), Some(f.trim())),
            None => (s.trim(), None),
        };
        let metric = Metric::parse(name).ok_or_else(|| {
            let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
            Error::Invalid(format!(
                "unknown strategy `{s}`; expected one of {} (optionally with :block or :layers)",
                names.join(", ")
            ))
        })?;
        let contiguous = match form {
            None => metric.prefers_blocks(),
            Some("block") => true,
            Some("layers") => false,
            Some(f) => {
                return Err(Error::Invalid(format!(
                    "strategy `{s}`: unknown form `{f}`; expected `block` or `layers`"
                )))
            }
        };
        Ok(StrategySpec { metric, contiguous })
    }

    /// The name used in tables and plots: the metric, with the form when it is not the default.
    pub fn label(&self) -> String {
        if self.contiguous == self.metric.prefers_blocks() {
            self.metric.name().to_string()
        } else if self.contiguous {
            format!("{}:block", self.metric.name())
        } else {
            format!("{}:layers", self.metric.name())
        }
    }
}

/// Parses the numbers of layers to remove: `A..B` (half-open, as layer ranges are) or a
/// comma-separated list; each below `n_layers`. Sorted, without repeats.
pub fn parse_counts(s: &str, n_layers: usize) -> Result<Vec<usize>> {
    let bad = |why: &str| Error::Invalid(format!("`remove` `{s}`: {why}"));
    let num = |t: &str| -> Result<usize> {
        t.trim()
            .parse::<usize>()
            .map_err(|_| bad(&format!("`{}` is not a whole number", t.trim())))
    };
    let mut out: Vec<usize> = Vec::new();
    for part in s.split(',') {
        if let Some((a, b)) = part.split_once("..=") {
            let b = num(b)?;
            return Err(bad(&format!(
                "inclusive ranges are refused: ranges are half-open everywhere; write {}..{} for {}..={b}",
                a.trim(),
                b + 1,
                a.trim()
            )));
        } else if let Some((a, b)) = part.split_once("..") {
            let (a, b) = (num(a)?, num(b)?);
            if a >= b {
                return Err(bad(&format!(
                    "{a}..{b} is empty (ranges are half-open; use {a}..={b} to include {b})"
                )));
            }
            out.extend(a..b);
        } else {
            out.push(num(part)?);
        }
    }
    out.sort_unstable();
    out.dedup();
    if let Some(&max) = out.last() {
        if max >= n_layers {
            return Err(bad(&format!(
                "cannot remove {max} of {n_layers} layers; at least one must stay"
            )));
        }
    }
    if out.is_empty() {
        return Err(bad("no counts given"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_range_conventions() {
        assert_eq!(parse_counts("0..4", 30).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_counts("8,2,4,2", 30).unwrap(), vec![2, 4, 8]);
        assert_eq!(parse_counts("1..3,6", 30).unwrap(), vec![1, 2, 6]);
    }

    #[test]
    fn bad_counts_are_refused_with_the_reason() {
        let e = |s: &str| parse_counts(s, 10).unwrap_err().to_string();
        assert!(e("3..3").contains("half-open"), "{}", e("3..3"));
        assert!(e("0..11").contains("at least one must stay"));
        assert!(e("0..=3").contains("write 0..4"), "{}", e("0..=3"));
        assert!(e("x").contains("not a whole number"));
        assert!(e("5..2").contains("empty"));
    }

    #[test]
    fn strategies_default_to_their_papers_form() {
        let a = StrategySpec::parse("angular").unwrap();
        assert!(a.contiguous && a.label() == "angular");
        let b = StrategySpec::parse("bi").unwrap();
        assert!(!b.contiguous && b.label() == "bi");
        let bb = StrategySpec::parse("bi:block").unwrap();
        assert!(bb.contiguous && bb.label() == "bi:block");
        assert!(StrategySpec::parse("angular:layers").unwrap().label() == "angular:layers");
        assert!(StrategySpec::parse("nope")
            .unwrap_err()
            .to_string()
            .contains("unknown strategy"));
        assert!(StrategySpec::parse("bi:blob").is_err());
    }
}
