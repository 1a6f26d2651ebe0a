//! Layer importance: the published criteria for choosing which layers to remove, and the score
//! files they produce. The accumulators here work on hidden-state rows (`&[f32]`, one token's
//! vector) so they run streaming, one window at a time, with whatever engine produced the rows.
//!
//! - [`Metric::Angular`] (Gromov et al., "The Unreasonable Ineffectiveness of the Deeper Layers";
//!   PruneMe): `d(ℓ, n) = arccos(cos(h_ℓ, h_{ℓ+n})) / π` between the input of layer ℓ and the
//!   output of layer ℓ+n−1, on the last token of each window (or all tokens).
//! - [`Metric::Bi`] (ShortGPT's Block Influence): the mean over tokens of `1 − cos(input, output)`
//!   of each layer. The last layer's output is taken *before* the final norm: comparing with the
//!   normed output, as some tools do, inflates the last layer's score.
//! - [`Metric::Minitron`]: the same cosine measure summed per batch and averaged over batches, as
//!   NVIDIA's ModelOpt computes it.
//! - [`Metric::Ppl`] (Shortened LLaMA): calibration perplexity with each single layer removed.
//! - [`Metric::Greedy`] (SLEB): remove, one at a time, the layer whose removal hurts calibration
//!   perplexity least, rescoring after each removal.
//! - [`Metric::Healed`] (this project, issue 18): greedy removal of the layer whose removal
//!   least-squares healing repairs best, from one dense pass ([`healed`]).
//! - [`Metric::Last`]: a baseline that removes the last layers before the final one.

pub mod cosine;
pub mod greedy;
pub mod healed;
pub mod resample;
pub mod run;
pub mod scores;

pub use resample::{check_resamples, resample_draws, resample_windows, WindowStats, MAX_RESAMPLES};
pub use run::{calibration_windows, score, ReuseTiming, ScoreOptions, ScoreOutcome, TokenSel};
pub use scores::{shown_values, Calibration, HealedStep, LayerScores, Metric};
