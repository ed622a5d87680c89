//! Pictures of flows as PNG files, drawn with plotters and a font shipped in the crate (DejaVu Sans), so
//! nothing depends on the fonts of the machine.

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use ndarray::ArrayView2;
use plotters::prelude::*;

static FONT: Once = Once::new();

/// Registers the shipped font under the family name `sans-serif` (once per process).
fn register_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSans.ttf");
        // Registration fails only on a malformed font, which the tests would catch at the first caption.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

/// The square window that holds both point clouds (the first two coordinates), with a margin.
fn bounds<'a>(clouds: impl IntoIterator<Item = ArrayView2<'a, f32>>) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for cloud in clouds {
        for row in cloud.rows() {
            let (x, y) = (row[0] as f64, row[1] as f64);
            if x.is_finite() && y.is_finite() {
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
        }
    }
    if x0 > x1 {
        return (-1.0, 1.0, -1.0, 1.0);
    }
    let half = ((x1 - x0).max(y1 - y0) / 2.0 * 1.08).max(1e-3);
    let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
    (cx - half, cx + half, cy - half, cy + half)
}

/// Draws generated samples over reference samples of the target (2-D; higher dimensions show the first two
/// coordinates) into `path`.
pub fn samples_png(
    path: &Path,
    title: &str,
    generated: ArrayView2<f32>,
    reference: ArrayView2<f32>,
) -> Result<()> {
    register_font();
    let (x0, x1, y0, y1) = bounds([generated.view(), reference.view()]);
    let root = BitMapBackend::new(path, (720, 720)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(40)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .label_style(("sans-serif", 14))
            .draw()?;
        let grey = RGBColor(150, 150, 150).mix(0.35).filled();
        chart
            .draw_series(
                reference
                    .rows()
                    .into_iter()
                    .map(|r| Circle::new((r[0] as f64, r[1] as f64), 1, grey)),
            )?
            .label("target data")
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, RGBColor(150, 150, 150).filled()));
        let blue = RGBColor(31, 119, 180).mix(0.45).filled();
        chart
            .draw_series(
                generated
                    .rows()
                    .into_iter()
                    .map(|r| Circle::new((r[0] as f64, r[1] as f64), 1, blue)),
            )?
            .label("generated")
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, RGBColor(31, 119, 180).filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .label_font(("sans-serif", 14))
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("cannot draw {}", path.display()))
}
