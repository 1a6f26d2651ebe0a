//! Confirming heal-aware selection (issue 23): the proxy ([`crate::score::healed::Proxy`])
//! ranks removal sets by what healing should leave, on the dense activations, but the real heal
//! runs on the pruned stream, where earlier repairs change later inputs. So the selection keeps
//! a few candidate sets (the *finalists*): the proxy's best sets by a beam search, the greedy
//! set with its last choice swapped for the runner-up, and the sets that cheap criteria give
//! (Block Influence's layers, the contiguous block nearest by angular distance). Each finalist
//! is healed for real with the closed form and judged by the mean next-token KL(dense ‖ healed)
//! on the guard's held-out windows ([`crate::heal::held_out`]); the lowest wins.
//!
//! The windows are kept apart: the proxy runs on calibration windows the heal fits on, never on
//! a held-out one, and the held-out windows judge both each block's map (the guard) and the
//! finalists. This module owns the candidate sets, the window split and the choice; running the
//! heals is the caller's ([`judge`] takes it as a function).

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::score::healed::Proxy;
use crate::select::format_ranges;
use serde::{Deserialize, Serialize};

/// The default number of finalists the beam keeps (the other sources add theirs).
pub const DEFAULT_WIDTH: usize = 3;

/// A candidate set and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Sorted layer numbers.
    pub removed: Vec<usize>,
    /// The proxy's cost of the set (lower is better).
    pub proxy_cost: f64,
    /// Which criteria proposed it (`beam 1` is the proxy's first choice).
    pub sources: Vec<String>,
}

/// A finalist as recorded: its set, the proxy's cost and, once healed, its validation KL.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finalist {
    pub removed: Vec<usize>,
    /// The set as a `--drop` value.
    pub drop: String,
    pub sources: Vec<String>,
    pub proxy_cost: f64,
    /// Mean next-token KL(dense ‖ pruned) on the held-out windows, unhealed.
    pub unhealed_kl: Option<f64>,
    /// The same after the closed-form heal, the figure the choice is made on: the guard's
    /// windows and any extra judging windows together, by positions; `None` when it was not
    /// judged (out of time).
    pub validation_kl: Option<f64>,
    /// Its part on the guard's held-out windows alone.
    #[serde(default)]
    pub guard_kl: Option<f64>,
    /// Its part on the extra judging windows alone, when there were any.
    #[serde(default)]
    pub judge_kl: Option<f64>,
    /// Seconds its heal took.
    pub seconds: f64,
    /// Whether it won.
    pub chosen: bool,
}

impl Finalist {
    /// One line for the log: the set, its sources, proxy cost and KLs, and whether it won.
    pub fn describe(&self) -> String {
        let kl = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        format!(
            "finalist {:<24} proxy {:.4}  validation KL {} (unhealed {}), {:.0} s  [{}]{}",
            self.drop,
            self.proxy_cost,
            kl(self.validation_kl),
            kl(self.unhealed_kl),
            self.seconds,
            self.sources.join(", "),
            if self.chosen { "  ← chosen" } else { "" }
        )
    }
}

/// What judging a finalist gave: the KLs, and what the caller keeps of the winner's heal.
pub struct Judged<T> {
    pub validation_kl: f64,
    pub guard_kl: Option<f64>,
    pub judge_kl: Option<f64>,
    pub unhealed_kl: Option<f64>,
    pub seconds: f64,
    pub kept: T,
}

/// Heals candidate `i` and judges it, or `None` to leave it unjudged.
pub type HealOne<'a, T> = dyn FnMut(usize, &Candidate) -> Result<Option<Judged<T>>> + 'a;

/// Which calibration windows the proxy may see: the first `samples` of the `n_windows` that the
/// heal fits on (never a held-out one, [`crate::heal::held_out`]).
pub fn proxy_windows(n_windows: usize, holdout: usize, samples: usize) -> Vec<usize> {
    (0..n_windows)
        .filter(|&i| !crate::heal::held_out(i, holdout))
        .take(samples)
        .collect()
}

