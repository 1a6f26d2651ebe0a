//! Confidence intervals by a seeded bootstrap over evaluation windows (or questions), issue 15.
//!
//! A window is the unit of resampling: its tokens share context, so they are not independent
//! draws, but windows of a long text nearly are. Each resample draws `n` windows with replacement
//! and recomputes the figure from the summed per-window statistics (NLL sums and token counts
//! for perplexity, KL and top-1 sums for the divergence), so a ratio such as `exp(Σ nll / Σ n)`
//! is recomputed, not averaged. Intervals are the 2.5th and 97.5th percentiles of the resampled
//! figures. A paired difference draws the same windows for both sides in each resample, which is
//! what makes it much narrower than two separate intervals when both sides fail on the same text.
//!
//! The generator is SplitMix64, seeded, so the same inputs give the same intervals on every run
//! and every machine, and two figures measured on the same windows are paired draw for draw.

use super::perplexity::Totals;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Resamples used unless a caller asks for others.
pub const RESAMPLES: usize = 1000;
/// The most resamples an interval may ask for: each holds one figure per resample, and 100 times
/// the default already moves a 95% interval's ends by far less than they are wide.
pub const MAX_RESAMPLES: usize = 100_000;
/// The seed used unless a caller asks for another.
pub const SEED: u64 = 15;

/// A 95% interval `[lo, hi]`.
pub type Interval = [f64; 2];

/// SplitMix64 (Steele, Lea and Flood 2014): small, fast, and good enough to draw indices.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (`n > 0`), by Lemire's multiply-shift; the bias is below
    /// `n / 2^64`, far beneath anything a bootstrap can see.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// How many resamples, from which seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub resamples: usize,
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            resamples: RESAMPLES,
            seed: SEED,
        }
    }
}

/// The `q`-quantile (0 ≤ q ≤ 1) of sorted values, interpolating linearly between neighbours
/// (numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let i = pos.floor() as usize;
            let j = (i + 1).min(n - 1);
            sorted[i] + (pos - i as f64) * (sorted[j] - sorted[i])
        }
    }
}

impl Bootstrap {
    /// Refuses zero resamples.
    pub fn new(resamples: usize, seed: u64) -> Result<Self> {
        if !(1..=MAX_RESAMPLES).contains(&resamples) {
            return Err(Error::Invalid(format!(
                "`ci_resamples` {resamples}: the bootstrap takes at least 1 and at most {MAX_RESAMPLES} resamples"
            )));
        }
        Ok(Bootstrap { resamples, seed })
    }

    /// Calls `f` once per resample with how many times each of `n` units was drawn. The draws
    /// depend only on the seed and `n`, so two calls with the same `n` see the same resamples.
    pub fn for_each_draw(&self, n: usize, mut f: impl FnMut(&[u32])) {
        let mut rng = SplitMix64::new(self.seed);
        let mut counts = vec![0u32; n];
        for _ in 0..self.resamples {
            counts.iter_mut().for_each(|c| *c = 0);
            for _ in 0..n {
                counts[rng.below(n)] += 1;
            }
            f(&counts);
        }
    }

    /// The 95% percentile interval of `stat` over the resamples of `n` units.
    pub fn interval(&self, n: usize, mut stat: impl FnMut(&[u32]) -> f64) -> Interval {
        if n == 0 {
            return [f64::NAN, f64::NAN];
        }
        let mut values = Vec::with_capacity(self.resamples.min(MAX_RESAMPLES));
        self.for_each_draw(n, |c| values.push(stat(c)));
        values.sort_by(f64::total_cmp);
        [quantile(&values, 0.025), quantile(&values, 0.975)]
    }

    /// Intervals for perplexity, mean KL and top-1 agreement from per-window totals.
    pub fn totals(&self, windows: &[Totals]) -> TotalsIntervals {
        let sum = |c: &[u32]| weighted(windows, c);
        TotalsIntervals {
            perplexity: self.interval(windows.len(), |c| sum(c).perplexity()),
            mean_kl: self.interval(windows.len(), |c| sum(c).mean_kl()),
            top1_agreement: self.interval(windows.len(), |c| sum(c).top1_agreement()),
        }
    }

