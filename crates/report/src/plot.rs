//! Pictures of flows as PNG files and GIF animations, drawn with plotters and a font shipped in the crate
//! (DejaVu Sans), so nothing depends on the fonts of the machine.
//!
//! Every function here takes plain arrays (no tensors), so [`crate::run_report`] decides what to compute and this
//! module only how it looks. Every file is written atomically: it is drawn under a temporary name beside the
//! target with the same extension (plotters picks the format from it), then renamed into place, so a reader
//! never sees half a picture and a failed drawing leaves nothing behind.
//!
//! Plotters does not clip drawings to the plotting area, so everything in data coordinates is clipped here to
//! the [`Window`]: points outside are left out and line segments are cut at its edge.
//!
//! One palette for every picture: the source (t = 0) in orange, generated samples (t = 1) in blue, target data
//! in grey, speeds and densities in viridis.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use ferroflow_models::checkpoint::TemporaryFile;
use ndarray::{Array2, ArrayView2};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::element::ComposedElement;
use plotters::prelude::*;

static FONT: Once = Once::new();

/// Pixel size of the square single-panel pictures (samples, trajectories, density).
pub const SQUARE_SIZE: (u32, u32) = (720, 720);
/// Pixel size of one panel of a row of small multiples (velocity fields).
pub const PANEL_SIZE: (u32, u32) = (340, 372);
/// Pixel width of the colour bar right of a row of panels or a heat map.
pub const COLOUR_BAR_WIDTH: u32 = 100;
/// Pixel height of the title band above a row of panels.
pub const TITLE_HEIGHT: u32 = 36;
/// Pixel size of the loss curve.
pub const LOSS_SIZE: (u32, u32) = (720, 460);
/// Pixel size of the animation.
pub const GIF_SIZE: (u32, u32) = (480, 480);

/// Points at t = 0 (source samples, trajectory starts).
pub const SOURCE_COLOUR: RGBColor = RGBColor(230, 115, 0);
/// Points at t = 1 (generated samples, trajectory ends).
pub const GENERATED_COLOUR: RGBColor = RGBColor(31, 119, 180);
/// Reference samples of the target.
pub const TARGET_COLOUR: RGBColor = RGBColor(150, 150, 150);
/// Trajectory polylines.
const PATH_COLOUR: RGBColor = RGBColor(95, 135, 185);
/// Light grid lines.
const GRID_COLOUR: RGBColor = RGBColor(232, 232, 232);

/// Registers the shipped font under the family name `sans-serif` (once per process).
pub(crate) fn register_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSans.ttf");
        // Registration fails only on a malformed font, which the tests would catch at the first caption.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

/// Turns a plotters error (whose type borrows the backend, so it cannot travel in an `anyhow::Error`) into
/// its message.
pub(crate) trait Drawn<T> {
    fn drawn(self) -> Result<T>;
}

impl<T, E: std::fmt::Display> Drawn<T> for std::result::Result<T, E> {
    fn drawn(self) -> Result<T> {
        self.map_err(|e| anyhow!("{e}"))
    }
}

/// The drawing area of a bitmap.
pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
/// A chart over a window of the plane.
type PlaneChart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// `dir/.name.tmp-<pid>-<k>.ext` beside `path`: hidden, unique within the process, same extension.
fn temporary_picture_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let stem = path.file_stem().map(OsString::from).unwrap_or_default();
    let mut name = OsString::from(".");
    name.push(stem);
    name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    if let Some(extension) = path.extension() {
        name.push(".");
        name.push(extension);
    }
    path.with_file_name(name)
}

/// Moves a finished temporary picture into place; when drawing or the rename failed, dropping `tmp` removes
/// it.
fn move_into_place(tmp: TemporaryFile, path: &Path, drawing: Result<()>) -> Result<()> {
    drawing.with_context(|| format!("cannot draw {}", path.display()))?;
    tmp.rename_to(path)
        .with_context(|| format!("cannot move {} into place", path.display()))
}

/// Draws a PNG of `size` pixels with `draw` and writes it atomically to `path`. No temporary file is left
/// behind when drawing, writing or the rename fails, nor when `draw` panics.
pub(crate) fn png_atomic(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area) -> Result<()>,
) -> Result<()> {
    if path.extension().and_then(|e| e.to_str()) != Some("png") {
        bail!("{}: a picture file name must end in .png", path.display());
    }
    register_font();
    let tmp = TemporaryFile::at(temporary_picture_path(path));
    let drawing = (|| {
        let root = BitMapBackend::new(tmp.path(), size).into_drawing_area();
        root.fill(&WHITE).drawn()?;
        draw(&root)?;
        root.present().drawn()
    })();
    move_into_place(tmp, path, drawing)
}

/// Draws an animated GIF of `size` pixels and writes it atomically to `path`; `draw` presents each frame.
fn gif_atomic(
    path: &Path,
    size: (u32, u32),
    frame_delay_ms: u32,
    draw: impl FnOnce(&Area) -> Result<()>,
) -> Result<()> {
    if path.extension().and_then(|e| e.to_str()) != Some("gif") {
        bail!("{}: an animation file name must end in .gif", path.display());
    }
    register_font();
    let tmp = TemporaryFile::at(temporary_picture_path(path));
    let drawing = (|| {
        let root = BitMapBackend::gif(tmp.path(), size, frame_delay_ms)
            .drawn()?
            .into_drawing_area();
        draw(&root)
        // Dropping the backend here finishes the GIF file before it is renamed.
    })();
    move_into_place(tmp, path, drawing)
}

