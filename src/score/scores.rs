//! Score files: what a criterion measured, on which calibration set. `plan`, `prune --strategy`,
//! plots and reports read these, so nothing re-runs the model to draw a chart.

use serde::{Deserialize, Serialize};

/// A layer-importance criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Angular,
    Bi,
    Minitron,
    Ppl,
    Greedy,
    Healed,
    Last,
}

impl Metric {
    pub const ALL: &'static [Metric] = &[
        Metric::Angular,
        Metric::Bi,
        Metric::Minitron,
        Metric::Ppl,
        Metric::Greedy,
        Metric::Healed,
        Metric::Last,
    ];

    /// The metric named `s`, or a message listing the names.
    pub fn from_name(s: &str) -> std::result::Result<Metric, String> {
        Metric::parse(s).ok_or_else(|| {
            let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
            format!("unknown metric `{s}`; expected one of {}", names.join(", "))
        })
    }

    pub fn parse(s: &str) -> Option<Metric> {
        Some(match s {
            "angular" => Metric::Angular,
            "bi" => Metric::Bi,
            "minitron" => Metric::Minitron,
            "ppl" => Metric::Ppl,
            "greedy" => Metric::Greedy,
            "healed" => Metric::Healed,
            "last" => Metric::Last,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Angular => "angular",
            Metric::Bi => "bi",
            Metric::Minitron => "minitron",
            Metric::Ppl => "ppl",
            Metric::Greedy => "greedy",
            Metric::Healed => "healed",
            Metric::Last => "last",
        }
    }

    /// Whether the criterion needs calibration text and a forward pass.
    pub fn needs_model(self) -> bool {
        self != Metric::Last
    }

    /// Whether a calibration resample is a reweighting of the scored windows (one forward pass
    /// for all resamples) rather than a new scoring of the drawn windows: true for the criteria
    /// that are sums over tokens or windows; `greedy` and `healed` choose each layer after the
    /// previous ones, so a resample changes their path (issue 26).
    pub fn reweights_resamples(self) -> bool {
        !matches!(self, Metric::Greedy | Metric::Healed)
    }

    /// Whether the criterion's natural unit is a contiguous block (angular distance).
    pub fn prefers_blocks(self) -> bool {
        matches!(self, Metric::Angular | Metric::Last)
    }

    /// One line on what the score means, for tables and cards.
    pub fn describe(self) -> &'static str {
        match self {
            Metric::Angular => "angular distance arccos(cos(h_l, h_l+n))/pi between a block's input and output (Gromov et al.)",
            Metric::Bi => "Block Influence, mean 1 - cos(input, output) per layer (ShortGPT)",
            Metric::Minitron => "Block Influence summed per batch, averaged over batches (Minitron / ModelOpt)",
            Metric::Ppl => "calibration perplexity with the layer removed (Shortened LLaMA)",
            Metric::Greedy => "iterative removal of the layer that hurts perplexity least (SLEB)",
            Metric::Healed => "heal-aware: iterative removal of the layer whose removal least-squares healing repairs best (this project)",
            Metric::Last => "baseline: the last layers before the final one",
        }
    }
}

/// The text a criterion was measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub file: String,
    /// Tokens per window.
    pub ctx: usize,
    /// Windows used.
    pub samples: usize,
    /// Tokens skipped at the start of the file, so calibration and evaluation never overlap.
    pub offset_tokens: usize,
    /// `last` (the last token of each window) or `all`.
    pub tokens: String,
}

/// One step of greedy removal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GreedyStep {
    pub layer: usize,
    /// Calibration perplexity after removing this layer and all before it.
    pub ppl: f64,
}

/// One step of heal-aware removal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealedStep {
    pub layer: usize,
    /// The summed relative stream error left after healing every block removed so far.
    pub cost: f64,
}

/// What a criterion measured for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerScores {
    pub model: String,
    pub metric: Metric,
    pub n_layers: usize,
    pub calibration: Option<Calibration>,
    /// Per layer; higher means more important (removed last).
    pub importance: Vec<f64>,
    /// Angular distances `d[n-1][l]` for block sizes `n = 1..=max_n`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub angular: Option<Vec<Vec<f64>>>,
    /// Greedy removal order with the perplexity after each step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greedy: Option<Vec<GreedyStep>>,
    /// Heal-aware removal order with the cost after each step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healed: Option<Vec<HealedStep>>,
    /// Calibration perplexity of the whole model (ppl and greedy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_ppl: Option<f64>,
}

impl LayerScores {
    /// The order in which individual layers would be removed: greedy's own order, else by
    /// ascending importance (ties to the later layer, which tends to matter less).
    pub fn removal_order(&self) -> Vec<usize> {
        let steps = self
            .greedy
            .as_ref()
            .map(|g| g.iter().map(|s| s.layer).collect::<Vec<_>>())
            .or_else(|| {
                self.healed
                    .as_ref()
                    .map(|h| h.iter().map(|s| s.layer).collect())
            });
        if let Some(steps) = steps {
            let mut order = steps;
            for l in (0..self.n_layers).rev() {
                if !order.contains(&l) {
                    order.push(l);
                }
            }
            return order;
        }
        let mut order: Vec<usize> = (0..self.n_layers).collect();
        order.sort_by(|&a, &b| {
            self.importance[a]
                .partial_cmp(&self.importance[b])
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(b.cmp(&a))
        });
        order
    }

    /// The `last` baseline: removing the last layers before the final one first.
    pub fn last_baseline(model: &str, n_layers: usize) -> Self {
        // The final layer matters most; below it, later layers matter less.
        let importance = (0..n_layers)
            .map(|l| {
                if l + 1 == n_layers {
                    n_layers as f64
                } else {
                    -(l as f64)
                }
            })
            .collect();
        Self::new(model, Metric::Last, importance)
    }

    /// Scores holding only an importance per layer: no calibration, distances or steps.
    pub fn new(model: &str, metric: Metric, importance: Vec<f64>) -> Self {
        LayerScores {
            model: model.to_string(),
            metric,
            n_layers: importance.len(),
            calibration: None,
            importance,
            angular: None,
            greedy: None,
            healed: None,
            baseline_ppl: None,
        }
    }
}

/// The per-layer values a plot or a stability summary shows: for `ppl`, the rise in mean NLL
/// `ln(ppl without the layer / dense ppl)` in nats (perplexities span orders of magnitude:
/// removing layer 0 often multiplies it by 1000); for the others, the score itself.
pub fn shown_values(s: &LayerScores) -> (Vec<f64>, String) {
    match (s.metric, s.baseline_ppl) {
        (Metric::Ppl, Some(base)) => (
            s.importance.iter().map(|p| (p / base).ln()).collect(),
            "rise in calibration NLL without the layer, nats".to_string(),
        ),
        _ => (
            s.importance.clone(),
            format!("{} score (higher = more important)", s.metric.name()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_baseline_removes_layers_before_the_final_one() {
        let s = LayerScores::last_baseline("m", 6);
        assert_eq!(&s.removal_order()[..3], &[4, 3, 2]);
        assert_eq!(*s.removal_order().last().unwrap(), 5);
    }

    #[test]
    fn greedy_order_comes_first() {
        let mut s = LayerScores::last_baseline("m", 4);
        s.greedy = Some(vec![GreedyStep {
            layer: 1,
            ppl: 10.0,
        }]);
        assert_eq!(s.removal_order(), vec![1, 3, 2, 0]);
    }
}
