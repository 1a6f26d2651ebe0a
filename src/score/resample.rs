//! Calibration windows drawn again with replacement, for the stability of scores and choices
//! (`score --resamples`, `sweep --resamples`, issue 15). Seeded like the evaluation bootstrap, so
//! a study repeats exactly.
//!
//! A resample need not run the model again (issue 26): the criteria that are sums over tokens
//! (`angular`, `bi`, `minitron`, and `ppl`'s per-window NLL sums) keep each window's share of
//! those sums ([`WindowStats`]), and a resample is then a reweighting of the windows by how often
//! it drew each. `greedy` and `healed` choose their next layer from the previous choices, so a
//! resample changes the path and they score each resample with new forward passes.

use super::scores::LayerScores;
use crate::error::{Error, Result};
use crate::eval::bootstrap::SplitMix64;

/// The most calibration resamples a study takes: each costs a scoring of every criterion (or, for
/// the reweighted criteria, a pass over the window statistics), and a stability summary stops
/// changing long before this.
pub const MAX_RESAMPLES: usize = 10_000;

/// Refuses a resample count of 0 or above [`MAX_RESAMPLES`], naming the option `key`.
pub fn check_resamples(k: usize, key: &str) -> Result<()> {
    if k == 0 {
        return Err(Error::Invalid(format!("`{key}` must be at least 1")));
    }
    if k > MAX_RESAMPLES {
        return Err(Error::Invalid(format!(
            "`{key}` must be at most {MAX_RESAMPLES}; got {k}"
        )));
    }
    Ok(())
}

/// `k` resamples of `n` windows, as window indices, each as many as the original, drawn with
/// replacement. The draws depend only on `seed`, `k` and `n`.
pub fn resample_draws(n: usize, k: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = SplitMix64::new(seed);
    (0..k)
        .map(|_| (0..n).map(|_| rng.below(n)).collect())
        .collect()
}

/// `k` resamples of `windows`: the windows [`resample_draws`] picks.
pub fn resample_windows(windows: &[Vec<u32>], k: usize, seed: u64) -> Vec<Vec<Vec<u32>>> {
    resample_draws(windows.len(), k, seed)
        .into_iter()
        .map(|d| d.into_iter().map(|i| windows[i].clone()).collect())
        .collect()
}

/// How a criterion's per-window sums become scores.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reduce {
    /// Mean over tokens per layer (`bi`).
    Bi,
    /// Sum over tokens per layer, divided by the number of batches (`minitron`).
    Minitron { batches: usize },
    /// Mean over tokens per block `d[n-1][ℓ]`, stored row after row (`angular`).
    Angular { n_layers: usize, max_n: usize },
    /// `exp(NLL / tokens)`: entry 0 the whole model, entry `1 + ℓ` with layer ℓ removed (`ppl`).
    Ppl,
}

/// Each calibration window's share of a criterion's sums, from one scoring pass.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowStats {
    reduce: Reduce,
    /// Per window, one sum per entry of the criterion.
    sums: Vec<Vec<f64>>,
    /// Per window, the tokens behind its sums.
    tokens: Vec<u64>,
}

impl WindowStats {
    pub(crate) fn bi(sums: Vec<Vec<f64>>, tokens: Vec<u64>) -> Self {
        WindowStats {
            reduce: Reduce::Bi,
            sums,
            tokens,
        }
    }

    pub(crate) fn minitron(sums: Vec<Vec<f64>>, tokens: Vec<u64>, batches: usize) -> Self {
        WindowStats {
            reduce: Reduce::Minitron { batches },
            sums,
            tokens,
        }
    }

    pub(crate) fn angular(
        n_layers: usize,
        max_n: usize,
        sums: Vec<Vec<f64>>,
        tokens: Vec<u64>,
    ) -> Self {
        WindowStats {
            reduce: Reduce::Angular { n_layers, max_n },
            sums,
            tokens,
        }
    }

    pub(crate) fn ppl(sums: Vec<Vec<f64>>, tokens: Vec<u64>) -> Self {
        WindowStats {
            reduce: Reduce::Ppl,
            sums,
            tokens,
        }
    }

    /// Windows the statistics cover.
    pub fn windows(&self) -> usize {
        self.sums.len()
    }

    /// The scores of the windows `draws` picks (indices, repeats allowed): `template`'s model,
    /// metric and calibration with the criterion's figures recomputed from the drawn windows.
    pub fn scores(&self, template: &LayerScores, draws: &[usize]) -> Result<LayerScores> {
        let mut weight = vec![0u64; self.windows()];
        for &d in draws {
            *weight.get_mut(d).ok_or_else(|| {
                Error::Invalid(format!("resample draws window {d} of {}", self.windows()))
            })? += 1;
        }
        self.weighted(template, &weight)
    }

