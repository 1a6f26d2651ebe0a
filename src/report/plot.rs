//! PNG and SVG charts: per-layer bars, the angular-distance heatmap, and line charts (greedy curve,
//! sweeps). Each chart is drawn once per backend by the same function. Text uses DejaVu Sans,
//! embedded, so output does not depend on the fonts of the machine.

use crate::error::{Error, IoContext, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

const WIDTH: u32 = 1000;
pub(crate) const HEIGHT: u32 = 560;

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        // The embedded font is valid; a failure here would only lose text, never data.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!(
        "`{}`: could not draw the chart: {e}",
        path.display()
    ))
}

/// A chart that can draw itself on any backend.
pub(crate) trait Chart {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String>;
}

/// Draws a per-layer bar chart's mesh, set up by the caller: no vertical or light grid lines,
/// tick labels of `label` points and axis descriptions of `desc` points.
pub(crate) fn draw_bar_mesh<X, Y, DB>(
    mesh: &mut plotters::chart::MeshStyle<'_, '_, X, Y, DB>,
    label: i32,
    desc: i32,
) -> std::result::Result<(), String>
where
    X: plotters::coord::ranged1d::Ranged + plotters::coord::ranged1d::ValueFormatter<X::ValueType>,
    Y: plotters::coord::ranged1d::Ranged + plotters::coord::ranged1d::ValueFormatter<Y::ValueType>,
    DB: DrawingBackend,
{
    mesh.disable_x_mesh()
        .light_line_style(WHITE.mix(0.0))
        .label_style(("sans-serif", label))
        .axis_desc_style(("sans-serif", desc))
        .draw()
        .map_err(|e| e.to_string())
}

/// The lowest finite value (at most `floor`) and the highest, kept above the lowest.
fn finite_range(values: impl Iterator<Item = f64>, floor: f64) -> (f64, f64) {
    let finite: Vec<f64> = values.filter(|v| v.is_finite()).collect();
    let lo = finite.iter().copied().fold(floor, f64::min);
    let hi = finite
        .iter()
        .copied()
        .fold(f64::MIN, f64::max)
        .max(lo + 1e-12);
    (lo, hi)
}

/// Draws `chart` into `stem.svg` and `stem.png`; returns both paths.
pub(crate) fn render(stem: &Path, chart: &impl Chart) -> Result<Vec<PathBuf>> {
    register_font();
    let svg = stem.with_extension("svg");
    {
        let root = SVGBackend::new(&svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(&svg, e))?;
        chart.draw(&root).map_err(|e| plot_err(&svg, e))?;
        root.present().map_err(|e| plot_err(&svg, e))?;
    }
    let png = stem.with_extension("png");
    let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(&png, e))?;
        chart.draw(&root).map_err(|e| plot_err(&png, e))?;
        root.present().map_err(|e| plot_err(&png, e))?;
    }
    write_png(&png, &buf, WIDTH, HEIGHT)?;
    Ok(vec![png, svg])
}

fn write_png(path: &Path, rgb: &[u8], w: u32, h: u32) -> Result<()> {
    let file = std::fs::File::create(path).at(path)?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(|e| plot_err(path, e))?;
    writer
        .write_image_data(rgb)
        .map_err(|e| plot_err(path, e))?;
    writer.finish().map_err(|e| plot_err(path, e))?;
    Ok(())
}

struct Bars<'a> {
    title: &'a str,
    y_label: &'a str,
    values: &'a [f64],
    highlight: &'a [usize],
}

impl Chart for Bars<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String> {
        let (lo, hi) = finite_range(self.values.iter().copied(), 0.0);
        let n = self.values.len();
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), lo..hi * 1.05)
            .map_err(|e| e.to_string())?;
        draw_bar_mesh(
            chart
                .configure_mesh()
                .x_desc("layer (0-based)")
                .y_desc(self.y_label)
                .x_labels(n.min(40))
                .x_label_formatter(&|x| format!("{}", x.round() as i64)),
            14,
            16,
        )?;
        let hl = self.highlight;
        chart
            .draw_series(
                self.values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, &v)| {
                        let color = if hl.contains(&i) {
                            RED.mix(0.85)
                        } else {
                            BLUE.mix(0.6)
                        };
                        Rectangle::new(
                            [(i as f64 - 0.4, 0f64.max(lo)), (i as f64 + 0.4, v)],
                            color.filled(),
                        )
                    }),
            )
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// A per-layer bar chart; `highlight` layers (e.g. the chosen ones) are drawn in red.
pub fn layer_bars(
    stem: &Path,
    title: &str,
    y_label: &str,
    values: &[f64],
    highlight: &[usize],
) -> Result<Vec<PathBuf>> {
    render(
        stem,
        &Bars {
            title,
            y_label,
            values,
            highlight,
        },
    )
}

