//! Which layers go when scores decide: the strategies that turn [`crate::score::LayerScores`]
//! into a [`crate::select::Removal`] ([`strategy`]), and how stable that choice is under
//! resampling ([`stability`]). This floor sits above `score`; `select` below it holds the SPEC
//! grammar and the removal plan.

pub mod stability;
pub mod strategy;