/// The candidate sets of `k` layers: the beam's `width` best, the greedy set with its last
/// choice swapped, Block Influence's `k` layers and the best contiguous block by angular
/// distance; merged where equal, without sets that touch a layer `allowed` refuses or that
/// cannot be healed, cheapest by the proxy first.
pub fn candidates(
    proxy: &mut Proxy,
    k: usize,
    width: usize,
    allowed: &dyn Fn(usize) -> bool,
    progress: &dyn Progress,
) -> Result<Vec<Candidate>> {
    let n = proxy.n_layers();
    let mut sets: Vec<(Vec<usize>, String)> = Vec::new();
    for (i, (set, _)) in proxy
        .beam(k, width, allowed, progress)?
        .into_iter()
        .enumerate()
    {
        sets.push((set, format!("beam {}", i + 1)));
    }
    let greedy: Vec<usize> = proxy
        .greedy(k, progress)?
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    if greedy.len() == k && k > 0 {
        let prefix = &greedy[..k - 1];
        let mut alts = Vec::new();
        for c in (0..n).filter(|c| !prefix.contains(c) && allowed(*c)) {
            let mut s = prefix.to_vec();
            s.push(c);
            s.sort_unstable();
            alts.push((proxy.cost(&s)?, c, s));
        }
        alts.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
        if let Some((_, _, s)) = alts.into_iter().find(|(_, c, _)| *c != greedy[k - 1]) {
            sets.push((s, "greedy, last choice swapped".into()));
        }
        let mut g = greedy.clone();
        g.sort_unstable();
        sets.push((g, "greedy".into()));
    }
    let bi = proxy.block_influence()?;
    let mut by_bi: Vec<usize> = (0..n)
        .filter(|&l| allowed(l) && bi[l].is_finite())
        .collect();
    by_bi.sort_by(|&a, &b| bi[a].total_cmp(&bi[b]).then(b.cmp(&a)));
    if by_bi.len() >= k {
        let mut s = by_bi[..k].to_vec();
        s.sort_unstable();
        sets.push((s, "bi".into()));
    }
    if let Some((start, _)) = proxy.angular_block(k, allowed)? {
        sets.push(((start..start + k).collect(), "angular block".into()));
    }
    let mut out: Vec<Candidate> = Vec::new();
    for (set, source) in sets {
        if set.len() != k || set.iter().any(|&l| !allowed(l)) {
            continue;
        }
        match out.iter_mut().find(|c| c.removed == set) {
            Some(c) => c.sources.push(source),
            None => {
                let proxy_cost = proxy.cost(&set)?;
                if proxy_cost.is_finite() {
                    out.push(Candidate {
                        removed: set,
                        proxy_cost,
                        sources: vec![source],
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| a.proxy_cost.total_cmp(&b.proxy_cost));
    Ok(out)
}

/// Heals each candidate with `heal` (in proxy order; `None` means it was not judged, for
/// example when time ran out, and the first candidate must be judged) and chooses the lowest
/// validation KL, ties to the proxy's order. Returns the finalists and the winner's `kept`.
pub fn judge<T>(cands: &[Candidate], heal: &mut HealOne<'_, T>) -> Result<(Vec<Finalist>, T)> {
    let mut finalists = Vec::with_capacity(cands.len());
    let mut best: Option<(usize, f64, T)> = None;
    for (i, c) in cands.iter().enumerate() {
        let judged = heal(i, c)?;
        let mut f = Finalist {
            removed: c.removed.clone(),
            drop: format_ranges(&crate::heal::blocks(&c.removed)),
            sources: c.sources.clone(),
            proxy_cost: c.proxy_cost,
            unhealed_kl: None,
            validation_kl: None,
            guard_kl: None,
            judge_kl: None,
            seconds: 0.0,
            chosen: false,
        };
        if let Some(j) = judged {
            f.unhealed_kl = j.unhealed_kl;
            f.validation_kl = Some(j.validation_kl);
            f.guard_kl = j.guard_kl;
            f.judge_kl = j.judge_kl;
            f.seconds = j.seconds;
            if best.as_ref().is_none_or(|(_, b, _)| j.validation_kl < *b) {
                best = Some((i, j.validation_kl, j.kept));
            }
        }
        finalists.push(f);
    }
    let Some((i, _, kept)) = best else {
        return Err(Error::Invalid(
            "heal-aware selection judged no finalist: no candidate set could be healed".into(),
        ));
    };
    finalists[i].chosen = true;
    Ok((finalists, kept))
}

/// The held-out KLs a heal leaves: `(unhealed, healed)`, the KL of the pruned model with no
/// block healed and of the model as healed (the choice at the last fold site, whose judgement
/// runs every earlier fold); `None` when the heal held nothing out.
pub fn validation_kls(h: &crate::heal::Healing) -> Option<(f64, f64)> {
    let first = h
        .sites()
        .min_by_key(|b| b.fold_layer)?
        .validation
        .as_ref()?;
    let last = h
        .sites()
        .max_by_key(|b| b.fold_layer)?
        .validation
        .as_ref()?;
    let healed = last
        .candidates
        .iter()
        .map(|c| c.validation_kl)
        .fold(last.unhealed_kl, f64::min);
    Some((first.unhealed_kl, healed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(removed: &[usize], cost: f64, source: &str) -> Candidate {
        Candidate {
            removed: removed.to_vec(),
            proxy_cost: cost,
            sources: vec![source.into()],
        }
    }

    #[test]
    fn the_lowest_validation_kl_wins_even_against_the_proxys_first_choice() {
        let cands = [
            cand(&[3, 4], 0.1, "beam 1"),
            cand(&[5, 6], 0.2, "beam 2"),
            cand(&[2, 7], 0.3, "bi"),
        ];
        let kls = [0.9, 0.4, 0.6];
        let (f, kept) = judge(&cands, &mut |i, c| {
            Ok(Some(Judged {
                validation_kl: kls[i],
                guard_kl: None,
                judge_kl: None,
                unhealed_kl: Some(2.0),
                seconds: 1.0,
                kept: c.removed.clone(),
            }))
        })
        .unwrap();
        assert_eq!(kept, vec![5, 6]);
        assert!(f[1].chosen && !f[0].chosen && !f[2].chosen);
        assert_eq!(f[1].drop, "5..7");
        assert_eq!(f[0].validation_kl, Some(0.9));
    }

    #[test]
    fn unjudged_finalists_cannot_win_and_none_judged_is_an_error() {
        let cands = [cand(&[3], 0.1, "beam 1"), cand(&[5], 0.2, "beam 2")];
        let (f, kept) = judge(&cands, &mut |i, c| {
            Ok((i == 0).then(|| Judged {
                validation_kl: 5.0,
                guard_kl: None,
                judge_kl: None,
                unhealed_kl: None,
                seconds: 0.0,
                kept: c.removed.clone(),
            }))
        })
        .unwrap();
        assert_eq!(kept, vec![3]);
        assert!(f[0].chosen && f[1].validation_kl.is_none());
        let none = judge::<()>(&cands, &mut |_, _| Ok(None));
        assert!(none.is_err());
    }

    #[test]
    fn the_proxy_never_sees_a_window_that_judges() {
        for holdout in [2, 3, 8] {
            let w = proxy_windows(40, holdout, 16);
            assert_eq!(w.len(), 16);
            assert!(w.iter().all(|&i| !crate::heal::held_out(i, holdout)));
            let held: Vec<usize> = (0..40)
                .filter(|&i| crate::heal::held_out(i, holdout))
                .collect();
            assert!(!held.is_empty());
            assert!(held.iter().all(|i| !w.contains(i)));
        }
    }
}
