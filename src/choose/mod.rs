//! Which layers go when scores decide: the strategies that turn [`crate::score::LayerScores`]
//! into a [`crate::select::Removal`] ([`strategy`]), how stable that choice is under
//! resampling ([`stability`]), and heal-aware selection's finalists, healed and judged on
//! held-out windows ([`finalists`]). This floor sits above `score`; `select` below it holds the SPEC
//! grammar and the removal plan.

pub mod finalists;
pub mod stability;
pub mod strategy;