/// A rectangle of the plane `[x_min, x_max] x [y_min, y_max]` that panels share, so they can be compared.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    /// Left edge.
    pub x_min: f64,
    /// Right edge.
    pub x_max: f64,
    /// Bottom edge.
    pub y_min: f64,
    /// Top edge.
    pub y_max: f64,
}

impl Window {
    /// The square window that holds every finite point of `clouds` (first two coordinates), with a margin.
    pub fn around<'a>(clouds: impl IntoIterator<Item = ArrayView2<'a, f32>>) -> Self {
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for cloud in clouds {
            if cloud.ncols() < 2 {
                continue;
            }
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
            return Self {
                x_min: -1.0,
                x_max: 1.0,
                y_min: -1.0,
                y_max: 1.0,
            };
        }
        let half = ((x1 - x0).max(y1 - y0) / 2.0 * 1.08).max(1e-3);
        let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
        Self {
            x_min: cx - half,
            x_max: cx + half,
            y_min: cy - half,
            y_max: cy + half,
        }
    }

    /// Whether `(x, y)` is a finite point inside the window.
    pub fn contains(&self, (x, y): (f64, f64)) -> bool {
        (self.x_min..=self.x_max).contains(&x) && (self.y_min..=self.y_max).contains(&y)
    }

    /// The centres of a `per_side x per_side` grid of cells covering the window, as `[per_side^2, 2]` rows
    /// with x varying fastest and y growing upwards: cell `(ix, iy)` is row `iy * per_side + ix`.
    pub fn grid(&self, per_side: usize) -> Array2<f32> {
        let (dx, dy) = self.cell_size(per_side);
        Array2::from_shape_fn((per_side * per_side, 2), |(row, coord)| {
            let (ix, iy) = (row % per_side, row / per_side);
            let value = if coord == 0 {
                self.x_min + (ix as f64 + 0.5) * dx
            } else {
                self.y_min + (iy as f64 + 0.5) * dy
            };
            value as f32
        })
    }

    /// Width and height of one cell of [`Window::grid`].
    fn cell_size(&self, per_side: usize) -> (f64, f64) {
        let per_side = per_side.max(1) as f64;
        (
            (self.x_max - self.x_min) / per_side,
            (self.y_max - self.y_min) / per_side,
        )
    }

    /// The part of the segment `a`-`b` inside the window (Liang-Barsky), if any.
    fn clip(&self, a: (f64, f64), b: (f64, f64)) -> Option<((f64, f64), (f64, f64))> {
        if ![a.0, a.1, b.0, b.1].iter().all(|v| v.is_finite()) {
            return None;
        }
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let (mut enter, mut leave) = (0.0f64, 1.0f64);
        for (p, q) in [
            (-dx, a.0 - self.x_min),
            (dx, self.x_max - a.0),
            (-dy, a.1 - self.y_min),
            (dy, self.y_max - a.1),
        ] {
            if p == 0.0 {
                if q < 0.0 {
                    return None;
                }
            } else {
                let r = q / p;
                if p < 0.0 {
                    enter = enter.max(r);
                } else {
                    leave = leave.min(r);
                }
            }
        }
        (enter <= leave).then_some((
            (a.0 + enter * dx, a.1 + enter * dy),
            (a.0 + leave * dx, a.1 + leave * dy),
        ))
    }

    /// The rows of `points` (first two coordinates) that lie inside the window.
    fn inside(&self, points: ArrayView2<f32>) -> Vec<(f64, f64)> {
        points
            .rows()
            .into_iter()
            .filter(|row| row.len() >= 2)
            .map(|row| (row[0] as f64, row[1] as f64))
            .filter(|&p| self.contains(p))
            .collect()
    }
}

