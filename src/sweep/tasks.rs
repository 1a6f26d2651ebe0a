//! Zero-shot accuracy as a sweep column (`sweep --tasks`, issue 15): each distinct removal is
//! scored on the questions as `eval --tasks` scores them, and acc / acc_norm get 95% intervals by
//! the same seeded bootstrap, over questions instead of windows.

use crate::eval::{Bootstrap, Interval, TaskReport};
use serde::{Deserialize, Serialize};

/// Accuracy on the task file for one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCell {
    /// Questions scored.
    pub n: usize,
    pub acc: f64,
    pub acc_ci: Interval,
    pub acc_norm: f64,
    pub acc_norm_ci: Interval,
}

impl TaskCell {
    /// The accuracies of `report` with bootstrap intervals over its questions.
    pub fn from_report(report: &TaskReport, boot: &Bootstrap) -> Self {
        let hit: Vec<f64> = report
            .items
            .iter()
            .map(|i| f64::from(u8::from(i.pred == i.gold)))
            .collect();
        let hit_norm: Vec<f64> = report
            .items
            .iter()
            .map(|i| f64::from(u8::from(i.pred_norm == i.gold)))
            .collect();
        TaskCell {
            n: report.n,
            acc: report.acc,
            acc_ci: mean_interval(boot, &hit),
            acc_norm: report.acc_norm,
            acc_norm_ci: mean_interval(boot, &hit_norm),
        }
    }
}

/// The bootstrap interval of the mean of `values`.
pub fn mean_interval(boot: &Bootstrap, values: &[f64]) -> Interval {
    boot.interval(values.len(), |c| {
        let (mut s, mut n) = (0.0, 0.0);
        for (v, &k) in values.iter().zip(c) {
            s += v * k as f64;
            n += k as f64;
        }
        s / n.max(1.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_intervals_cover_the_mean_and_shrink_with_more_questions() {
        let boot = Bootstrap::default();
        let small: Vec<f64> = (0..20).map(|i| f64::from(u8::from(i % 4 != 0))).collect();
        let large: Vec<f64> = (0..400).map(|i| f64::from(u8::from(i % 4 != 0))).collect();
        let (a, b) = (mean_interval(&boot, &small), mean_interval(&boot, &large));
        assert!(a[0] < 0.75 && 0.75 < a[1] && b[0] < 0.75 && 0.75 < b[1]);
        assert!(b[1] - b[0] < (a[1] - a[0]) / 2.0, "{a:?} {b:?}");
        // sqrt(0.75 × 0.25 / 400) = 0.0217; the interval is about ±1.96 of that.
        assert!(((b[1] - b[0]) / 2.0 - 1.96 * 0.0217).abs() < 0.006, "{b:?}");
    }
}
