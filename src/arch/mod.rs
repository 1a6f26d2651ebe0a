//! Architectures: what `config.json` says about a model ([`config`]), how tensors are named and
//! renumbered ([`naming`]), and how many parameters each part holds ([`params`]).

pub mod config;
pub mod naming;
pub mod params;

pub use config::ArchConfig;
pub use params::{LayerParams, ParamCounts};