/// The viridis colour map at `value` in `[0, 1]` (clamped), interpolated between nine of its entries.
pub fn viridis(value: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (71, 44, 122),
        (59, 81, 139),
        (44, 113, 142),
        (33, 144, 141),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ];
    let value = if value.is_finite() {
        value.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let position = value * (STOPS.len() - 1) as f64;
    let low = (position.floor() as usize).min(STOPS.len() - 2);
    let frac = position - low as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * frac).round() as u8;
    let (a, b) = (STOPS[low], STOPS[low + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Margin around a chart, and the sizes of its axis label areas, in pixels.
const CHART_MARGIN: u32 = 10;
const X_LABEL_AREA: u32 = 26;
const Y_LABEL_AREA: u32 = 34;

/// A chart over `window` in `area` with light grid lines and the shipped font. The margins are widened on
/// one axis so the plotting area is square: the windows are square, so circles stay round and arrows keep
/// their directions.
fn plane_chart<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    caption_size: u32,
    window: &Window,
) -> Result<PlaneChart<'a, 'b>> {
    let font = ("sans-serif", caption_size).into_font();
    let (_, text_height) = area
        .estimate_text_size(caption, &TextStyle::from(font.clone()))
        .drawn()?;
    // As plotters lays out a caption: the text's height plus padding of half of it, at most 5 pixels, on
    // each side.
    let caption_height = text_height + 2 * (text_height / 2).min(5);
    let (width, height) = area.dim_in_pixel();
    let free_width = width.saturating_sub(2 * CHART_MARGIN + Y_LABEL_AREA);
    let free_height = height.saturating_sub(2 * CHART_MARGIN + X_LABEL_AREA + caption_height);
    let side = free_width.min(free_height);
    let (extra_x, extra_y) = (free_width - side, free_height - side);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, font)
        .margin_left(CHART_MARGIN + extra_x / 2)
        .margin_right(CHART_MARGIN + extra_x - extra_x / 2)
        .margin_top(CHART_MARGIN + extra_y / 2)
        .margin_bottom(CHART_MARGIN + extra_y - extra_y / 2)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(window.x_min..window.x_max, window.y_min..window.y_max)
        .drawn()?;
    chart
        .configure_mesh()
        .bold_line_style(GRID_COLOUR)
        .light_line_style(WHITE)
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|v| short_number(*v))
        .y_label_formatter(&|v| short_number(*v))
        .label_style(("sans-serif", 12))
        .draw()
        .drawn()?;
    Ok(chart)
}

/// Pixels per data unit along x of a chart's plotting area (the windows are square, so y is alike).
fn pixels_per_unit(chart: &PlaneChart, window: &Window) -> f64 {
    let (x_range, _) = chart.plotting_area().get_pixel_range();
    (x_range.end - x_range.start) as f64 / (window.x_max - window.x_min)
}

/// Dots of `radius` pixels at the rows of `points` inside the window.
fn draw_dots(
    chart: &mut PlaneChart,
    window: &Window,
    points: ArrayView2<f32>,
    radius: u32,
    style: ShapeStyle,
) -> Result<()> {
    chart
        .draw_series(
            window
                .inside(points)
                .into_iter()
                .map(|p| Circle::new(p, radius, style)),
        )
        .drawn()?;
    Ok(())
}

/// A legend in the upper left corner.
fn draw_legend<'a, 'b: 'a>(chart: &mut PlaneChart<'a, 'b>) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(RGBColor(120, 120, 120))
        .background_style(WHITE.mix(0.85))
        .label_font(("sans-serif", 13))
        .draw()
        .drawn()
}

/// A legend entry: a filled dot.
fn legend_dot(colour: RGBColor) -> impl Fn((i32, i32)) -> Circle<(i32, i32), i32> {
    move |(x, y)| Circle::new((x + 8, y), 4, colour.filled())
}

/// Draws generated samples over reference samples of the target (2-D; higher dimensions show the first two
/// coordinates) into `path`, in a window that holds both.
pub fn samples_png(
    path: &Path,
    title: &str,
    generated: ArrayView2<f32>,
    reference: ArrayView2<f32>,
) -> Result<()> {
    let window = Window::around([generated.view(), reference.view()]);
    samples_png_in(path, title, generated, reference, &window)
}

/// [`samples_png`] in a given window (points outside it are left out).
pub fn samples_png_in(
    path: &Path,
    title: &str,
    generated: ArrayView2<f32>,
    reference: ArrayView2<f32>,
    window: &Window,
) -> Result<()> {
    png_atomic(path, SQUARE_SIZE, |root| {
        let mut chart = plane_chart(root, title, 22, window)?;
        draw_samples(&mut chart, window, generated, reference)
    })
}

/// One panel of [`samples_panels_png`]: generated and reference points in one plane window.
pub struct SamplesPanel<'a> {
    /// The panel's caption.
    pub caption: String,
    /// Generated points, `[n, >= 2]` (the first two columns are drawn).
    pub generated: ArrayView2<'a, f32>,
    /// Reference points, drawn beneath.
    pub reference: ArrayView2<'a, f32>,
    /// The panel's window.
    pub window: Window,
}

/// Draws `panels` side by side under `title` (each as [`samples_png_in`] draws one), into `path`.
pub fn samples_panels_png(path: &Path, title: &str, panels: &[SamplesPanel]) -> Result<()> {
    let (side, _) = SQUARE_SIZE;
    let width = side * panels.len().max(1) as u32;
    png_atomic(path, (width, side), |root| {
        let root = root.titled(title, ("sans-serif", 22)).drawn()?;
        for (area, panel) in root.split_evenly((1, panels.len().max(1))).iter().zip(panels) {
            let mut chart = plane_chart(area, &panel.caption, 16, &panel.window)?;
            draw_samples(&mut chart, &panel.window, panel.generated, panel.reference)?;
        }
        Ok(())
    })
}

/// Reference points in grey beneath generated points in blue, with their legend.
fn draw_samples<'a, 'b: 'a>(
    chart: &mut PlaneChart<'a, 'b>,
    window: &Window,
    generated: ArrayView2<f32>,
    reference: ArrayView2<f32>,
) -> Result<()> {
    draw_dots(chart, window, reference, 1, TARGET_COLOUR.mix(0.35).filled())?;
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), u32>>())
        .drawn()?
        .label("target data")
        .legend(legend_dot(TARGET_COLOUR));
    draw_dots(chart, window, generated, 1, GENERATED_COLOUR.mix(0.45).filled())?;
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), u32>>())
        .drawn()?
        .label("generated")
        .legend(legend_dot(GENERATED_COLOUR));
    draw_legend(chart)
}