    /// `figure(a) - figure(b)` on the same windows, with a paired interval: each resample
    /// draws the same windows for both sides.
    pub fn paired(
        &self,
        a: &[Totals],
        b: &[Totals],
        figure: fn(&Totals) -> f64,
    ) -> Result<Difference> {
        if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| x.n != y.n) {
            return Err(Error::Invalid(
                "a paired bootstrap needs both sides measured on the same windows".into(),
            ));
        }
        let all = vec![1u32; a.len()];
        let estimate = figure(&weighted(a, &all)) - figure(&weighted(b, &all));
        let ci = self.interval(a.len(), |c| {
            figure(&weighted(a, c)) - figure(&weighted(b, c))
        });
        Ok(Difference { estimate, ci })
    }
}

/// Per-window totals summed with each window counted `counts[i]` times.
pub fn weighted(windows: &[Totals], counts: &[u32]) -> Totals {
    let mut t = Totals::default();
    for (w, &c) in windows.iter().zip(counts) {
        if c == 0 {
            continue;
        }
        let f = c as f64;
        t.nll += f * w.nll;
        t.ref_nll += f * w.ref_nll;
        t.kl += f * w.kl;
        t.agree += c as usize * w.agree;
        t.n += c as usize * w.n;
    }
    t
}

/// The 95% intervals of the three figures the evaluation reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TotalsIntervals {
    pub perplexity: Interval,
    pub mean_kl: Interval,
    pub top1_agreement: Interval,
}

/// A difference between two figures with its paired 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub estimate: f64,
    pub ci: Interval,
}

