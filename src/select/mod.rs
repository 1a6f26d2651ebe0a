//! Which layers go: the SPEC grammar users type, and the [`Removal`] plan it resolves to.
//! Scoring-based strategies ([`crate::choose`]) also end in a [`Removal`], so every path to a
//! prune is written the same way. The layer naming that renumbering rewrites
//! (`model.layers.{i}.` ↔ `blk.{i}.`, [`naming`], also reached as `arch::naming`) lives here too.
//! This module sits below `arch` and `score`; it imports only
//! [`crate::error`].

pub mod naming;
pub mod removal;
mod spec;

pub use removal::{format_ranges, to_ranges, LayerMap, Removal, RemovalSummary};
pub use spec::{LayerSpec, SpecItem};
