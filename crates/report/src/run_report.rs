//! The report of a trained run: pictures of what the flow learned and a Markdown page, `report.md`, that
//! shows them beside the run's config and metrics.
//!
//! For 2-D runs [`write_report`] draws, into the run folder:
//! - `samples.png`: generated samples (`samples.npy`) over fresh target samples;
//! - `trajectories.png`: the paths of a few hundred source points from t = 0 to 1, where minibatch-OT
//!   couplings visibly give straighter, non-crossing paths;
//! - `velocity.png`: the learned velocity field at several times, over the samples at those times;
//! - `density.png`: the learned density at t = 1 on a grid, from the exact log-likelihood
//!   (`log p1(x) = log p0(x0) - int_0^1 div v dt` with the divergence from autograd, see
//!   [`ferroflow_engine::likelihood`]); only for a Gaussian source, whose log-density is known in closed form;
//! - `loss.png`: the training loss curve from `loss.csv` (every run, any dimension);
//! - `flow.gif`: the samples moving from t = 0 to 1;
//! - `conditional_vs_marginal.png`, for a Gaussian source and the `ring` target: the conditional velocity
//!   `u_t(x | x1)` of the run's path for one fixed `x1` beside the learned marginal field at the same t, which
//!   conditional flow matching makes the average of such conditional fields.
//!
//! Runs of other dimensions get `loss.png`, keep the `samples.png` that training drew from the first two
//! coordinates, and their `report.md` lists what was skipped and why. Every file is written atomically.
//! The source points of the pictures come from their own sampling sub-stream ([`Stream::Report`] of the run), so they are
//! reproducible and distinct from the samples of training and of `eval`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ferroflow_paths::ConditionalPath;
use ferroflow_solvers::{Method, OdeOptions};
use ndarray::{Array2, ArrayView2};
use serde_json::{Map, Value};
use tch::Tensor;

use ferroflow_engine::RunConfig;
use ferroflow_engine::data::Dataset;
use ferroflow_engine::files::{read_points, write_atomic};
use ferroflow_engine::likelihood::log_likelihood;
use ferroflow_engine::metrics::RunMetrics;
use ferroflow_engine::sample::{TrainedFlow, reference_samples, to_array};
use ferroflow_engine::stream::Stream;
use ferroflow_models::DivergenceEstimator;

use crate::plot::{self, ArrowScale, Arrows, FieldPanel, Marker, Timing, Window};

/// The Markdown page of the report.
pub const REPORT_FILE: &str = "report.md";
/// Trajectories drawn in `trajectories.png`.
pub const N_TRAJECTORIES: usize = 300;
/// Points moving in `flow.gif`, and reference points drawn under the 2-D pictures.
pub const N_ANIMATED: usize = 1000;
/// Frames of `flow.gif` before the last one is held: times `k / GIF_STEPS`, k = 0..=GIF_STEPS.
pub const GIF_STEPS: usize = 30;
/// The times of the panels of `velocity.png` (the last one short of 1, where some paths are singular).
pub const FIELD_TIMES: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0 - 1e-3];
/// Arrows per side of a velocity panel.
pub const FIELD_GRID: usize = 21;
/// Cells per side of the density grid.
pub const DENSITY_GRID: usize = 60;
/// The fixed-step method of the density's likelihood solve.
pub const DENSITY_METHOD: Method = Method::Midpoint;
/// Steps of the density's likelihood solve.
pub const DENSITY_STEPS: usize = 24;
/// The time of `conditional_vs_marginal.png`.
pub const CONDITIONAL_TIME: f64 = 0.5;

/// The timing of `flow.gif`: 31 frames in 2.5 s, then the end held for a second.
const GIF_TIMING: Timing = Timing {
    frame_delay_ms: 80,
    hold_frames: 12,
};
/// Fresh target samples: under `samples.png` and in the window; the first [`N_ANIMATED`] under the others.
const N_REFERENCE: usize = 2000;

