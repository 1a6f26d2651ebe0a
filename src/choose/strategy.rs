//! From scores to a [`Removal`]: how many layers (a count, a parameter budget or a ratio), which
//! ones (individually by importance, or a contiguous block), and which are protected.

use crate::arch::ParamCounts;
use crate::error::{Error, Result};
use crate::score::{LayerScores, Metric};
use crate::select::Removal;
use serde::Serialize;

/// Layers that must stay: the first and last K.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Protect {
    pub first: usize,
    pub last: usize,
}

impl Protect {
    /// Parses `first:K,last:K` (either part optional).
    pub fn parse(s: &str) -> Result<Self> {
        let mut p = Protect::default();
        for part in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            let bad = || {
                Error::Invalid(format!(
                    "`protect` `{s}`: expected `first:K`, `last:K` or both, comma-separated"
                ))
            };
            let (k, v) = part.split_once(':').ok_or_else(bad)?;
            let v: usize = v.trim().parse().map_err(|_| bad())?;
            match k.trim() {
                "first" => p.first = v,
                "last" => p.last = v,
                _ => return Err(bad()),
            }
        }
        Ok(p)
    }

    pub fn covers(&self, layer: usize, n_layers: usize) -> bool {
        layer < self.first || layer + self.last >= n_layers
    }
}

/// How much to remove.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Amount {
    /// Exactly N layers.
    Layers(usize),
    /// As few layers as needed to reach at most P parameters.
    TargetParams(u64),
    /// A fraction of the layers (rounded to the nearest whole layer).
    Ratio(f64),
}

/// A choice and the numbers that justify it.
#[derive(Debug, Clone, Serialize)]
pub struct Selection {
    #[serde(skip)]
    pub removal: Removal,
    pub metric: Metric,
    pub contiguous: bool,
    pub protect: Protect,
    /// `(layer, score)` of each removed layer; for blocks, the block's distance.
    pub justification: Vec<(usize, f64)>,
    /// For a contiguous choice: start, size and the block's score.
    pub block: Option<(usize, usize, f64)>,
}

/// Chooses the layers to remove.
pub fn choose(
    scores: &LayerScores,
    amount: Amount,
    contiguous: bool,
    protect: Protect,
    counts: &ParamCounts,
) -> Result<Selection> {
    let n = scores.n_layers;
    let free = (0..n).filter(|&l| !protect.covers(l, n)).count();
    let fixed = |k: usize| -> Result<usize> {
        if k == 0 {
            return Err(Error::Invalid(
                "nothing to remove: the amount asked for (`remove`, `ratio` or `target_params`) is 0 layers".into(),
            ));
        }
        if k > free {
            return Err(Error::Invalid(format!(
                "cannot remove {k} layers: {free} of {n} are not protected (`protect` first:{},last:{}); ask for fewer with `remove` or `ratio`",
                protect.first, protect.last
            )));
        }
        Ok(k)
    };
    if contiguous {
        let k_for = |k: usize| best_block(scores, k, protect);
        let k = match amount {
            Amount::Layers(k) => fixed(k)?,
            Amount::Ratio(r) => fixed(ratio_layers(r, n)?)?,
            Amount::TargetParams(p) => (1..=free)
                .find(|&k| k_for(k).is_some_and(|(s, _)| params_without(counts, s..s + k) <= p))
                .ok_or_else(|| unreachable_target(p, counts))?,
        };
        let (start, score) = k_for(k).ok_or_else(|| {
            Error::Invalid(format!(
                "no block of {k} contiguous layers avoids the protected layers"
            ))
        })?;
        let removal = Removal::from_layers(n, start..start + k)?;
        let justification = (start..start + k)
            .map(|l| (l, scores.importance[l]))
            .collect();
        return Ok(Selection {
            removal,
            metric: scores.metric,
            contiguous,
            protect,
            justification,
            block: Some((start, k, score)),
        });
    }
    let order: Vec<usize> = scores
        .removal_order()
        .into_iter()
        .filter(|&l| !protect.covers(l, n))
        .collect();
    let k = match amount {
        Amount::Layers(k) => fixed(k)?,
        Amount::Ratio(r) => fixed(ratio_layers(r, n)?)?,
        Amount::TargetParams(p) => {
            let mut total = counts.total();
            let mut k = 0;
            for &l in &order {
                if total <= p {
                    break;
                }
                total -= counts.layers.get(l).map_or(0, |x| x.total());
                k += 1;
            }
            if total > p {
                return Err(unreachable_target(p, counts));
            }
            fixed(k)?
        }
    };
    let chosen: Vec<usize> = order[..k].to_vec();
    let justification = chosen.iter().map(|&l| (l, scores.importance[l])).collect();
    Ok(Selection {
        removal: Removal::from_layers(n, chosen)?,
        metric: scores.metric,
        contiguous,
        protect,
        justification,
        block: None,
    })
}