impl Difference {
    /// Whether the interval excludes zero: the two sides can be told apart at this sample size.
    pub fn separates(&self) -> bool {
        self.ci[0] > 0.0 || self.ci[1] < 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(nll: f64, kl: f64, agree: usize, n: usize) -> Totals {
        Totals {
            nll,
            ref_nll: 0.0,
            kl,
            agree,
            n,
        }
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.1), 1.4);
        assert_eq!(quantile(&v, 1.0), 5.0);
    }

    #[test]
    fn the_same_seed_gives_the_same_interval_and_another_seed_another() {
        let w: Vec<Totals> = (0..50)
            .map(|i| window((i % 7) as f64, (i % 3) as f64, i % 2, 1))
            .collect();
        let a = Bootstrap::default().totals(&w);
        assert_eq!(a, Bootstrap::default().totals(&w));
        let other = Bootstrap::new(RESAMPLES, 16).unwrap().totals(&w);
        assert_ne!(a, other);
    }

    #[test]
    fn identical_windows_give_a_point_interval() {
        let w = vec![window(2.0 * 10.0, 0.5 * 10.0, 7, 10); 12];
        let ci = Bootstrap::default().totals(&w);
        let ppl = 2.0f64.exp();
        assert!((ci.perplexity[0] - ppl).abs() < 1e-12 && (ci.perplexity[1] - ppl).abs() < 1e-12);
        assert!((ci.mean_kl[0] - 0.5).abs() < 1e-12 && (ci.mean_kl[1] - 0.5).abs() < 1e-12);
        assert_eq!(ci.top1_agreement, [0.7, 0.7]);
    }

    #[test]
    fn intervals_match_the_normal_approximation_on_a_known_mean() {
        // 400 one-token windows, NLL 0 or 1 and agreement 0 or 1 in equal numbers: the mean is
        // 0.5 with a standard error of 0.5 / 20 = 0.025, so the 95% interval of the mean NLL is
        // 0.5 ± 1.96 × 0.025 = [0.451, 0.549], and perplexity's is its exponential.
        let w: Vec<Totals> = (0..400)
            .map(|i| window((i % 2) as f64, (i % 2) as f64, i % 2, 1))
            .collect();
        let b = Bootstrap::new(4000, SEED).unwrap();
        let ci = b.totals(&w);
        let (lo, hi) = (0.5 - 1.96 * 0.025, 0.5 + 1.96 * 0.025);
        assert!((ci.perplexity[0].ln() - lo).abs() < 0.006, "{ci:?}");
        assert!((ci.perplexity[1].ln() - hi).abs() < 0.006, "{ci:?}");
        assert!((ci.mean_kl[0] - lo).abs() < 0.006 && (ci.mean_kl[1] - hi).abs() < 0.006);
        assert!((ci.top1_agreement[0] - lo).abs() < 0.006, "{ci:?}");
        assert!((ci.top1_agreement[1] - hi).abs() < 0.006, "{ci:?}");
    }

    #[test]
    fn a_paired_difference_of_a_linear_figure_is_the_interval_of_the_differences() {
        // Mean KL is linear in the per-window sums when every window has the same token count,
        // so the paired interval of KL(a) − KL(b) must equal the plain interval of a series whose
        // windows hold the differences: an independent computation of the same draws.
        let a: Vec<Totals> = (0..60)
            .map(|i| window(0.0, ((i * 37) % 11) as f64, 0, 8))
            .collect();
        let b: Vec<Totals> = (0..60)
            .map(|i| window(0.0, ((i * 37) % 11) as f64 * 0.5 + (i % 3) as f64, 0, 8))
            .collect();
        let diff: Vec<Totals> = a
            .iter()
            .zip(&b)
            .map(|(x, y)| window(0.0, x.kl - y.kl, 0, 8))
            .collect();
        let boot = Bootstrap::default();
        let paired = boot.paired(&a, &b, Totals::mean_kl).unwrap();
        let plain = boot.totals(&diff).mean_kl;
        assert!(
            (paired.ci[0] - plain[0]).abs() < 1e-9,
            "{paired:?} {plain:?}"
        );
        assert!(
            (paired.ci[1] - plain[1]).abs() < 1e-9,
            "{paired:?} {plain:?}"
        );
        let all = vec![1; 60];
        assert!((paired.estimate - weighted(&diff, &all).mean_kl()).abs() < 1e-12);
    }

    #[test]
    fn pairing_removes_the_noise_both_sides_share() {
        // b is a with 0.1 nats more on every token: the windows vary a lot, the difference not
        // at all. The paired interval of the log-perplexity gap is the point 0.1; two separate
        // intervals overlap.
        let a: Vec<Totals> = (0..40)
            .map(|i| window(4.0 * (1.0 + (i % 5) as f64), 0.0, 0, 4))
            .collect();
        let b: Vec<Totals> = a.iter().map(|w| window(w.nll + 0.4, 0.0, 0, 4)).collect();
        let boot = Bootstrap::default();
        let log_ppl = |t: &Totals| t.perplexity().ln();
        let d = boot.paired(&b, &a, log_ppl).unwrap();
        assert!(
            (d.ci[0] - 0.1).abs() < 1e-9 && (d.ci[1] - 0.1).abs() < 1e-9,
            "{d:?}"
        );
        assert!(d.separates());
        let (ia, ib) = (boot.totals(&a).perplexity, boot.totals(&b).perplexity);
        assert!(ib[0] < ia[1], "separate intervals overlap: {ia:?} {ib:?}");
        let same = boot.paired(&a, &a, Totals::perplexity).unwrap();
        assert!(!same.separates());
    }

    #[test]
    fn unpaired_windows_are_refused() {
        let a = vec![window(1.0, 0.0, 0, 4); 3];
        let b = vec![window(1.0, 0.0, 0, 5); 3];
        assert!(Bootstrap::default()
            .paired(&a, &b, Totals::perplexity)
            .is_err());
        assert!(Bootstrap::new(0, 1).is_err());
        assert!(Bootstrap::new(MAX_RESAMPLES, 1).is_ok());
        let e = Bootstrap::new(usize::MAX, 1).unwrap_err().to_string();
        assert!(e.contains("`ci_resamples`"), "{e}");
    }
}