/// What became of one file of the report.
enum Outcome {
    /// Written: the file, a caption for the page, and the seconds it took.
    Written {
        file: &'static str,
        caption: String,
        seconds: f64,
    },
    /// Not written, and why.
    Skipped { file: &'static str, why: String },
    /// Left as training drew it (shown on the page, not rewritten).
    Kept { file: &'static str, caption: String },
}

/// Writes the report of the run in `run_dir` (pictures and `report.md`) and returns the paths written.
///
/// Needs `config.toml`, `model.safetensors` and, for their pictures, `loss.csv` and `samples.npy`; reads
/// `metrics.json` when there is one (run `ferroflow eval` first to have W2 in the report).
pub fn write_report(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let started = Instant::now();
    let config_path = run_dir.join(ferroflow_engine::run::CONFIG_FILE);
    if config_path.exists() {
        let config = RunConfig::load(&config_path)?;
        if config.data.target.is_tokens() {
            return discrete_report(run_dir, &config, started);
        }
    }
    let flow = TrainedFlow::load(run_dir)
        .with_context(|| format!("cannot load the run in {} for its report", run_dir.display()))?;
    let mut outcomes = Vec::new();
    if flow.dim() == 2 && flow.config.data.manifold.is_none() {
        outcomes.extend(two_d_pictures(&flow)?);
    } else {
        if flow.run_dir.join("samples.png").exists() {
            outcomes.push(Outcome::Kept {
                file: "samples.png",
                caption: "Generated samples, as drawn at the end of training.".into(),
            });
        }
        let mut drawn_density = false;
        let mut drawn_trajectories = false;
        if let Some(manifold) = &flow.config.data.manifold {
            let trajectories_path = run_dir.join("trajectories.png");
            let started = Instant::now();
            if crate::samples::write_manifold_trajectories(&flow, N_TRAJECTORIES, &trajectories_path)? {
                drawn_trajectories = true;
                outcomes.push(Outcome::Written {
                    file: "trajectories.png",
                    caption: format!(
                        "Paths of {N_TRAJECTORIES} source points from t = 0 (orange) to t = 1 (blue) on {}'s \
                         first chart, {} as in sampling; a path that leaves one edge of a periodic axis comes \
                         back at the other; target samples in grey.",
                        manifold.name(),
                        method_name(flow.config.sample.solver)
                    ),
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
            let density_path = run_dir.join("density.png");
            let started = Instant::now();
            if crate::samples::write_manifold_density(&flow, &density_path)? {
                drawn_density = true;
                outcomes.push(Outcome::Written {
                    file: "density.png",
                    caption: format!(
                        "The learned density on {} from the likelihood (exact Riemannian divergence), {} as in \
                         sampling.",
                        manifold.name(),
                        method_name(flow.config.sample.solver)
                    ),
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
        }
        let why = match &flow.config.data.manifold {
            Some(manifold) => format!(
                "the run lives on {}; fields and animations are drawn for runs in the plane only",
                manifold.name()
            ),
            None => format!(
                "the run's points have {} dimensions; this picture is drawn for 2-D runs only",
                flow.dim()
            ),
        };
        for file in [
            "trajectories.png",
            "velocity.png",
            "density.png",
            "flow.gif",
            "conditional_vs_marginal.png",
        ] {
            if (drawn_density && file == "density.png") || (drawn_trajectories && file == "trajectories.png")
            {
                continue;
            }
            outcomes.push(Outcome::Skipped {
                file,
                why: why.clone(),
            });
        }
    }
    finish_report(run_dir, &flow.config, outcomes, "", started)
}

/// Adds the loss curve to `outcomes`, writes `report.md` (with `extra` Markdown before the skipped files) and
/// returns the paths written: the end of every run's report.
fn finish_report(
    run_dir: &Path,
    config: &RunConfig,
    mut outcomes: Vec<Outcome>,
    extra: &str,
    started: Instant,
) -> Result<Vec<PathBuf>> {
    outcomes.push(loss_picture(run_dir)?);
    let metrics = match serde_json::to_value(RunMetrics::read(run_dir)?)? {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let page = markdown(
        config,
        &metrics,
        &outcomes,
        extra,
        started.elapsed().as_secs_f64(),
    );
    let page_path = run_dir.join(REPORT_FILE);
    write_atomic(&page_path, page.as_bytes())?;
    let mut written: Vec<PathBuf> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Written { file, .. } => Some(run_dir.join(file)),
            Outcome::Skipped { .. } | Outcome::Kept { .. } => None,
        })
        .collect();
    written.push(page_path);
    Ok(written)
}

/// Words listed on a words run's page.
pub const LISTED_WORDS: usize = 60;

/// The report of a discrete run: for a 2D token target `samples.png` (the bin histogram of `samples.npy`) and
/// `data.png` (the same for as many discretised fresh target points), the loss curve, and `report.md`, which
/// for words lists the first [`LISTED_WORDS`] sampled words.
fn discrete_report(run_dir: &Path, config: &RunConfig, started: Instant) -> Result<Vec<PathBuf>> {
    let samples_path = run_dir.join("samples.npy");
    let samples = if samples_path.exists() {
        Some(read_points(&samples_path)?)
    } else {
        None
    };
    let mut outcomes = Vec::new();
    let mut extra = String::new();
    match (ferroflow_engine::discrete::eval::grid_of(config), &samples) {
        (Some(grid), Some(samples)) => {
            let tokens = samples.mapv(|value| value as u32);
            if let Some(bad) = tokens.iter().find(|&&token| token as usize >= grid.bins) {
                bail!(
                    "{}: token {bad} is outside the {} bins",
                    samples_path.display(),
                    grid.bins
                );
            }
            let reference = reference_samples(config, tokens.nrows());
            let data = grid.encode_points(reference.view());
            let window = Window {
                x_min: -grid.half_width,
                x_max: grid.half_width,
                y_min: -grid.half_width,
                y_max: grid.half_width,
            };
            for (file, what, tokens) in [
                ("samples.png", "generated samples (`samples.npy`)", &tokens),
                ("data.png", "discretised fresh target points", &data),
            ] {
                let counts = bin_counts(tokens.view(), grid.bins);
                outcomes.push(timed(
                    file,
                    format!(
                        "Bin counts of {} {what} on the {} x {} grid over [-{w}, {w}]^2.",
                        tokens.nrows(),
                        grid.bins,
                        grid.bins,
                        w = grid.half_width
                    ),
                    || {
                        plot::density_png(
                            &run_dir.join(file),
                            &format!("{} {what}", tokens.nrows()),
                            &counts,
                            grid.bins,
                            &window,
                        )
                    },
                )?);
            }
        }
        (None, _) => {
            let words_path = run_dir.join(ferroflow_engine::run::WORDS_FILE);
            if words_path.exists() {
                let words = ferroflow_engine::tokens::read_words(&words_path)
                    .with_context(|| format!("cannot read {}", words_path.display()))?;
                let listed: Vec<String> = words
                    .iter()
                    .take(LISTED_WORDS)
                    .map(|w| format!("`{w}`"))
                    .collect();
                let _ = writeln!(
                    extra,
                    "## Sampled words

The first {} of {} (`{}`): {}\n",
                    listed.len(),
                    words.len(),
                    ferroflow_engine::run::WORDS_FILE,
                    listed.join(" ")
                );
            }
        }
        (Some(_), None) => {}
    }
    finish_report(run_dir, config, outcomes, &extra, started)
}

/// Counts of token pairs per bin, `[bins^2]` in the order of [`Window::grid`] (x fastest).
fn bin_counts(tokens: ArrayView2<u32>, bins: usize) -> Vec<f64> {
    let mut counts = vec![0.0; bins * bins];
    for row in tokens.rows() {
        counts[row[1] as usize * bins + row[0] as usize] += 1.0;
    }
    counts
}

/// Runs `f`, timing it, and records the file as written with `caption`.
fn timed(file: &'static str, caption: String, f: impl FnOnce() -> Result<()>) -> Result<Outcome> {
    let started = Instant::now();
    f()?;
    Ok(Outcome::Written {
        file,
        caption,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A `[n, d]` float tensor on the flow's device from an array.
fn tensor_of(flow: &TrainedFlow, points: ArrayView2<f32>) -> Tensor {
    let (n_points, dim) = points.dim();
    let flat: Vec<f32> = points.iter().copied().collect();
    Tensor::from_slice(&flat)
        .view([n_points as i64, dim as i64])
        .to_device(flow.device())
}

/// The learned velocity at `points` and time `t`.
fn velocity_at(flow: &TrainedFlow, points: ArrayView2<f32>, t: f64) -> Array2<f32> {
    to_array(&flow.velocity(&tensor_of(flow, points), t))
}

/// The index of the time in `times` nearest to `t`.
fn nearest(times: &[f64], t: f64) -> usize {
    (0..times.len())
        .min_by(|&a, &b| (times[a] - t).abs().total_cmp(&(times[b] - t).abs()))
        .unwrap_or(0)
}

/// Every picture of a 2-D run except the loss curve.
fn two_d_pictures(flow: &TrainedFlow) -> Result<Vec<Outcome>> {
    let config = &flow.config;
    let run_dir = flow.run_dir.as_path();
    let source_name = config.data.source.name();
    let target_name = config.data.target.name();
    let reference = reference_samples(config, N_REFERENCE);
    let background = reference.slice(ndarray::s![..N_ANIMATED.min(N_REFERENCE), ..]);

    // One solve gives the trajectories, the animation frames and the samples under the field panels.
    let mut times: Vec<f64> = (0..=GIF_STEPS).map(|k| k as f64 / GIF_STEPS as f64).collect();
    times.extend(FIELD_TIMES);
    times.sort_by(f64::total_cmp);
    times.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    let x0 = flow.source_points(N_ANIMATED, Stream::Report);
    let source = to_array(&x0);
    let options = config.sample.ode_options();
    let solution = flow
        .integrate(x0, &options, Some(&times))
        .context("cannot integrate the report's trajectories")?;
    let states: Vec<Array2<f32>> = solution.trajectory.iter().map(to_array).collect();
    if states.len() != times.len() {
        bail!(
            "the solver returned {} states for {} requested times",
            states.len(),
            times.len()
        );
    }
    // The window holds the source and the target, so straight paths between them stay inside it.
    let window = Window::around([source.view(), reference.view()]);
    let solver = method_name(config.sample.solver);
    let mut outcomes = Vec::new();

    let samples_path = run_dir.join("samples.npy");
    if samples_path.exists() {
        let samples = read_points(&samples_path)?;
        outcomes.push(timed(
            "samples.png",
            format!(
                "{} generated samples (`samples.npy`, blue) over {} fresh target samples (grey).",
                samples.nrows(),
                reference.nrows()
            ),
            || {
                let title = format!("{source_name} -> {target_name}: generated samples");
                plot::samples_png_in(
                    &run_dir.join("samples.png"),
                    &title,
                    samples.view(),
                    reference.view(),
                    &window,
                )
            },
        )?);
    } else {
        outcomes.push(Outcome::Skipped {
            file: "samples.png",
            why: "the run folder has no samples.npy (training did not finish)".into(),
        });
    }

    let n_traj = N_TRAJECTORIES.min(N_ANIMATED);
    outcomes.push(timed(
        "trajectories.png",
        format!(
            "Paths of {n_traj} source points from t = 0 (orange) to t = 1 (blue), {} times, {solver} as in \
             sampling; target samples in grey.",
            times.len()
        ),
        || {
            let heads: Vec<Array2<f32>> = states
                .iter()
                .map(|s| s.slice(ndarray::s![..n_traj, ..]).to_owned())
                .collect();
            plot::trajectories_png(
                &run_dir.join("trajectories.png"),
                &format!("{source_name} -> {target_name}: trajectories"),
                &heads,
                background,
                &window,
                plot::Periods::default(),
            )
        },
    )?);

    let grid = window.grid(FIELD_GRID);
    let spacing = (window.x_max - window.x_min) / FIELD_GRID as f64;
    outcomes.push(timed(
        "velocity.png",
        format!(
            "The learned velocity field on a {FIELD_GRID} x {FIELD_GRID} grid at t = {}, over the samples at \
             that time (grey); arrow length and colour give the speed, on one scale for all panels (lengths capped \
             at the grid spacing).",
            FIELD_TIMES.map(|t| format!("{t}")).join(", ")
        ),
        || {
            let panels: Vec<FieldPanel> = FIELD_TIMES
                .iter()
                .map(|&t| FieldPanel {
                    caption: format!("t = {t}"),
                    positions: grid.clone(),
                    velocities: velocity_at(flow, grid.view(), t),
                    samples: states[nearest(&times, t)].clone(),
                    markers: Vec::new(),
                })
                .collect();
            plot::field_png(
                &run_dir.join("velocity.png"),
                &format!("{source_name} -> {target_name}: learned velocity v(x, t)"),
                &panels,
                &window,
                Arrows {
                    spacing,
                    scale: ArrowScale::Shared,
                },
            )
        },
    )?);

    outcomes.push(density_picture(flow, &window)?);

    outcomes.push(timed(
        "flow.gif",
        format!(
            "{N_ANIMATED} source points carried by the learned flow, {} frames from t = 0 to 1 ({solver}).",
            GIF_STEPS + 1
        ),
        || {
            let frame_times: Vec<f64> = (0..=GIF_STEPS).map(|k| k as f64 / GIF_STEPS as f64).collect();
            let frames: Vec<ArrayView2<f32>> = frame_times
                .iter()
                .map(|&t| states[nearest(&times, t)].view())
                .collect();
            plot::flow_gif(
                &run_dir.join("flow.gif"),
                &format!("{source_name} -> {target_name}"),
                &frames,
                &frame_times,
                background,
                &window,
                GIF_TIMING,
            )
        },
    )?);

    outcomes.push(conditional_picture(
        flow,
        &window,
        &states[nearest(&times, CONDITIONAL_TIME)],
    )?);
    Ok(outcomes)
}

/// `density.png`, or why it was skipped.
fn density_picture(flow: &TrainedFlow, window: &Window) -> Result<Outcome> {
    if !matches!(flow.config.data.source, Dataset::Gaussian { .. }) {
        return Ok(Outcome::Skipped {
            file: "density.png",
            why: format!(
                "the exact likelihood needs a Gaussian source, and this run's source is `{}`",
                flow.config.data.source.name()
            ),
        });
    }
    let method = method_name(DENSITY_METHOD);
    timed(
        "density.png",
        format!(
            "The learned density p1 on a {DENSITY_GRID} x {DENSITY_GRID} grid, from the exact log-likelihood: \
             exact divergence by autograd, the ODE solved backwards from t = 1 to 0 by the {method} method \
             in {DENSITY_STEPS} fixed steps."
        ),
        || {
            let grid = window.grid(DENSITY_GRID);
            let options = OdeOptions::fixed(DENSITY_METHOD, DENSITY_STEPS);
            let likelihood = log_likelihood(
                flow,
                &tensor_of(flow, grid.view()),
                DivergenceEstimator::Exact,
                &options,
            )
            .context("density.png: exact log-likelihood on the grid")?;
            let density: Vec<f64> = likelihood.log_density.iter().map(|v| v.exp()).collect();
            plot::density_png(
                &flow.run_dir.join("density.png"),
                &format!(
                    "{} -> {}: learned density at t = 1 (exact likelihood, {method}, {DENSITY_STEPS} steps)",
                    flow.config.data.source.name(),
                    flow.config.data.target.name()
                ),
                &density,
                DENSITY_GRID,
                window,
            )
        },
    )
}

/// `conditional_vs_marginal.png` for the "Gaussian to ring" runs, or why it was skipped.
fn conditional_picture(flow: &TrainedFlow, window: &Window, samples_at_t: &Array2<f32>) -> Result<Outcome> {
    let file = "conditional_vs_marginal.png";
    let config = &flow.config;
    let source_std = match (&config.data.source, &config.data.target) {
        (Dataset::Gaussian { std, .. }, Dataset::Ring {}) => *std,
        _ => {
            return Ok(Outcome::Skipped {
                file,
                why: "drawn for the \"Gaussian to ring\" runs only (source gaussian, target ring)".into(),
            });
        }
    };
    let t = CONDITIONAL_TIME;
    // A point on the ring (radius 3), up and to the right, where both fields are easy to read.
    let x1 = [3.0 * std::f64::consts::FRAC_1_SQRT_2; 2];
    let path = config.flow.build_path()?;
    let c = path
        .gaussian_coefficients(t, source_std)
        .with_context(|| format!("{file}: the path's law of x_t given x1 at t = {t}"))?;
    timed(
        file,
        format!(
            "Left: the conditional velocity u_t(x | x1) = alpha' x1 + (sigma' / sigma) (x - alpha x1) of the \
             run's `{}` path for x1 = ({:.2}, {:.2}) at t = {t}, with the circle of radius sigma_t around \
             alpha_t x1 (one standard deviation of p_t(x | x1)). Right: the learned marginal field at the same \
             t over the samples at that time; conditional flow matching makes it the average of such \
             conditional fields over x1. Arrow lengths are scaled per panel (the conditional field is much \
             faster far from x1); the colours share one speed scale.",
            path.name(),
            x1[0],
            x1[1]
        ),
        || {
            let grid = window.grid(FIELD_GRID);
            let conditional = Array2::from_shape_fn(grid.dim(), |(row, k)| {
                let x = grid[[row, k]] as f64;
                (c.d_alpha * x1[k] + c.d_sigma / c.sigma * (x - c.alpha * x1[k])) as f32
            });
            let x1_marker = Marker::Point {
                at: (x1[0], x1[1]),
                label: "x1".into(),
            };
            let panels = [
                FieldPanel {
                    caption: format!("conditional u_t(x | x1), t = {t}"),
                    positions: grid.clone(),
                    velocities: conditional,
                    samples: Array2::zeros((0, 2)),
                    markers: vec![
                        Marker::Circle {
                            centre: (c.alpha * x1[0], c.alpha * x1[1]),
                            radius: c.sigma,
                            label: "p_t(x | x1)".into(),
                        },
                        x1_marker.clone(),
                    ],
                },
                FieldPanel {
                    caption: format!("learned marginal v(x, t), t = {t}"),
                    positions: grid.clone(),
                    velocities: velocity_at(flow, grid.view(), t),
                    samples: samples_at_t.clone(),
                    markers: vec![x1_marker],
                },
            ];
            plot::field_png(
                &flow.run_dir.join(file),
                "gaussian -> ring: conditional vs marginal velocity",
                &panels,
                window,
                Arrows {
                    spacing: (window.x_max - window.x_min) / FIELD_GRID as f64,
                    scale: ArrowScale::PerPanel,
                },
            )
        },
    )
}

/// `loss.png` from `loss.csv`, or why it was skipped.
fn loss_picture(run_dir: &Path) -> Result<Outcome> {
    let file = "loss.png";
    let csv_path = run_dir.join("loss.csv");
    if !csv_path.exists() {
        return Ok(Outcome::Skipped {
            file,
            why: "the run folder has no loss.csv (training did not finish)".into(),
        });
    }
    let text =
        std::fs::read_to_string(&csv_path).with_context(|| format!("cannot read {}", csv_path.display()))?;
    let mut points = Vec::new();
    for (line_idx, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = line
            .split_once(',')
            .and_then(|(step, loss)| Some((step.trim().parse().ok()?, loss.trim().parse().ok()?)));
        let Some(point) = parsed else {
            bail!(
                "{} line {}: {line:?} is not `step,loss`",
                csv_path.display(),
                line_idx + 1
            );
        };
        points.push(point);
    }
    if points.is_empty() {
        return Ok(Outcome::Skipped {
            file,
            why: "loss.csv holds no recorded loss".into(),
        });
    }
    timed(
        file,
        format!(
            "The training loss, {} points of loss.csv (each the mean over a logging window).",
            points.len()
        ),
        || plot::loss_png(&run_dir.join(file), "training loss", &points),
    )
}

/// The lower-case name of a method, as configs spell it.
fn method_name(method: Method) -> String {
    format!("{method:?}").to_lowercase()
}

/// A config or metric value for a Markdown table cell: objects as `key = value` lists, numbers short.
fn cell(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) => plot::short_number(f),
            _ => n.to_string(),
        },
        // The `kind` of a tagged enum first, then its fields.
        Value::Object(map) => map
            .get_key_value("kind")
            .into_iter()
            .chain(map.iter().filter(|(k, _)| k.as_str() != "kind"))
            .map(|(k, v)| format!("{k} = {}", cell(v)))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Array(items) => format!("[{}]", items.iter().map(cell).collect::<Vec<_>>().join(", ")),
        Value::Null => "-".into(),
        Value::Bool(b) => b.to_string(),
    };
    text.replace('|', "\\|").replace('\n', " ")
}

/// Metrics shown first, with a label each; the rest follow under their own names.
const METRIC_LABELS: [(&str, &str); 10] = [
    ("w2", "W2 to fresh target samples (exact)"),
    ("w2_samples", "samples in W2"),
    ("final_loss", "final training loss"),
    ("train_steps", "training steps"),
    ("train_steps_per_second", "training speed (steps/s)"),
    ("train_seconds", "training time (s)"),
    ("sample_seconds", "sampling time (s)"),
    ("sample_field_evals", "field evaluations per sample"),
    ("eval_seconds", "evaluation time (s)"),
    ("eval_solver", "evaluation solver"),
];

/// The config keys in the summary table (JSON pointers into the config); the whole `config.toml` follows at
/// the end of the page.
const SUMMARY_KEYS: [&str; 21] = [
    "/data/source",
    "/data/target",
    "/flow/path",
    "/flow/scheduler",
    "/flow/sigma",
    "/flow/coupling",
    "/flow/prediction",
    "/flow/time_sampling",
    "/model/kind",
    "/model/width",
    "/model/depth",
    "/model/activation",
    "/model/time_embedding",
    "/train/steps",
    "/train/batch_size",
    "/train/optimizer",
    "/train/ema_decay",
    "/sample/solver",
    "/sample/steps",
    "/run/seed",
    "/run/device",
];

/// The Markdown page.
fn markdown(
    config: &RunConfig,
    metrics: &Map<String, Value>,
    outcomes: &[Outcome],
    extra: &str,
    seconds: f64,
) -> String {
    let mut page = String::new();
    let source = match config.flow.discrete {
        Some(discrete) if config.data.target.is_tokens() => {
            format!("{:?} tokens", discrete.source).to_lowercase()
        }
        _ => config.data.source.name(),
    };
    // Writing into a String cannot fail.
    let _ = writeln!(
        page,
        "# Run `{}`: {} -> {}\n",
        config.run.name,
        source,
        config.data.target.name()
    );

    let _ = writeln!(page, "## Configuration\n\n| key | value |\n|---|---|");
    let resolved = serde_json::to_value(config).unwrap_or(Value::Null);
    for pointer in SUMMARY_KEYS {
        if let Some(value) = resolved.pointer(pointer) {
            let key = pointer.trim_start_matches('/').replace('/', ".");
            let _ = writeln!(page, "| `{key}` | {} |", cell(value));
        }
    }
    let _ = writeln!(page, "\nThe whole resolved config is at the end of the page.\n");

    let _ = writeln!(page, "## Metrics\n\n| metric | value |\n|---|---|");
    if !metrics.contains_key("w2") && !metrics.contains_key("elbo_bits_per_token") {
        let _ = writeln!(
            page,
            "| W2 to fresh target samples (exact) | not measured yet (`ferroflow eval`) |"
        );
    }
    for (key, label) in METRIC_LABELS {
        if let Some(value) = metrics.get(key) {
            let _ = writeln!(page, "| {label} | {} |", cell(value));
        }
    }
    for (key, value) in metrics {
        if !METRIC_LABELS.iter().any(|(known, _)| *known == key.as_str()) {
            let _ = writeln!(page, "| `{key}` | {} |", cell(value));
        }
    }
    page.push('\n');

    let _ = writeln!(page, "## Pictures\n");
    for outcome in outcomes {
        let (file, caption, cost) = match outcome {
            Outcome::Written {
                file,
                caption,
                seconds,
            } => (file, caption, format!("drawn in {seconds:.3} s")),
            Outcome::Kept { file, caption } => (file, caption, "drawn by training".to_string()),
            Outcome::Skipped { .. } => continue,
        };
        let stem = file.split('.').next().unwrap_or(file);
        let _ = writeln!(
            page,
            "### {stem}\n\n![{stem}]({file})\n\n{caption} ([{file}]({file}), {cost})\n"
        );
    }
    page.push_str(extra);
    let skipped: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Skipped { file, why } => Some((file, why)),
            Outcome::Written { .. } | Outcome::Kept { .. } => None,
        })
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(page, "## Skipped\n");
        for (file, why) in skipped {
            let _ = writeln!(page, "- `{file}`: {why}.");
        }
        page.push('\n');
    }
    let _ = writeln!(
        page,
        "## Resolved config\n\n```toml\n{}```\n\nReport written by `ferroflow` in {seconds:.2} s.",
        // A config read from a run folder was validated, so it serialises; say so if it ever does not.
        config
            .to_toml()
            .unwrap_or_else(|e| format!("# the config could not be written out: {e}\n"))
    );
    page
}