    /// The scores with every window counted once.
    pub fn all(&self, template: &LayerScores) -> Result<LayerScores> {
        self.weighted(template, &vec![1; self.windows()])
    }

    fn weighted(&self, template: &LayerScores, weight: &[u64]) -> Result<LayerScores> {
        let width = self.sums.first().map_or(0, Vec::len);
        let mut total = vec![0f64; width];
        let mut tokens = 0u64;
        for ((row, &t), &w) in self.sums.iter().zip(&self.tokens).zip(weight) {
            if w == 0 {
                continue;
            }
            for (a, &s) in total.iter_mut().zip(row) {
                *a += w as f64 * s;
            }
            tokens += w * t;
        }
        let per_token = |s: f64| s / tokens.max(1) as f64;
        let mut out = template.clone();
        match self.reduce {
            Reduce::Bi => out.importance = total.iter().map(|&s| per_token(s)).collect(),
            Reduce::Minitron { batches } => {
                out.importance = total.iter().map(|&s| s / batches.max(1) as f64).collect()
            }
            Reduce::Angular { n_layers, max_n } => {
                let mut d = Vec::with_capacity(max_n);
                let mut at = 0;
                for n in 1..=max_n {
                    let len = n_layers + 1 - n;
                    let row = total.get(at..at + len).ok_or_else(|| {
                        Error::Invalid("angular window sums are too short".into())
                    })?;
                    d.push(row.iter().map(|&s| per_token(s)).collect::<Vec<_>>());
                    at += len;
                }
                out.importance = d.first().cloned().unwrap_or_default();
                out.angular = Some(d);
            }
            Reduce::Ppl => {
                let ppl: Vec<f64> = total.iter().map(|&s| per_token(s).exp()).collect();
                out.baseline_ppl = ppl.first().copied();
                out.importance = ppl.get(1..).unwrap_or_default().to_vec();
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::Metric;

    #[test]
    fn resamples_are_seeded_draws_of_the_original_windows() {
        let w: Vec<Vec<u32>> = (0..8).map(|i| vec![i, i + 1]).collect();
        let a = resample_windows(&w, 5, 3);
        assert_eq!(a, resample_windows(&w, 5, 3));
        assert_ne!(a, resample_windows(&w, 5, 4));
        assert_eq!(a.len(), 5);
        for r in &a {
            assert_eq!(r.len(), 8);
            assert!(r.iter().all(|x| w.contains(x)));
        }
        // With 8 draws from 8 windows, some resample repeats a window.
        assert!(a
            .iter()
            .any(|r| (1..r.len()).any(|i| r[..i].contains(&r[i]))));
        // The windows are the ones the index draws name.
        let d = resample_draws(8, 5, 3);
        for (r, d) in a.iter().zip(&d) {
            assert!(r.iter().zip(d).all(|(x, &i)| *x == w[i]));
        }
    }

    #[test]
    fn resample_counts_are_bounded() {
        assert!(check_resamples(1, "resamples").is_ok());
        assert!(check_resamples(MAX_RESAMPLES, "resamples").is_ok());
        let err = check_resamples(usize::MAX, "resamples")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`resamples` must be at most 10000"), "{err}");
        assert!(check_resamples(0, "resamples").is_err());
    }

    #[test]
    fn reweighting_counts_each_drawn_window_as_often_as_it_is_drawn() {
        // Two windows of 2 and 4 tokens; layer sums (1, 2) and (3, 8).
        let stats = WindowStats::bi(vec![vec![1.0, 2.0], vec![3.0, 8.0]], vec![2, 4]);
        let t = LayerScores::new("m", Metric::Bi, vec![0.0; 2]);
        assert_eq!(
            stats.all(&t).unwrap().importance,
            vec![4.0 / 6.0, 10.0 / 6.0]
        );
        let s = stats.scores(&t, &[1, 1]).unwrap();
        assert_eq!(s.importance, vec![6.0 / 8.0, 16.0 / 8.0]);
        assert!(stats.scores(&t, &[2]).is_err());
        let ppl = WindowStats::ppl(vec![vec![2.0, 4.0], vec![6.0, 4.0]], vec![2, 2]);
        let s = ppl
            .scores(&LayerScores::new("m", Metric::Ppl, vec![0.0]), &[0, 0])
            .unwrap();
        assert_eq!(s.baseline_ppl, Some(1f64.exp()));
        assert_eq!(s.importance, vec![2f64.exp()]);
    }
}