fn ratio_layers(r: f64, n: usize) -> Result<usize> {
    if !(r > 0.0 && r < 1.0) {
        return Err(Error::Invalid(format!(
            "`ratio` {r}: must be a fraction of the layers between 0 and 1"
        )));
    }
    Ok((r * n as f64).round() as usize)
}

fn params_without(counts: &ParamCounts, block: std::ops::Range<usize>) -> u64 {
    counts.total()
        - block
            .map(|l| counts.layers.get(l).map_or(0, |x| x.total()))
            .sum::<u64>()
}

fn unreachable_target(p: u64, counts: &ParamCounts) -> Error {
    Error::Invalid(format!(
        "`target_params` {p} cannot be reached by removing unprotected layers (the model has {} parameters, {} outside its layers)",
        counts.total(),
        counts.total() - counts.layers_total()
    ))
}

/// The best block of `k` contiguous unprotected layers: for angular distance the smallest
/// `d(ℓ, k)`, otherwise the smallest summed importance. Returns `(start, score)`.
pub fn best_block(scores: &LayerScores, k: usize, protect: Protect) -> Option<(usize, f64)> {
    let n = scores.n_layers;
    if k == 0 || k > n {
        return None;
    }
    let block_score = |s: usize| -> Option<f64> {
        if let Some(d) = &scores.angular {
            return d.get(k - 1).and_then(|row| row.get(s)).copied();
        }
        Some((s..s + k).map(|l| scores.importance[l]).sum())
    };
    (0..=n - k)
        .filter(|&s| (s..s + k).all(|l| !protect.covers(l, n)))
        .filter_map(|s| block_score(s).map(|v| (s, v)))
        .min_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::LayerParams;

    fn scores(importance: Vec<f64>) -> LayerScores {
        LayerScores::new("m", Metric::Bi, importance)
    }

    fn counts(n: usize) -> ParamCounts {
        ParamCounts {
            embeddings: 100,
            layers: vec![
                LayerParams {
                    attention: 10,
                    mlp: 10,
                    norms: 0,
                    other: 0
                };
                n
            ],
            final_norm: 0,
            lm_head: 0,
            other: 0,
        }
    }

    /// [`choose`] over [`counts`] with the scores' layer count.
    fn pick(
        s: &LayerScores,
        amount: Amount,
        contiguous: bool,
        protect: Protect,
    ) -> Result<Selection> {
        choose(s, amount, contiguous, protect, &counts(s.n_layers))
    }

    #[test]
    fn picks_least_important_layers_respecting_protection() {
        let s = scores(vec![0.1, 0.5, 0.2, 0.3, 0.05, 0.9]);
        let sel = pick(&s, Amount::Layers(2), false, Protect { first: 1, last: 1 }).unwrap();
        assert_eq!(sel.removal.removed(), vec![2, 4]);
    }

    #[test]
    fn target_params_removes_just_enough() {
        let s = scores(vec![0.1, 0.5, 0.2, 0.3, 0.05, 0.9]);
        // 100 + 6*20 = 220; reaching 180 needs two layers.
        let sel = pick(&s, Amount::TargetParams(180), false, Protect::default()).unwrap();
        assert_eq!(sel.removal.removed(), vec![0, 4]);
        assert!(pick(&s, Amount::TargetParams(50), false, Protect::default()).is_err());
    }

    #[test]
    fn contiguous_uses_angular_distance_for_the_block_size() {
        let mut s = scores(vec![0.0; 6]);
        s.metric = Metric::Angular;
        s.angular = Some(vec![vec![0.3; 6], vec![0.4, 0.2, 0.1, 0.3, 0.5]]);
        let sel = pick(&s, Amount::Layers(2), true, Protect::default()).unwrap();
        assert_eq!(sel.removal.removed(), vec![2, 3]);
        let sel = pick(&s, Amount::Layers(2), true, Protect { first: 0, last: 3 }).unwrap();
        assert_eq!(sel.removal.removed(), vec![1, 2]);
    }

    #[test]
    fn protect_parses_and_limits() {
        assert_eq!(
            Protect::parse("first:2,last:1").unwrap(),
            Protect { first: 2, last: 1 }
        );
        assert!(Protect::parse("middle:2").is_err());
        let s = scores(vec![0.1; 4]);
        let e = pick(&s, Amount::Layers(3), false, Protect { first: 1, last: 1 }).unwrap_err();
        assert!(e.to_string().contains("2 of 4 are not protected"), "{e}");
    }
}
