//! Fold sites: where each map of a heal is folded and what it is fitted to, the fit rows a
//! window gives a site, and the log line that reports a site once decided.

use super::blocks;
use super::options::Maps;
use super::postnorm::PostNorm;
use super::result::HealedBlock;
use std::ops::Range;

/// Where a map is folded and what it is fitted to.
pub(super) struct Site {
    /// The kept layer whose `down_proj` takes the map.
    pub fold: usize,
    /// The dense layer whose output the healed output of `fold` should match.
    pub target: usize,
    /// The removed block after `fold`, or an empty range for a per-layer site.
    pub range: Range<usize>,
}

/// The fold sites for `removed`, in layer order: one per removed block, and with
/// [`Maps::PerLayer`] one per kept layer after the first removed block.
pub(super) fn sites(removed: &[usize], n_layers: usize, maps: Maps) -> Vec<Site> {
    let todo = blocks(removed);
    let mut out: Vec<Site> = todo
        .iter()
        .map(|b| Site {
            fold: b.start - 1,
            target: b.end - 1,
            range: b.clone(),
        })
        .collect();
    if maps == Maps::PerLayer {
        if let Some(first) = todo.first() {
            for l in first.end..n_layers {
                if !removed.contains(&l) && !out.iter().any(|s| s.fold == l) {
                    out.push(Site {
                        fold: l,
                        target: l,
                        range: l + 1..l + 1,
                    });
                }
            }
        }
    }
    out.sort_by_key(|s| s.fold);
    out
}

/// The fit rows `(M, Z)` of one window from its dense target `y`, the fold layer's output `x`
/// and MLP output `m` (each `seq × hidden`): `Z = Y − X + M`, the MLP's contribution the map
/// should produce. After a post-MLP norm of gain `g`, `M` is the normalised MLP output and the
/// contribution `n·diag(g)`, and the window's first position is left out.
pub(super) fn site_rows(
    (y, x, m): (&[f32], &[f32], &[f32]),
    post: Option<(&PostNorm, &[f64])>,
    hidden: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut m = m.to_vec();
    let mut r = None;
    if let Some((p, g)) = post {
        let (n, upd) = p.normalize(&m, g);
        m = n;
        r = Some(upd);
    }
    let mut z: Vec<f32> = y
        .iter()
        .zip(x)
        .zip(r.as_ref().unwrap_or(&m))
        .map(|((y, x), m)| y - x + m)
        .collect();
    if post.is_some() {
        m.drain(..hidden.min(m.len()));
        z.drain(..hidden.min(z.len()));
    }
    (m, z)
}

/// The log line for fold site `i` of `n` once decided.
pub(super) fn site_line(i: usize, n: usize, r: &HealedBlock) -> String {
    let what = if r.range.is_empty() {
        format!("layer {} (per-layer map)", r.fold_layer)
    } else {
        format!(
            "block {}..{} into layer {}",
            r.range.start, r.range.end, r.fold_layer
        )
    };
    let choice = match (r.objective, &r.validation) {
        (Some(o), Some(v)) => {
            let kl = v
                .candidates
                .iter()
                .find(|c| c.objective == o && c.alpha == r.alpha)
                .map_or(f64::NAN, |c| c.validation_kl);
            format!(
                "{} (alpha {:e}), held-out KL {kl:.4} against {:.4} unhealed",
                o.name(),
                r.alpha,
                v.unhealed_kl
            )
        }
        (Some(o), None) => format!(
            "{}, residual {:.4} against {:.4} unhealed",
            o.name(),
            r.relative_residual,
            r.relative_residual_identity
        ),
        (None, Some(v)) => format!(
            "left unhealed: no map beat the held-out KL {:.4}",
            v.unhealed_kl
        ),
        (None, None) => "left unhealed".to_string(),
    };
    format!("fold site {}/{n}: {what}: {choice}", i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_cover_blocks_and_with_per_layer_every_later_kept_layer() {
        let s = sites(&[3, 4, 7], 10, Maps::PerBlock);
        let v: Vec<_> = s
            .iter()
            .map(|s| (s.fold, s.target, s.range.clone()))
            .collect();
        assert_eq!(v, vec![(2, 4, 3..5), (6, 7, 7..8)]);
        let s = sites(&[3, 4, 7], 10, Maps::PerLayer);
        let v: Vec<_> = s.iter().map(|s| (s.fold, s.target)).collect();
        assert_eq!(v, vec![(2, 4), (5, 5), (6, 7), (8, 8), (9, 9)]);
        assert!(s
            .iter()
            .filter(|s| s.fold != 2 && s.fold != 6)
            .all(|s| s.range.is_empty()));
    }
}
