//! What people look at: plots (PNG and SVG) of scores and sweeps. Plots read saved numbers, never
//! the model.

pub mod plot;