/// A sequential colour scale from dark blue (low) through teal to yellow (high).
fn scale_color(t: f64) -> RGBColor {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (0.0, [40.0, 20.0, 90.0]),
        (0.25, [50.0, 90.0, 150.0]),
        (0.5, [35.0, 150.0, 140.0]),
        (0.75, [120.0, 200.0, 80.0]),
        (1.0, [250.0, 230.0, 40.0]),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let k = STOPS
        .iter()
        .position(|s| s.0 >= t)
        .unwrap_or(STOPS.len() - 1)
        .max(1);
    let (a, b) = (STOPS[k - 1], STOPS[k]);
    let f = (t - a.0) / (b.0 - a.0);
    let c = |i: usize| (a.1[i] + f * (b.1[i] - a.1[i])).round() as u8;
    RGBColor(c(0), c(1), c(2))
}

struct Heatmap<'a> {
    title: &'a str,
    /// `d[n-1][l]`.
    d: &'a [Vec<f64>],
    n_layers: usize,
}

impl Chart for Heatmap<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String> {
        let (lo, hi) = finite_range(self.d.iter().flatten().copied(), f64::MAX);
        let (main, bar) = root.split_horizontally(WIDTH - 130);
        let max_n = self.d.len();
        let mut chart = ChartBuilder::on(&main)
            .caption(self.title, ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(
                -0.5f64..(self.n_layers as f64 - 0.5),
                0.5f64..(max_n as f64 + 0.5),
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("first layer of the block, l (0-based)")
            .y_desc("block size n (layers)")
            .x_labels(self.n_layers.min(40))
            .y_labels(max_n.min(40))
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .y_label_formatter(&|y| format!("{}", y.round() as i64))
            .disable_mesh()
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(|e| e.to_string())?;
        let cells = self.d.iter().enumerate().flat_map(|(i, row)| {
            let n = (i + 1) as f64;
            row.iter().enumerate().map(move |(l, &v)| {
                let c = scale_color((v - lo) / (hi - lo));
                Rectangle::new(
                    [(l as f64 - 0.5, n - 0.5), (l as f64 + 0.5, n + 0.5)],
                    c.filled(),
                )
            })
        });
        chart.draw_series(cells).map_err(|e| e.to_string())?;
        // The best block of each size.
        let best = self.d.iter().enumerate().filter_map(|(i, row)| {
            let (l, _) = row
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .min_by(|a, b| a.1.partial_cmp(b.1).unwrap_or(std::cmp::Ordering::Equal))?;
            Some(Circle::new((l as f64, (i + 1) as f64), 4, WHITE.filled()))
        });
        chart.draw_series(best).map_err(|e| e.to_string())?;

        let mut cb = ChartBuilder::on(&bar)
            .margin_top(60)
            .margin_bottom(64)
            .margin_right(4)
            .margin_left(8)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..1f64, lo..hi)
            .map_err(|e| e.to_string())?;
        cb.configure_mesh()
            .disable_x_axis()
            .disable_mesh()
            .y_labels(6)
            .y_label_formatter(&|v| format!("{v:.2}"))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| e.to_string())?;
        let steps = 100;
        cb.draw_series((0..steps).map(|k| {
            let a = lo + (hi - lo) * k as f64 / steps as f64;
            let b = lo + (hi - lo) * (k + 1) as f64 / steps as f64;
            Rectangle::new(
                [(0.0, a), (1.0, b)],
                scale_color(k as f64 / steps as f64).filled(),
            )
        }))
        .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// The angular-distance heatmap (block size by start layer), as in Gromov et al.'s figure. White
/// dots mark the best (smallest-distance) block of each size.
pub fn angular_heatmap(
    stem: &Path,
    title: &str,
    d: &[Vec<f64>],
    n_layers: usize,
) -> Result<Vec<PathBuf>> {
    render(stem, &Heatmap { title, d, n_layers })
}

/// One line of a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// A 95% interval `[lo, hi]` for each point, drawn as an error bar; empty for none.
    pub ci: Vec<[f64; 2]>,
}

