//! Choosing the best removal at each count on the validation slice, and saying whether it can be
//! told apart from the runner-up on the evaluation slice (issue 15). The choice is made on text
//! that does not measure it, so the evaluation figure of the winner is not biased by the choice.

use super::SweepRow;
use crate::eval::{Difference, Interval};
use serde::{Deserialize, Serialize};

/// The best choice at one count: lowest perplexity on the validation slice (healed, when
/// healed), with its figures on the evaluation slice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Best {
    pub strategy: String,
    pub drop: String,
    /// Evaluation perplexity (healed, when healed).
    pub perplexity: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity_ci: Option<Interval>,
    /// Validation perplexity, the figure the choice was made on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_perplexity: Option<f64>,
    /// The next-best strategy whose removal differs, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_up: Option<RunnerUp>,
}

/// The second choice at a count and how far it is from the best.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunnerUp {
    pub strategy: String,
    pub drop: String,
    /// Evaluation perplexity (healed, when healed).
    pub perplexity: f64,
    pub select_perplexity: Option<f64>,
    /// Evaluation perplexity of the runner-up minus the best's, with a paired interval over the
    /// evaluation windows. When the interval holds 0 the two cannot be told apart.
    pub difference: Difference,
}

/// The figure a row is chosen by: validation perplexity (healed, when healed), or for a sweep
/// written before validation slices existed, evaluation perplexity.
pub fn selection_key(r: &SweepRow) -> f64 {
    match (&r.healed, r.healed_select_perplexity, r.select_perplexity) {
        (Some(_), Some(h), _) => h,
        (Some(h), None, None) => h.perplexity,
        (_, _, Some(s)) => s,
        (None, _, None) => r.measured.perplexity,
    }
}

/// The row chosen at `k` layers removed (none at 0), by [`selection_key`]; ties go to the row
/// listed first.
pub fn best_at(rows: &[SweepRow], k: usize) -> Option<&SweepRow> {
    rows.iter()
        .filter(|r| r.k == k && r.k > 0)
        .min_by(|a, b| selection_key(a).total_cmp(&selection_key(b)))
}

/// The best row at `k` among those whose removal differs from `best`'s.
pub fn runner_up_at<'a>(rows: &'a [SweepRow], best: &SweepRow) -> Option<&'a SweepRow> {
    rows.iter()
        .filter(|r| r.k == best.k && r.removed != best.removed)
        .min_by(|a, b| selection_key(a).total_cmp(&selection_key(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::Measured;

    fn row(strategy: &str, removed: Vec<usize>, eval_ppl: f64, select_ppl: f64) -> SweepRow {
        SweepRow {
            strategy: strategy.into(),
            k: removed.len(),
            drop: String::new(),
            removed,
            params: 0,
            params_kept: 1.0,
            measured: Measured::point(eval_ppl, 0.1, 0.9),
            select_perplexity: Some(select_ppl),
            ppl_vs_dense: None,
            healed: None,
            healed_select_perplexity: None,
            healed_by: Default::default(),
            heal_residuals: None,
            heal_choices: None,
            finalists: None,
            task_metrics: Vec::new(),
            healed_task_metrics: Vec::new(),
            healed_by_task_metrics: Default::default(),
            stability: None,
        }
    }

    #[test]
    fn the_choice_is_made_on_the_validation_slice_not_the_evaluation_slice() {
        // On the evaluation slice `bi` looks best (20 < 25); on the validation slice `angular`
        // does (30 < 31). The choice must follow validation.
        let rows = vec![
            row("angular", vec![3, 4], 25.0, 30.0),
            row("bi", vec![2, 5], 20.0, 31.0),
            row("last", vec![4, 5], 40.0, 45.0),
        ];
        let best = best_at(&rows, 2).unwrap();
        assert_eq!(best.strategy, "angular");
        let by_eval = rows
            .iter()
            .min_by(|a, b| a.measured.perplexity.total_cmp(&b.measured.perplexity))
            .unwrap();
        assert_ne!(by_eval.strategy, best.strategy);
        assert_eq!(runner_up_at(&rows, best).unwrap().strategy, "bi");
    }

    #[test]
    fn the_runner_up_removes_different_layers_and_healed_rows_use_healed_validation() {
        let mut rows = vec![
            row("angular", vec![3, 4], 25.0, 30.0),
            row("bi:block", vec![3, 4], 25.0, 30.0),
            row("ppl", vec![1, 4], 26.0, 33.0),
        ];
        assert_eq!(runner_up_at(&rows, &rows[0]).unwrap().strategy, "ppl");
        rows[2].healed = Some(Measured::point(20.0, 0.05, 0.95));
        rows[2].healed_select_perplexity = Some(22.0);
        assert_eq!(best_at(&rows, 2).unwrap().strategy, "ppl");
        assert!(best_at(&rows, 0).is_none());
    }
}