/// Which axes of a plane chart wrap around (angles: period 2 pi), so that a path leaving one edge comes back
/// at the other.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Periods {
    /// The period of x, if x wraps.
    pub x: Option<f64>,
    /// The period of y, if y wraps.
    pub y: Option<f64>,
}

impl Periods {
    /// The pieces of the segment a -> b to draw. On a wrapping axis a step longer than half the period
    /// crosses the seam the short way round: it is drawn as two pieces, a -> (b shifted by a period) and
    /// (a shifted back) -> b, each clipped to the window.
    fn pieces(&self, window: &Window, a: (f64, f64), b: (f64, f64)) -> Vec<((f64, f64), (f64, f64))> {
        let shift = |period: Option<f64>, from: f64, to: f64| match period {
            Some(p) if (to - from).abs() > p / 2.0 => -p * (to - from).signum(),
            _ => 0.0,
        };
        let (sx, sy) = (shift(self.x, a.0, b.0), shift(self.y, a.1, b.1));
        if sx == 0.0 && sy == 0.0 {
            return window.clip(a, b).into_iter().collect();
        }
        [
            window.clip(a, (b.0 + sx, b.1 + sy)),
            window.clip((a.0 - sx, a.1 - sy), b),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Draws trajectories: `states[k]` holds every point at the k-th time (`[n_points, >= 2]`, same rows at
/// every time). Polylines in a light colour, start points in the source colour, end points in the generated
/// colour, over reference samples of the target (may be empty).
pub fn trajectories_png(
    path: &Path,
    title: &str,
    states: &[Array2<f32>],
    reference: ArrayView2<f32>,
    window: &Window,
    periods: Periods,
) -> Result<()> {
    let (Some(first), Some(last)) = (states.first(), states.last()) else {
        bail!("{}: no states to draw trajectories from", path.display());
    };
    if states.iter().any(|s| s.dim() != first.dim()) || first.ncols() < 2 {
        bail!(
            "{}: every state must have the shape of the first, [{}, >= 2]",
            path.display(),
            first.nrows()
        );
    }
    png_atomic(path, SQUARE_SIZE, |root| {
        let mut chart = plane_chart(root, title, 22, window)?;
        draw_dots(&mut chart, window, reference, 1, TARGET_COLOUR.mix(0.3).filled())?;
        let path_style = PATH_COLOUR.mix(0.45).stroke_width(1);
        let segments = (0..first.nrows()).flat_map(|point_idx| {
            states.windows(2).flat_map(move |pair| {
                let a = (pair[0][[point_idx, 0]] as f64, pair[0][[point_idx, 1]] as f64);
                let b = (pair[1][[point_idx, 0]] as f64, pair[1][[point_idx, 1]] as f64);
                periods.pieces(window, a, b)
            })
        });
        chart
            .draw_series(segments.map(|(a, b)| PathElement::new(vec![a, b], path_style)))
            .drawn()?
            .label("path")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], PATH_COLOUR.stroke_width(2)));
        draw_dots(
            &mut chart,
            window,
            first.view(),
            2,
            SOURCE_COLOUR.mix(0.85).filled(),
        )?;
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), u32>>())
            .drawn()?
            .label("start (t = 0)")
            .legend(legend_dot(SOURCE_COLOUR));
        draw_dots(
            &mut chart,
            window,
            last.view(),
            2,
            GENERATED_COLOUR.mix(0.85).filled(),
        )?;
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), u32>>())
            .drawn()?
            .label("end (t = 1)")
            .legend(legend_dot(GENERATED_COLOUR));
        draw_legend(&mut chart)
    })
}

/// Something to point out on a field panel.
#[derive(Clone, Debug, PartialEq)]
pub enum Marker {
    /// A labelled cross at a point.
    Point {
        /// Where.
        at: (f64, f64),
        /// The label written beside it.
        label: String,
    },
    /// A labelled dashed circle.
    Circle {
        /// Its centre.
        centre: (f64, f64),
        /// Its radius in data units.
        radius: f64,
        /// The label written at its right.
        label: String,
    },
}

/// One panel of a velocity-field figure.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldPanel {
    /// The panel's caption (its time, what field it is).
    pub caption: String,
    /// Where the arrows are centred, `[n_arrows, 2]` (usually [`Window::grid`]).
    pub positions: Array2<f32>,
    /// The velocity at each position, `[n_arrows, 2]`.
    pub velocities: Array2<f32>,
    /// Points drawn faintly under the arrows (the samples at that time; may be empty).
    pub samples: Array2<f32>,
    /// Points and circles to point out.
    pub markers: Vec<Marker>,
}

/// How arrow lengths are scaled in [`field_png`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArrowScale {
    /// One length scale for every panel, so lengths compare across panels.
    Shared,
    /// A length scale per panel, so each panel's pattern is readable even when typical speeds differ a lot
    /// between panels; the colour scale, always shared, still compares speeds.
    PerPanel,
}

