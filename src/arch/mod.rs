//! Architectures: what `config.json` says about a model ([`config`]), how tensors are named and
//! renumbered ([`naming`]), how many parameters each part holds ([`params`]; with experts, the
//! routed, shared and active ones: [`moe_params`]), and what sets the dense families apart
//! ([`families`], [`family_config`]), read with strict field checks ([`fields`], [`rope`]).

pub mod config;
pub mod families;
pub mod family_config;
pub mod fields;
pub mod gguf_names;
pub mod moe_params;
pub use crate::select::naming;
pub mod params;
pub mod registry;
pub mod rope;

pub use config::ArchConfig;
pub use moe_params::MoeParams;
pub use params::{LayerParams, ParamCounts};
pub use registry::ArchRow;