/// A horizontal reference line, e.g. the dense model.
#[derive(Debug, Clone)]
pub struct Reference {
    pub label: String,
    pub y: f64,
}

/// The axes of a line chart: a linear or logarithmic y, and whether x counts layers (integer
/// ticks only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Linear,
    Log,
    LinearCounts,
    LogCounts,
}

impl Axis {
    fn log_y(self) -> bool {
        matches!(self, Axis::Log | Axis::LogCounts)
    }

    fn integer_x(self) -> bool {
        matches!(self, Axis::LinearCounts | Axis::LogCounts)
    }
}

const SUPERSCRIPTS: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];

/// `10` raised to `e`, written with superscript digits: `10²`, `10⁻³`.
fn power_of_ten(e: i32) -> String {
    let mut out = String::from("10");
    if e < 0 {
        out.push('⁻');
    }
    for d in e.unsigned_abs().to_string().bytes() {
        out.push(SUPERSCRIPTS[(d - b'0') as usize]);
    }
    out
}

/// A tick label for a log axis. On an axis spanning `decades` of at least 3, powers of ten read
/// `10ⁿ`, other values `m×10ⁿ`; on a narrower one, and always between 0.01 and 1000, plain
/// numbers with at most three significant digits (`20`, `2.5`), never `1000000000.0`.
pub fn log_tick_label(v: f64, decades: f64) -> String {
    if !v.is_finite() || v <= 0.0 {
        return String::new();
    }
    let e = v.log10().floor() as i32;
    let m = v / 10f64.powi(e);
    let exact = (m - m.round()).abs() < 1e-6;
    if (-2..3).contains(&e) && !(decades >= 3.0 && exact && m.round() as i64 == 1 && e != 0) {
        let digits = (2 - e).clamp(0, 4) as usize;
        let t = format!("{v:.digits$}");
        return if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t
        };
    }
    match (exact, m.round() as i64) {
        (true, 1) => power_of_ten(e),
        (true, m) => format!("{m}×{}", power_of_ten(e)),
        _ => format!("{m:.1}×{}", power_of_ten(e)),
    }
}

/// A tick label for a linear axis: no trailing zeros.
fn linear_tick_label(v: f64) -> String {
    let t = format!("{v:.4}");
    let t = t.trim_end_matches('0').trim_end_matches('.');
    if t == "-0" {
        "0".into()
    } else {
        t.to_string()
    }
}

struct Lines<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    series: &'a [Series],
    axis: Axis,
    reference: Option<&'a Reference>,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