/// The arrows of [`field_png`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Arrows {
    /// The distance between neighbouring arrows in data units (the spacing of the grid): the longest an
    /// arrow is drawn.
    pub spacing: f64,
    /// How lengths are scaled.
    pub scale: ArrowScale,
}

/// The 90th percentile of the finite speeds of `velocities` (`[n, 2]` rows), or `None` when there are none.
fn typical_speed<'a>(velocities: impl IntoIterator<Item = &'a Array2<f32>>) -> Option<f64> {
    let mut speeds: Vec<f64> = velocities
        .into_iter()
        .flat_map(|v| v.rows().into_iter().map(|r| (r[0] as f64).hypot(r[1] as f64)))
        .filter(|s| s.is_finite())
        .collect();
    speeds.sort_by(f64::total_cmp);
    speeds.get(speeds.len() * 9 / 10).copied()
}

/// Draws a row of velocity-field panels sharing `window` and one colour scale for speed (with a colour bar),
/// under a title. Arrows are centred on their positions; their length is proportional to speed, the 90th
/// percentile of speeds (over all panels or per panel, see [`ArrowScale`]) drawn at 90% of the spacing and
/// faster arrows capped at the spacing, so one very fast region does not shrink every other arrow to a dot.
pub fn field_png(
    path: &Path,
    title: &str,
    panels: &[FieldPanel],
    window: &Window,
    arrows: Arrows,
) -> Result<()> {
    if panels.is_empty() {
        bail!("{}: no panels to draw", path.display());
    }
    for panel in panels {
        if panel.positions.dim() != panel.velocities.dim() || panel.positions.ncols() != 2 {
            bail!(
                "{}: panel {:?} has positions {:?} and velocities {:?}; both must be [n, 2]",
                path.display(),
                panel.caption,
                panel.positions.dim(),
                panel.velocities.dim()
            );
        }
    }
    let max_speed = panels
        .iter()
        .flat_map(|p| {
            p.velocities
                .rows()
                .into_iter()
                .map(|v| (v[0] as f64).hypot(v[1] as f64))
        })
        .filter(|s| s.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let shared_typical = typical_speed(panels.iter().map(|p| &p.velocities));
    let width = PANEL_SIZE.0 * panels.len() as u32 + COLOUR_BAR_WIDTH;
    let height = PANEL_SIZE.1 + TITLE_HEIGHT;
    png_atomic(path, (width, height), |root| {
        let body = root.titled(title, ("sans-serif", 20)).drawn()?;
        let (row, bar) = body.split_horizontally(PANEL_SIZE.0 * panels.len() as u32);
        for (panel, area) in panels.iter().zip(row.split_evenly((1, panels.len()))) {
            let typical = match arrows.scale {
                ArrowScale::Shared => shared_typical,
                ArrowScale::PerPanel => typical_speed([&panel.velocities]),
            };
            let length_per_speed = 0.9 * arrows.spacing / typical.unwrap_or(max_speed).max(1e-12);
            let mut chart = plane_chart(&area, &panel.caption, 15, window)?;
            draw_dots(
                &mut chart,
                window,
                panel.samples.view(),
                1,
                TARGET_COLOUR.mix(0.4).filled(),
            )?;
            let pixels = pixels_per_unit(&chart, window);
            let drawn = panel
                .positions
                .rows()
                .into_iter()
                .zip(panel.velocities.rows())
                .filter_map(|(at, v)| {
                    let (vx, vy) = (v[0] as f64, v[1] as f64);
                    let speed = vx.hypot(vy);
                    let at = (at[0] as f64, at[1] as f64);
                    (speed.is_finite() && window.contains(at)).then(|| {
                        let length = (speed * length_per_speed).min(arrows.spacing);
                        // The top of viridis (yellow) is hard to see on white, so arrows use 90% of it.
                        let colour = viridis(0.9 * speed / max_speed);
                        arrow(at, (vx, vy), length * pixels, colour)
                    })
                });
            chart.draw_series(drawn).drawn()?;
            draw_markers(&mut chart, window, &panel.markers)?;
        }
        colour_bar(
            &bar,
            0.0,
            max_speed / 0.9,
            "speed |v|",
            0.0..0.9,
            height - TITLE_HEIGHT,
        )
    })
}

/// An arrow drawn in pixels around a point in data coordinates.
type Arrow<DB> = ComposedElement<(f64, f64), DB, PathElement<(i32, i32)>, Polygon<(i32, i32)>>;

/// An arrow of `length_px` pixels centred on `at`, pointing along `direction`, with a filled head. Drawn in
/// pixel offsets, so heads keep their shape whatever the window.
fn arrow<DB: DrawingBackend>(
    at: (f64, f64),
    direction: (f64, f64),
    length_px: f64,
    colour: RGBColor,
) -> Arrow<DB> {
    let norm = direction.0.hypot(direction.1);
    // Pixel rows grow downwards, so the y component flips.
    let (ux, uy) = if norm > 0.0 {
        (direction.0 / norm, -direction.1 / norm)
    } else {
        (0.0, 0.0)
    };
    let half = length_px / 2.0;
    let head = (length_px * 0.4).clamp(1.5, 6.0);
    let tip = (ux * half, uy * half);
    let base = (tip.0 - ux * head, tip.1 - uy * head);
    let (px, py) = (-uy * head * 0.5, ux * head * 0.5);
    let pixel = |(x, y): (f64, f64)| (x.round() as i32, y.round() as i32);
    EmptyElement::at(at)
        + PathElement::new(
            vec![pixel((-ux * half, -uy * half)), pixel(base)],
            colour.stroke_width(1),
        )
        + Polygon::new(
            vec![
                pixel(tip),
                pixel((base.0 + px, base.1 + py)),
                pixel((base.0 - px, base.1 - py)),
            ],
            colour.filled(),
        )
}

/// Draws the markers of a panel (clipped to the window).
fn draw_markers(chart: &mut PlaneChart, window: &Window, markers: &[Marker]) -> Result<()> {
    let ink = RGBColor(20, 20, 20);
    for marker in markers {
        match marker {
            Marker::Point { at, label } => {
                if !window.contains(*at) {
                    continue;
                }
                chart
                    .draw_series([EmptyElement::at(*at)
                        + Cross::new((0, 0), 6, ink.stroke_width(3))
                        + Text::new(
                            label.clone(),
                            (8, -18),
                            ("sans-serif", 14).into_font().color(&ink),
                        )])
                    .drawn()?;
            }
            Marker::Circle {
                centre,
                radius,
                label,
            } => {
                let n_segments = 72;
                let point = |k: usize| {
                    let angle = k as f64 / n_segments as f64 * std::f64::consts::TAU;
                    (centre.0 + radius * angle.cos(), centre.1 + radius * angle.sin())
                };
                // Every other segment, for a dashed outline.
                let dashes = (0..n_segments)
                    .step_by(2)
                    .filter_map(|k| window.clip(point(k), point(k + 1)));
                chart
                    .draw_series(dashes.map(|(a, b)| PathElement::new(vec![a, b], ink.stroke_width(2))))
                    .drawn()?;
                let right = (centre.0 + radius, centre.1);
                if window.contains(right) {
                    chart
                        .draw_series([EmptyElement::at(right)
                            + Text::new(label.clone(), (6, -7), ("sans-serif", 13).into_font().color(&ink))])
                        .drawn()?;
                }
            }
        }
    }
    Ok(())
}

/// A vertical colour bar in `area` for values `low..high`, using the part `colours` of viridis, labelled on
/// its right; `height` is the full height of the area in pixels, of which the bar takes the middle.
fn colour_bar(
    area: &Area,
    low: f64,
    high: f64,
    label: &str,
    colours: std::ops::Range<f64>,
    height: u32,
) -> Result<()> {
    let high = if high > low { high } else { low + 1.0 };
    let area = area.margin(height / 10, height / 10, 4, 4);
    let mut chart = ChartBuilder::on(&area)
        .caption(label, ("sans-serif", 13))
        .set_label_area_size(LabelAreaPosition::Right, 50)
        .build_cartesian_2d(0.0..1.0, low..high)
        .drawn()?;
    let n_bands = 100;
    let band = (high - low) / n_bands as f64;
    chart
        .draw_series((0..n_bands).map(|k| {
            let fraction = (k as f64 + 0.5) / n_bands as f64;
            let colour = viridis(colours.start + fraction * (colours.end - colours.start));
            let y = low + k as f64 * band;
            Rectangle::new([(0.0, y), (1.0, y + band)], colour.filled())
        }))
        .drawn()?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .disable_y_mesh()
        .y_labels(6)
        .y_label_formatter(&|v| short_number(*v))
        .label_style(("sans-serif", 12))
        .draw()
        .drawn()?;
    Ok(())
}

/// A number in at most four significant digits, without trailing noise.
pub fn short_number(value: f64) -> String {
    if value == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&value.abs()) {
        format!("{value:.2e}")
    } else {
        let digits = (3 - value.abs().log10().floor() as i32).clamp(0, 6) as usize;
        let text = format!("{value:.digits$}");
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        }
    }
}

