//! Greedy removal, shared by SLEB-style perplexity scoring and heal-aware scoring: at each step
//! remove the layer whose removal (with those already gone) costs least, ties to the later
//! layer, and rank layers by the step at which they went.

use crate::error::Result;
use crate::progress::Progress;

/// Removes up to `steps` of `n` layers one at a time. `cost(removed)` prices a candidate set
/// (sorted, the candidate included); `removed_one(layer, removed)` is told each choice (the set
/// as it now stands) before the next step. Returns `(layer, cost)` in removal order.
pub fn order(
    n: usize,
    steps: usize,
    label: &str,
    progress: &dyn Progress,
    cost: &mut dyn FnMut(&[usize], usize) -> Result<f64>,
    removed_one: &mut dyn FnMut(usize, &[usize]) -> Result<()>,
) -> Result<Vec<(usize, f64)>> {
    let mut removed: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    progress.start(label, steps as u64);
    for _ in 0..steps {
        let mut best: Option<(f64, usize)> = None;
        for c in (0..n).filter(|c| !removed.contains(c)) {
            let mut set = removed.clone();
            set.push(c);
            set.sort_unstable();
            let v = cost(&set, c)?;
            // Ties go to the later layer, as in `removal_order`.
            if best.is_none_or(|(b, _)| v <= b) {
                best = Some((v, c));
            }
        }
        let Some((v, c)) = best else { break };
        removed.push(c);
        removed_one(c, &removed)?;
        out.push((c, v));
        progress.advance(1);
    }
    progress.finish();
    Ok(out)
}

/// Importance from a removal order: the step at which a layer went (later = more important);
/// layers never removed rank above every removed one.
pub fn importance(n: usize, order: &[(usize, f64)]) -> Vec<f64> {
    let mut v = vec![n as f64; n];
    for (k, &(layer, _)) in order.iter().enumerate() {
        v[layer] = k as f64;
    }
    v
}
