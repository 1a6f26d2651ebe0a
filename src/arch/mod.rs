//! Architectures: what `config.json` says about a model ([`config`]), how tensors are named and
//! renumbered ([`naming`]), and how many parameters each part holds ([`params`]; with experts,
//! the routed, shared and active ones: [`moe_params`]).

pub mod config;
pub mod moe_params;
pub mod naming;
pub mod params;

pub use config::ArchConfig;
pub use moe_params::MoeParams;
pub use params::{LayerParams, ParamCounts};