/// Draws a heat map of `density` (`[per_side^2]` values in the order of [`Window::grid`]) over `window`, in
/// viridis from 0 to the largest finite value, with a colour bar; non-finite cells are left white.
pub fn density_png(
    path: &Path,
    title: &str,
    density: &[f64],
    per_side: usize,
    window: &Window,
) -> Result<()> {
    if per_side == 0 || density.len() != per_side * per_side {
        bail!(
            "{}: {} density values do not fill a {per_side} x {per_side} grid",
            path.display(),
            density.len()
        );
    }
    let max = density
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-300);
    let (dx, dy) = window.cell_size(per_side);
    let (width, height) = SQUARE_SIZE;
    png_atomic(path, (width + COLOUR_BAR_WIDTH, height), |root| {
        let (left, bar) = root.split_horizontally(width);
        let mut chart = plane_chart(&left, title, 20, window)?;
        chart
            .draw_series(
                density
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(cell, &v)| {
                        let (ix, iy) = ((cell % per_side) as f64, (cell / per_side) as f64);
                        let (x, y) = (window.x_min + ix * dx, window.y_min + iy * dy);
                        Rectangle::new([(x, y), (x + dx, y + dy)], viridis(v / max).filled())
                    }),
            )
            .drawn()?;
        colour_bar(&bar, 0.0, max, "density", 0.0..1.0, height)
    })
}