macro_rules! draw_lines {
    ($self:expr, $root:expr, $side:expr, $y_range:expr, $xs:expr, $decades:expr) => {{
        let mut chart = ChartBuilder::on($root)
            .caption($self.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d($xs.clone(), $y_range)
            .map_err(|e| e.to_string())?;
        let integer_x = $self.axis.integer_x();
        let log_y = $self.axis.log_y();
        // Integer ticks for layer counts: one label per whole number, or every second one.
        let span = ($xs.end - $xs.start).max(1.0);
        let x_ticks = if integer_x {
            (span.ceil() as usize + 1).min(40)
        } else {
            10
        };
        let x_fmt = move |x: &f64| {
            if integer_x {
                if (x - x.round()).abs() < 1e-6 {
                    format!("{}", x.round() as i64)
                } else {
                    String::new()
                }
            } else {
                linear_tick_label(*x)
            }
        };
        let decades: f64 = $decades;
        let y_fmt = move |y: &f64| {
            if log_y {
                log_tick_label(*y, decades)
            } else {
                linear_tick_label(*y)
            }
        };
        chart
            .configure_mesh()
            .x_desc($self.x_label)
            .y_desc($self.y_label)
            .x_labels(x_ticks)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| e.to_string())?;
        let n_series = $self.series.len();
        for (k, s) in $self.series.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let usable = |y: f64| y.is_finite() && (!log_y || y > 0.0);
            // On a count axis, series sit side by side around each whole number (dodged), so
            // equal values and their error bars do not hide one another.
            let dx = if integer_x && n_series > 1 {
                (k as f64 - (n_series - 1) as f64 / 2.0) * (0.3 / n_series as f64).min(0.08)
            } else {
                0.0
            };
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .map(|p| (p.0 + dx, p.1))
                .filter(|p| usable(p.1))
                .collect();
            if s.ci.len() == s.points.len() {
                // An error bar: the interval as a vertical line with short caps.
                let cap = span * 0.006;
                let bars = s
                    .points
                    .iter()
                    .zip(&s.ci)
                    .filter(|(p, c)| usable(p.1) && usable(c[0]) && usable(c[1]))
                    .flat_map(|(p, c)| {
                        let x = p.0 + dx;
                        [
                            vec![(x, c[0]), (x, c[1])],
                            vec![(x - cap, c[0]), (x + cap, c[0])],
                            vec![(x - cap, c[1]), (x + cap, c[1])],
                        ]
                    })
                    .map(|path| PathElement::new(path, color.mix(0.7).stroke_width(1)));
                chart.draw_series(bars).map_err(|e| e.to_string())?;
            }
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        if let Some(r) = $self.reference {
            let (x0, x1) = ($xs.start, $xs.end);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(x0, r.y), (x1, r.y)],
                    8,
                    5,
                    BLACK.mix(0.8).stroke_width(2),
                ))
                .map_err(|e| e.to_string())?;
        }
        draw_legend($side, $self.series, $self.reference).map_err(|e| e.to_string())?;
        Ok(())
    }};
}

/// Width of the legend panel to the right of a line chart, so the legend never hides data.
const LEGEND_W: u32 = 210;

/// The legend of a line chart in its own panel: one entry per series, then the reference line.
fn draw_legend<DB: DrawingBackend>(
    side: &DrawingArea<DB, Shift>,
    series: &[Series],
    reference: Option<&Reference>,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let font = ("sans-serif", 14).into_font().color(&BLACK);
    let mut y = 64;
    for (k, s) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        side.draw(&PathElement::new(
            vec![(4, y), (30, y)],
            color.stroke_width(2),
        ))?;
        side.draw(&Circle::new((17, y), 3, color.filled()))?;
        side.draw(&Text::new(s.name.clone(), (38, y - 8), font.clone()))?;
        y += 24;
    }
    if let Some(r) = reference {
        for x in [4, 16] {
            side.draw(&PathElement::new(
                vec![(x, y), (x + 8, y)],
                BLACK.mix(0.8).stroke_width(2),
            ))?;
        }
        side.draw(&Text::new(r.label.clone(), (38, y - 8), font.clone()))?;
        y += 24;
    }
    if series.iter().any(|s| !s.ci.is_empty()) {
        side.draw(&PathElement::new(
            vec![(17, y - 8), (17, y + 8)],
            BLACK.stroke_width(1),
        ))?;
        side.draw(&Text::new("95% interval", (38, y - 8), font))?;
    }
    Ok(())
}

