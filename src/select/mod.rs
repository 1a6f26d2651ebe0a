//! Which layers go: the SPEC grammar users type, and the [`Removal`] plan it resolves to.
//! Scoring-based strategies also end in a [`Removal`], so every path to a prune is written the
//! same way.

pub mod removal;
mod spec;
pub mod stability;
pub mod strategy;

pub use removal::{format_ranges, to_ranges, LayerMap, Removal, RemovalSummary};
pub use spec::{LayerSpec, SpecItem};