/// Draws a loss curve, `(step, loss)` points, with a logarithmic loss axis when the losses are positive
/// and span more than a factor of ten.
pub fn loss_png(path: &Path, title: &str, points: &[(f64, f64)]) -> Result<()> {
    let finite: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(s, l)| s.is_finite() && l.is_finite())
        .collect();
    if finite.is_empty() {
        bail!("{}: no finite loss values to draw", path.display());
    }
    let (mut x0, mut x1) = finite
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), (s, _)| (a.min(*s), b.max(*s)));
    if x1 <= x0 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let (low, high) = finite
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), (_, l)| (a.min(*l), b.max(*l)));
    let logarithmic = low > 0.0 && high / low > 10.0;
    png_atomic(path, LOSS_SIZE, |root| {
        let builder = || {
            let mut builder = ChartBuilder::on(root);
            builder
                .caption(title, ("sans-serif", 20))
                .margin(14)
                .margin_right(28)
                .x_label_area_size(40)
                .y_label_area_size(60);
            builder
        };
        if logarithmic {
            let chart = builder()
                .build_cartesian_2d(x0..x1, (low / 1.2..high * 1.2).log_scale())
                .drawn()?;
            draw_loss(chart, &finite, "loss (log scale)")
        } else {
            let pad = (high - low).max(high.abs() * 0.05).max(1e-12) * 0.08;
            let chart = builder()
                .build_cartesian_2d(x0..x1, (low - pad)..(high + pad))
                .drawn()?;
            draw_loss(chart, &finite, "loss")
        }
    })
}

/// The mesh and line of [`loss_png`] on either kind of loss axis.
fn draw_loss<Y>(
    mut chart: ChartContext<BitMapBackend, Cartesian2d<RangedCoordf64, Y>>,
    points: &[(f64, f64)],
    y_desc: &str,
) -> Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .bold_line_style(GRID_COLOUR)
        .light_line_style(WHITE)
        .x_desc("training step")
        .y_desc(y_desc)
        .x_label_formatter(&|v| short_number(*v))
        .y_label_formatter(&|v| short_number(*v))
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .draw()
        .drawn()?;
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            GENERATED_COLOUR.stroke_width(2),
        ))
        .drawn()?;
    if points.len() <= 60 {
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 3, GENERATED_COLOUR.filled())),
            )
            .drawn()?;
    }
    Ok(())
}

/// The timing of an animation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Delay between frames, in milliseconds (GIF stores hundredths of a second).
    pub frame_delay_ms: u32,
    /// How many more frames the last frame is held before the animation loops.
    pub hold_frames: usize,
}

/// Draws an animated GIF of points moving: frame `k` shows `frames[k]` (`[n_points, >= 2]`) at time
/// `times[k]`, coloured from the source colour at t = 0 to the generated colour at t = 1, over reference
/// samples of the target (may be empty).
pub fn flow_gif(
    path: &Path,
    title: &str,
    frames: &[ArrayView2<f32>],
    times: &[f64],
    reference: ArrayView2<f32>,
    window: &Window,
    timing: Timing,
) -> Result<()> {
    if frames.is_empty() || frames.len() != times.len() {
        bail!(
            "{}: {} frames and {} times; need as many of each, at least one",
            path.display(),
            frames.len(),
            times.len()
        );
    }
    gif_atomic(path, GIF_SIZE, timing.frame_delay_ms, |root| {
        for (frame, &t) in frames.iter().zip(times) {
            root.fill(&WHITE).drawn()?;
            let mut chart = plane_chart(root, &format!("{title}   t = {t:.2}"), 17, window)?;
            draw_dots(&mut chart, window, reference, 1, TARGET_COLOUR.mix(0.3).filled())?;
            let colour = blend(SOURCE_COLOUR, GENERATED_COLOUR, t);
            draw_dots(&mut chart, window, frame.view(), 2, colour.mix(0.75).filled())?;
            root.present().drawn()?;
        }
        for _ in 0..timing.hold_frames {
            root.present().drawn()?;
        }
        Ok(())
    })
}

