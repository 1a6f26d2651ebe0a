//! What people look at: plots (PNG and SVG) of scores and sweeps, and the study as Markdown
//! (`report.md`, the model card's evaluation section). Both render saved numbers, never the model.

pub mod papers;
pub mod plot;
pub mod score_plots;
pub mod stability_plot;
pub mod study;
pub mod sweep_plots;
