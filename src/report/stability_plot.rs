//! The score-stability chart (issue 15): per-layer score over calibration resamples as a bar
//! with ±1 sd error bars, and below it how often each layer lands in the chosen set.

use super::plot::{draw_bar_mesh, render, Chart, HEIGHT};
use crate::choose::stability::LayerStability;
use crate::error::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

struct Stability<'a> {
    title: &'a str,
    y_label: &'a str,
    s: &'a LayerStability,
}

/// `lo..hi` padded a little, and never empty.
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, lo + 1.0)
    };
    let p = (hi - lo) * 0.05;
    (lo - p)..(hi + p)
}

impl Chart for Stability<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String> {
        let n = self.s.mean.len();
        let (top, bottom) = root.split_vertically(HEIGHT * 3 / 5);
        let ends = self
            .s
            .mean
            .iter()
            .zip(&self.s.sd)
            .flat_map(|(m, d)| [m - d, m + d])
            .filter(|v| v.is_finite());
        let lo = ends.clone().fold(0.0f64, f64::min);
        let hi = ends.fold(f64::MIN, f64::max);
        let xs = -0.6f64..(n as f64 - 0.4);
        let x_fmt = |x: &f64| {
            if (x - x.round()).abs() < 1e-6 {
                format!("{}", x.round() as i64)
            } else {
                String::new()
            }
        };
        let mut chart = ChartBuilder::on(&top)
            .caption(self.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(80)
            .build_cartesian_2d(xs.clone(), padded(lo, hi))
            .map_err(|e| e.to_string())?;
        draw_bar_mesh(
            chart
                .configure_mesh()
                .y_desc(self.y_label)
                .x_labels(n.min(40))
                .x_label_formatter(&x_fmt),
            13,
            14,
        )?;
        let blue = RGBColor(31, 119, 180);
        chart
            .draw_series(self.s.mean.iter().enumerate().map(|(l, &m)| {
                let x = l as f64;
                Rectangle::new(
                    [(x - 0.35, 0f64.min(m)), (x + 0.35, 0f64.max(m))],
                    blue.mix(0.55).filled(),
                )
            }))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(self.s.mean.iter().zip(&self.s.sd).enumerate().flat_map(
                |(l, (&m, &d))| {
                    let x = l as f64;
                    [
                        vec![(x, m - d), (x, m + d)],
                        vec![(x - 0.15, m - d), (x + 0.15, m - d)],
                        vec![(x - 0.15, m + d), (x + 0.15, m + d)],
                    ]
                    .map(|p| PathElement::new(p, BLACK.stroke_width(1)))
                },
            ))
            .map_err(|e| e.to_string())?;

        let mut freq = ChartBuilder::on(&bottom)
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(80)
            .build_cartesian_2d(xs, 0f64..1.05f64)
            .map_err(|e| e.to_string())?;
        let desc = format!(
            "layer (0-based); bars: share of {} resamples choosing it at {} removed",
            self.s.resamples, self.s.k
        );
        draw_bar_mesh(
            freq.configure_mesh()
                .x_desc(desc)
                .y_desc("chosen")
                .x_labels(n.min(40))
                .x_label_formatter(&x_fmt)
                .y_labels(3)
                .y_label_formatter(&|y| format!("{:.0}%", 100.0 * y)),
            13,
            14,
        )?;
        freq.draw_series(self.s.frequency.iter().enumerate().map(|(l, &f)| {
            let x = l as f64;
            Rectangle::new([(x - 0.35, 0.0), (x + 0.35, f)], RED.mix(0.75).filled())
        }))
        .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Writes `stem.png` and `stem.svg`: mean score ± sd per layer over the resamples, and each
/// layer's selection frequency.
pub fn stability_chart(
    stem: &Path,
    title: &str,
    y_label: &str,
    s: &LayerStability,
) -> Result<Vec<PathBuf>> {
    render(stem, &Stability { title, y_label, s })
}