impl Chart for Lines<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String> {
        let log_y = self.axis.log_y();
        let (main, side) = root.split_horizontally(WIDTH - LEGEND_W);
        let pts = || self.series.iter().flat_map(|s| s.points.iter().copied());
        let xs: Vec<f64> = pts().map(|p| p.0).collect();
        let bounds = self
            .series
            .iter()
            .flat_map(|s| s.ci.iter().flat_map(|c| c.iter().copied()));
        let mut ys: Vec<f64> = pts()
            .map(|p| p.1)
            .chain(bounds)
            .filter(|y| y.is_finite() && (!log_y || *y > 0.0))
            .collect();
        if let Some(r) = self.reference {
            ys.push(r.y);
        }
        let x0 = xs.iter().copied().fold(f64::MAX, f64::min);
        let x1 = xs.iter().copied().fold(f64::MIN, f64::max);
        let (x0, x1) = if x0 < x1 {
            (x0, x1)
        } else {
            (x0 - 1.0, x0 + 1.0)
        };
        // Room for the dodged series and their error bars on a count axis.
        let pad = if self.axis.integer_x() {
            ((x1 - x0) * 0.03).max(0.3)
        } else {
            (x1 - x0) * 0.03
        };
        let xr = (x0 - pad)..(x1 + pad);
        let y0 = ys.iter().copied().fold(f64::MAX, f64::min);
        let y1 = ys.iter().copied().fold(f64::MIN, f64::max);
        if log_y {
            let (y0, y1) = if y0 < y1 {
                (y0 / 1.6, y1 * 1.3)
            } else {
                (y0 / 2.0, y0 * 2.0)
            };
            let decades = (y1 / y0).log10();
            draw_lines!(self, &main, &side, (y0..y1).log_scale(), xr, decades)
        } else {
            let (y0, y1) = if y0 < y1 {
                (y0, y1)
            } else {
                (y0 - 1.0, y0 + 1.0)
            };
            let p = (y1 - y0) * 0.05;
            draw_lines!(self, &main, &side, (y0 - p)..(y1 + p), xr, 0.0)
        }
    }
}

/// A line chart, one line per series (with error bars where a series has intervals), with the
/// axes `axis` and an optional reference line.
pub fn line_chart(
    stem: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    axis: Axis,
    reference: Option<&Reference>,
) -> Result<Vec<PathBuf>> {
    if series.iter().all(|s| s.points.is_empty()) {
        return Err(Error::Invalid(format!(
            "`{}`: no points to plot",
            stem.display()
        )));
    }
    render(
        stem,
        &Lines {
            title,
            x_label,
            y_label,
            series,
            axis,
            reference,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_read_as_powers_of_ten() {
        assert_eq!(log_tick_label(1e9, 8.0), "10⁹");
        assert_eq!(log_tick_label(1000.0, 1.0), "10³");
        assert_eq!(log_tick_label(20000.0, 8.0), "2×10⁴");
        assert_eq!(log_tick_label(20.0, 8.0), "20");
        assert_eq!(log_tick_label(100.0, 8.0), "10²");
        assert_eq!(log_tick_label(100.0, 1.0), "100");
        assert_eq!(log_tick_label(10.0, 8.0), "10¹");
        assert_eq!(log_tick_label(2.5, 1.0), "2.5");
        assert_eq!(log_tick_label(0.001, 1.0), "10⁻³");
        assert_eq!(linear_tick_label(0.5), "0.5");
        assert_eq!(linear_tick_label(3.0), "3");
    }

    #[test]
    fn writes_png_and_svg() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let files = layer_bars(
            &dir.join("bars"),
            "Block Influence",
            "BI",
            &(0..30)
                .map(|i| ((i * 7) % 11) as f64 / 20.0)
                .collect::<Vec<_>>(),
            &[3, 4],
        )
        .unwrap();
        let d: Vec<Vec<f64>> = (1..=12)
            .map(|n| {
                (0..=30 - n)
                    .map(|l| 0.1 + 0.02 * n as f64 + ((l * 3) % 7) as f64 / 50.0)
                    .collect()
            })
            .collect();
        let files2 = angular_heatmap(&dir.join("heat"), "Angular distance", &d, 30).unwrap();
        let s = vec![Series {
            name: "greedy".into(),
            points: vec![(0.0, 10.0), (1.0, 12.0), (2.0, 30.0)],
            ci: vec![[9.0, 11.0], [11.0, 13.0], [20.0, 40.0]],
        }];
        let r = Reference {
            label: "dense".into(),
            y: 10.0,
        };
        let files3 = line_chart(
            &dir.join("line"),
            "Greedy",
            "layers removed",
            "perplexity",
            &s,
            Axis::LogCounts,
            Some(&r),
        )
        .unwrap();
        for f in files.iter().chain(&files2).chain(&files3) {
            let bytes = std::fs::read(f).unwrap();
            assert!(bytes.len() > 1000, "{}", f.display());
            if f.extension().unwrap() == "png" {
                assert_eq!(&bytes[1..4], b"PNG");
            } else {
                assert!(String::from_utf8_lossy(&bytes).contains("<svg"));
            }
        }
    }
}
