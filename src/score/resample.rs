//! Calibration windows drawn again with replacement, for the stability of scores and choices
//! (`score --resamples`, `sweep --resamples`, issue 15). Seeded like the evaluation bootstrap, so
//! a study repeats exactly.

use crate::eval::bootstrap::SplitMix64;

/// `k` resamples of `windows`, each as many windows as the original, drawn with replacement.
/// The draws depend only on `seed`, `k` and the number of windows.
pub fn resample_windows(windows: &[Vec<u32>], k: usize, seed: u64) -> Vec<Vec<Vec<u32>>> {
    let mut rng = SplitMix64::new(seed);
    (0..k)
        .map(|_| {
            (0..windows.len())
                .map(|_| windows[rng.below(windows.len())].clone())
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
