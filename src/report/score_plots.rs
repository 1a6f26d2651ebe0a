//! The charts of one criterion's scores: bars per layer, the angular heatmap, the greedy curve,
//! and the stability of the scores over calibration resamples.

use crate::choose::stability::LayerStability;
use crate::error::{IoContext, Result};
use crate::score::{shown_values, LayerScores};
use std::path::{Path, PathBuf};

/// Writes `stability.png`/`.svg` for `s` into `dir`.
pub fn plot_stability(
    dir: &Path,
    scores: &LayerScores,
    s: &LayerStability,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).at(dir)?;
    let m = scores.metric.name();
    super::stability_plot::stability_chart(
        &dir.join(format!("stability_{m}")),
        &format!(
            "{m} per layer over {} calibration resamples (mean ± sd; overlap of choices {:.2})",
            s.resamples, s.mean_pairwise_overlap
        ),
        &shown_values(scores).1,
        s,
    )
}

/// Writes the charts for `s` into `dir`.
pub fn plot(dir: &Path, s: &LayerScores) -> Result<()> {
    use super::plot::{angular_heatmap, layer_bars, line_chart, Axis, Reference, Series};
    std::fs::create_dir_all(dir).at(dir)?;
    let m = s.metric.name();
    let first: Vec<usize> = s.removal_order().into_iter().take(s.n_layers / 4).collect();
    let (values, y_label) = shown_values(s);
    layer_bars(
        &dir.join(format!("{m}_scores")),
        &format!("{m} per layer (red: the first quarter removed)"),
        &y_label,
        &values,
        &first,
    )?;
    if let Some(d) = &s.angular {
        angular_heatmap(
            &dir.join("angular_heatmap"),
            "angular distance of a block from its input",
            d,
            s.n_layers,
        )?;
    }
    if let Some(g) = &s.greedy {
        let points = g
            .iter()
            .enumerate()
            .map(|(k, st)| ((k + 1) as f64, st.ppl))
            .collect();
        let series = [Series {
            name: "greedy removal".into(),
            points,
            ci: Vec::new(),
        }];
        let dense = s.baseline_ppl.map(|y| Reference {
            label: "dense model".into(),
            y,
        });
        line_chart(
            &dir.join("greedy_curve"),
            "calibration perplexity as layers are removed (SLEB)",
            "layers removed",
            "calibration perplexity",
            &series,
            Axis::LogCounts,
            dense.as_ref(),
        )?;
    }
    Ok(())
}