/// `a` at `t = 0` to `b` at `t = 1`.
fn blend(a: RGBColor, b: RGBColor, t: f64) -> RGBColor {
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let mix = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * t).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Writes an RGB image (`width * height * 3` bytes, row by row from the top) as a PNG, atomically.
pub fn rgb_png(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<()> {
    if rgb.len() != width * height * 3 {
        bail!(
            "{}: {} bytes for a {width} x {height} RGB image (needs {})",
            path.display(),
            rgb.len(),
            width * height * 3
        );
    }
    let size = (width as u32, height as u32);
    png_atomic(path, size, |root| {
        // Plotters draws pixels one by one here; the grids are a few hundred pixels a side.
        for (pixel_idx, colour) in rgb.chunks_exact(3).enumerate() {
            let (x, y) = ((pixel_idx % width) as i32, (pixel_idx / width) as i32);
            root.draw_pixel((x, y), &RGBColor(colour[0], colour[1], colour[2]))
                .drawn()?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_across_a_seam_is_drawn_the_short_way_round() {
        let pi = std::f64::consts::PI;
        let window = Window {
            x_min: -pi,
            x_max: pi,
            y_min: -1.0,
            y_max: 1.0,
        };
        let periods = Periods {
            x: Some(2.0 * pi),
            y: None,
        };
        type Segment = ((f64, f64), (f64, f64));
        let length =
            |pieces: &[Segment]| -> f64 { pieces.iter().map(|(a, b)| (b.0 - a.0).hypot(b.1 - a.1)).sum() };
        // From longitude 3 to -3 the short way is 2 pi - 6 across the seam, in two pieces ending at the edges.
        let pieces = periods.pieces(&window, (3.0, 0.5), (-3.0, 0.5));
        assert_eq!(pieces.len(), 2, "{pieces:?}");
        assert!((length(&pieces) - (2.0 * pi - 6.0)).abs() < 1e-12, "{pieces:?}");
        assert!((pieces[0].1.0 - pi).abs() < 1e-12 && (pieces[1].0.0 + pi).abs() < 1e-12);
        // A step that does not cross is one piece, itself; y has no period, so a long step in y stays whole.
        assert_eq!(
            periods.pieces(&window, (0.0, -0.9), (1.0, 0.9)),
            vec![((0.0, -0.9), (1.0, 0.9))]
        );
        assert_eq!(
            Periods::default().pieces(&window, (3.0, 0.0), (-3.0, 0.0)).len(),
            1
        );
    }

    #[test]
    fn clipping_keeps_the_part_inside() {
        let window = Window {
            x_min: 0.0,
            x_max: 1.0,
            y_min: 0.0,
            y_max: 1.0,
        };
        assert_eq!(
            window.clip((0.2, 0.2), (0.4, 0.6)),
            Some(((0.2, 0.2), (0.4, 0.6)))
        );
        assert_eq!(
            window.clip((-1.0, 0.5), (2.0, 0.5)),
            Some(((0.0, 0.5), (1.0, 0.5)))
        );
        assert_eq!(window.clip((-1.0, 2.0), (-0.5, 3.0)), None);
        assert_eq!(window.clip((0.5, 0.5), (f64::NAN, 0.5)), None);
    }

    #[test]
    fn grid_rows_run_x_fastest_from_the_bottom() {
        let window = Window {
            x_min: 0.0,
            x_max: 4.0,
            y_min: -2.0,
            y_max: 2.0,
        };
        let grid = window.grid(4);
        assert_eq!(grid.dim(), (16, 2));
        assert_eq!((grid[[0, 0]], grid[[0, 1]]), (0.5, -1.5));
        assert_eq!((grid[[1, 0]], grid[[1, 1]]), (1.5, -1.5));
        assert_eq!((grid[[4, 0]], grid[[4, 1]]), (0.5, -0.5));
    }

    #[test]
    fn temporary_names_keep_the_extension_and_hide() {
        let tmp = temporary_picture_path(Path::new("/runs/a/velocity.png"));
        let name = tmp.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(".velocity.tmp-") && name.ends_with(".png"),
            "{name}"
        );
        assert_eq!(tmp.parent(), Some(Path::new("/runs/a")));
    }

    fn temporaries(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn failed_pictures_leave_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("ferroflow-plot-failures-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fill = |area: &Area| area.fill(&BLACK).drawn();

        // The rename fails: the final name is a directory.
        let taken = dir.join("samples.png");
        std::fs::create_dir(&taken).unwrap();
        let message = format!("{:#}", png_atomic(&taken, (8, 8), fill).unwrap_err());
        assert!(message.contains("samples.png"), "{message}");
        assert_eq!(temporaries(&dir), Vec::<String>::new());

        // Drawing fails after the backend exists (dropping it writes the file), and drawing panics.
        let message = format!(
            "{:#}",
            png_atomic(&dir.join("broken.png"), (8, 8), |_| bail!("no data")).unwrap_err()
        );
        assert!(
            message.contains("broken.png") && message.contains("no data"),
            "{message}"
        );
        let outcome = std::panic::catch_unwind(|| {
            png_atomic(&dir.join("panic.png"), (8, 8), |area| {
                area.fill(&BLACK).drawn()?;
                panic!("a bug while drawing")
            })
        });
        assert!(outcome.is_err());
        assert_eq!(temporaries(&dir), Vec::<String>::new());

        // The folder does not exist; a GIF whose rename fails.
        assert!(png_atomic(&dir.join("gone/samples.png"), (8, 8), fill).is_err());
        let taken = dir.join("flow.gif");
        std::fs::create_dir(&taken).unwrap();
        assert!(gif_atomic(&taken, (8, 8), 10, |area| area.present().drawn()).is_err());
        assert_eq!(temporaries(&dir), Vec::<String>::new());

        png_atomic(&dir.join("fine.png"), (8, 8), fill).unwrap();
        assert!(dir.join("fine.png").is_file());
        assert_eq!(temporaries(&dir), Vec::<String>::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(1.23456), "1.235");
        assert_eq!(short_number(250.0), "250");
        assert_eq!(short_number(0.5), "0.5");
        assert_eq!(short_number(1.5e-5), "1.50e-5");
    }
}
