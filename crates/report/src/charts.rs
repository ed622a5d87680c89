//! Charts of measured series for studies and benchmarks: panels of lines over a categorical x axis (one line
//! per series), and grids of 2-D scatter plots. Inputs are plain values; files are written atomically.

use std::path::Path;

use anyhow::Result;
use ndarray::Array2;
use plotters::prelude::*;

use crate::plot::{Drawn, png_atomic};

/// Line colours, in series order (repeated beyond four series).
const SERIES_COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

/// One named line: `(x index, value)` points; non-finite values are left out.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// Points as (index into the x labels, value).
    pub points: Vec<(usize, f64)>,
}

/// One panel of [`lines_png`]: a caption and its series.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// The panel's caption.
    pub caption: String,
    /// Its lines.
    pub series: Vec<Series>,
}

/// Draws `panels` side by side under `title`, each with the categories `x_labels` on its x axis (named
/// `x_name`) and one line with dots per series, into `path` (1200 x 520 pixels for two panels).
pub fn lines_png(
    path: &Path,
    title: &str,
    x_name: &str,
    x_labels: &[String],
    panels: &[Panel],
) -> Result<()> {
    let width = 600 * panels.len().max(1) as u32;
    png_atomic(path, (width, 520), |root| {
        let root = root.titled(title, ("sans-serif", 22)).drawn()?;
        let areas = root.split_evenly((1, panels.len().max(1)));
        let n_labels = x_labels.len() as f64;
        for (area, panel) in areas.iter().zip(panels) {
            let values: Vec<f64> = panel
                .series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1))
                .filter(|v| v.is_finite())
                .collect();
            let (mut low, mut high) = values
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            if low > high {
                (low, high) = (0.0, 1.0);
            }
            let pad = ((high - low) * 0.08).max(1e-3);
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.caption, ("sans-serif", 16))
                .margin(14)
                .x_label_area_size(40)
                .y_label_area_size(56)
                .build_cartesian_2d(-0.2..n_labels - 0.8, (low - pad)..(high + pad))
                .drawn()?;
            chart
                .configure_mesh()
                .light_line_style(WHITE)
                .x_labels(x_labels.len())
                .x_label_formatter(&|v| {
                    let index = v.round();
                    if (v - index).abs() < 1e-6 && index >= 0.0 && (index as usize) < x_labels.len() {
                        x_labels[index as usize].clone()
                    } else {
                        String::new()
                    }
                })
                .x_desc(x_name)
                .label_style(("sans-serif", 13))
                .draw()
                .drawn()?;
            for (series_idx, series) in panel.series.iter().enumerate() {
                let colour = SERIES_COLOURS[series_idx % SERIES_COLOURS.len()];
                let points: Vec<(f64, f64)> = series
                    .points
                    .iter()
                    .filter(|(_, v)| v.is_finite())
                    .map(|&(index, v)| (index as f64, v))
                    .collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                    .drawn()?
                    .label(series.name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                    });
                chart
                    .draw_series(points.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
                    .drawn()?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.85))
                .label_font(("sans-serif", 12))
                .draw()
                .drawn()?;
        }
        Ok(())
    })
}

/// Scatter plots of 2-D point sets (the first two columns), three per row, each titled, over the square
/// `[-half_width, half_width]^2` (points outside it or not finite are left out).
pub fn scatter_grid_png(path: &Path, pictures: &[(String, Array2<f32>)], half_width: f64) -> Result<()> {
    let columns = 3;
    let rows = pictures.len().div_ceil(columns).max(1);
    png_atomic(path, (360 * columns as u32, 360 * rows as u32), |root| {
        let panels = root.split_evenly((rows, columns));
        let range = -half_width..half_width;
        for (panel, (title, samples)) in panels.iter().zip(pictures) {
            let mut chart = ChartBuilder::on(panel)
                .caption(title, ("sans-serif", 14))
                .margin(8)
                .x_label_area_size(22)
                .y_label_area_size(30)
                .build_cartesian_2d(range.clone(), range.clone())
                .drawn()?;
            chart
                .configure_mesh()
                .light_line_style(WHITE)
                .label_style(("sans-serif", 11))
                .draw()
                .drawn()?;
            let blue = RGBColor(31, 119, 180).mix(0.35).filled();
            let inside = |v: f32| v.is_finite() && f64::from(v).abs() < half_width;
            chart
                .draw_series(
                    samples
                        .rows()
                        .into_iter()
                        .filter(|r| inside(r[0]) && inside(r[1]))
                        .map(|r| Circle::new((f64::from(r[0]), f64::from(r[1])), 1, blue)),
                )
                .drawn()?;
        }
        Ok(())
    })
}
