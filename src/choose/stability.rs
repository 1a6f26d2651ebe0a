//! How stable a choice of layers is when the calibration text changes (issue 15): the same
//! criterion scored on K resamples of the calibration windows, each layer's score as mean ± sd,
//! how often each layer lands in the chosen set, and how much the chosen sets overlap.

use super::strategy::{choose, Amount, Protect};
use crate::arch::ParamCounts;
use crate::error::{Error, Result};
use crate::score::LayerScores;
use serde::{Deserialize, Serialize};

/// Jaccard overlap `|a ∩ b| / |a ∪ b|` of two layer sets (1 when both are empty).
pub fn jaccard(a: &[usize], b: &[usize]) -> f64 {
    let inter = a.iter().filter(|x| b.contains(x)).count();
    let union = a.len() + b.len() - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// The layers each set of scores chooses at `k` removed, in the criterion's form.
pub fn chosen_sets(
    resampled: &[LayerScores],
    k: usize,
    contiguous: bool,
    protect: Protect,
    counts: &ParamCounts,
) -> Result<Vec<Vec<usize>>> {
    resampled
        .iter()
        .map(|s| {
            Ok(choose(s, Amount::Layers(k), contiguous, protect, counts)?
                .removal
                .removed())
        })
        .collect()
}

/// How often resampled calibration text picks the same layers as the full calibration set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChoiceStability {
    pub resamples: usize,
    /// Share of resamples that choose exactly the same layers.
    pub same: f64,
    /// Mean Jaccard overlap of each resample's choice with the chosen layers.
    pub overlap: f64,
}

impl ChoiceStability {
    pub fn of(chosen: &[usize], resampled: &[Vec<usize>]) -> Self {
        let r = resampled.len().max(1) as f64;
        let mut a = chosen.to_vec();
        a.sort_unstable();
        let same = resampled
            .iter()
            .filter(|s| {
                let mut s = s.to_vec();
                s.sort_unstable();
                s == a
            })
            .count();
        ChoiceStability {
            resamples: resampled.len(),
            same: same as f64 / r,
            overlap: resampled.iter().map(|s| jaccard(chosen, s)).sum::<f64>() / r,
        }
    }
}

/// Per-layer scores over resamples, and what each resample chooses at one count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerStability {
    pub resamples: usize,
    /// Layers in each chosen set.
    pub k: usize,
    /// Mean score per layer over the resamples.
    pub mean: Vec<f64>,
    /// Sample standard deviation per layer (0 with one resample).
    pub sd: Vec<f64>,
    /// Share of resamples whose chosen set holds the layer.
    pub frequency: Vec<f64>,
    /// Each resample's chosen set.
    pub chosen: Vec<Vec<usize>>,
    /// Mean Jaccard overlap over all pairs of chosen sets (1 with one resample).
    pub mean_pairwise_overlap: f64,
    /// How the resamples were scored: `reweighted` (the scored windows counted as often as each
    /// resample drew them, no new forward pass) or `rescored` (`greedy`, `healed`: a new scoring
    /// of each resample's windows).
    #[serde(default)]
    pub resampling: Resampling,
}

/// How a criterion's calibration resamples were scored (issue 26).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resampling {
    /// Each resample reweights the windows of the one scoring pass.
    #[default]
    Reweighted,
    /// Each resample's windows were scored again.
    Rescored,
}

impl Resampling {
    pub fn of(metric: crate::score::Metric) -> Self {
        if metric.reweights_resamples() {
            Resampling::Reweighted
        } else {
            Resampling::Rescored
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Resampling::Reweighted => "reweighted",
            Resampling::Rescored => "rescored",
        }
    }
}

impl LayerStability {
    /// Summarises the resampled scores, choosing `k` layers from each.
    pub fn of(
        resampled: &[LayerScores],
        k: usize,
        contiguous: bool,
        protect: Protect,
        counts: &ParamCounts,
    ) -> Result<Self> {
        let Some(first) = resampled.first() else {
            return Err(Error::Invalid(
                "stability needs at least one resample".into(),
            ));
        };
        let n = first.n_layers;
        if resampled.iter().any(|s| s.importance.len() != n) {
            return Err(Error::Invalid(
                "resampled scores disagree on the number of layers".into(),
            ));
        }
        let r = resampled.len() as f64;
        let mean: Vec<f64> = (0..n)
            .map(|l| resampled.iter().map(|s| s.importance[l]).sum::<f64>() / r)
            .collect();
        let sd = (0..n)
            .map(|l| {
                if resampled.len() < 2 {
                    return 0.0;
                }
                let ss: f64 = resampled
                    .iter()
                    .map(|s| (s.importance[l] - mean[l]).powi(2))
                    .sum();
                (ss / (r - 1.0)).sqrt()
            })
            .collect();
        let chosen = chosen_sets(resampled, k, contiguous, protect, counts)?;
        let frequency = (0..n)
            .map(|l| chosen.iter().filter(|c| c.contains(&l)).count() as f64 / r)
            .collect();
        let mut pairs = 0usize;
        let mut total = 0.0;
        for i in 0..chosen.len() {
            for j in i + 1..chosen.len() {
                total += jaccard(&chosen[i], &chosen[j]);
                pairs += 1;
            }
        }
        Ok(LayerStability {
            resamples: resampled.len(),
            k,
            mean,
            sd,
            frequency,
            chosen,
            mean_pairwise_overlap: if pairs == 0 {
                1.0
            } else {
                total / pairs as f64
            },
            resampling: Resampling::of(first.metric),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::Metric;

    fn scores(importance: Vec<f64>) -> LayerScores {
        LayerScores::new("m", Metric::Bi, importance)
    }

    fn counts() -> ParamCounts {
        let layer = crate::arch::LayerParams {
            attention: 10,
            mlp: 10,
            norms: 0,
            other: 0,
        };
        ParamCounts {
            embeddings: 100,
            layers: vec![layer; 6],
            final_norm: 0,
            lm_head: 0,
            other: 0,
        }
    }

    #[test]
    fn jaccard_counts_shared_layers() {
        assert_eq!(jaccard(&[1, 2], &[2, 3]), 1.0 / 3.0);
        assert_eq!(jaccard(&[1, 2], &[2, 1]), 1.0);
        assert_eq!(jaccard(&[], &[]), 1.0);
    }

    #[test]
    fn stability_reports_mean_sd_frequency_and_overlap() {
        // Two resamples agree that layers 4 and 3 matter least; a third puts layer 2 below 3.
        let r = vec![
            scores(vec![9.0, 5.0, 4.0, 2.0, 1.0, 9.0]),
            scores(vec![9.0, 5.0, 4.0, 2.0, 1.0, 9.0]),
            scores(vec![9.0, 5.0, 1.5, 3.0, 1.0, 9.0]),
        ];
        let s = LayerStability::of(&r, 2, false, Protect::default(), &counts()).unwrap();
        assert_eq!(s.chosen, vec![vec![3, 4], vec![3, 4], vec![2, 4]]);
        assert_eq!(s.frequency, vec![0.0, 0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0, 0.0]);
        assert!((s.mean[2] - 9.5 / 3.0).abs() < 1e-12);
        assert!(s.sd[0] == 0.0 && s.sd[2] > 1.0);
        // Pairs: (a, a) = 1, (a, c) = 1/3, (a, c) = 1/3.
        assert!((s.mean_pairwise_overlap - (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        let c = ChoiceStability::of(&[4, 3], &s.chosen);
        assert!((c.same - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.overlap - (2.0 + 1.0 / 3.0) / 3.0).abs() < 1e-12);
    }
}
