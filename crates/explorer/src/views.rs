//! The closed-form views, computed on the server from the math crates: the marginal field of a Gaussian
//! mixture target under a chosen path (particles pushed by it, its arrows on a grid, the density rho_t as a
//! heat map, div v along the particles), the Lagrangian log-density along one trajectory next to the closed
//! form, and a minibatch's independent, exact-OT and Sinkhorn couplings with their crossing segments.
//!
//! Targets with a closed form (gaussian, 8gaussians, mixtures) are used exactly; the others (moons, scurve,
//! ring, checkerboard, a drawn target) are replaced by a Gaussian kernel density estimate of their samples,
//! itself a Gaussian mixture, so every view is exact for the (smoothed) target it names. The marginal velocity
//! is singular at t = 1 for paths without noise there, so fields are evaluated at `min(t, T_MAX)`.
//!
//! The frames of the marginal views evaluate the same closed forms in batched f64 tensor operations (the
//! guidance crate's `MixtureVelocity`, its divergence by autograd), checked against the paths crate's
//! per-point `MixtureMarginal` in the tests; the single trajectory uses the per-point form directly.

use std::time::Instant;

use ferroflow_coupling::{
    AssignmentSolver, CostScaling, CouplingConfig, Jv, SinkhornConfig, squared_euclidean,
};
use ferroflow_engine::config::{FlowSection, PathKind};
use ferroflow_engine::data::{Dataset, MixtureSpec};
use ferroflow_engine::sample::integrate_unit_interval;
use ferroflow_guidance::MixtureVelocity;
use ferroflow_models::autograd::divergence_exact;
use ferroflow_paths::{ConditionalPath, GaussianMixture, MixtureMarginal, SchedulerKind};
use ferroflow_solvers::{Method, OdeOptions, solve_with_trajectory};
use ndarray::{Array1, Array2, Array3};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::{ApiError, check_range, check_real};

/// The last time at which fields are evaluated (the marginal velocity of a noiseless path is singular at 1).
pub const T_MAX: f64 = 0.999;
/// The first time at which fields are evaluated for paths whose velocity is singular at 0 (noise growing
/// like `sqrt(t)`, as the Schrodinger bridge's); other paths start at 0.
pub const T_MIN_SINGULAR: f64 = 0.001;
/// Half width of the square window `[-WINDOW, WINDOW]^2` every view draws.
pub const WINDOW: f64 = 7.0;
/// Samples of a target without a closed form that make up its kernel density estimate.
pub const KDE_COMPONENTS: usize = 192;
/// Bandwidth (standard deviation) of the kernel density estimate.
pub const KDE_BANDWIDTH: f64 = 0.15;
/// The most points a drawn target may have.
pub const MAX_DRAWN_POINTS: usize = 2_000;
/// The data sets of the engine's `data` module that the page offers, and `drawn`.
pub const TARGETS: [&str; 8] = [
    "gaussian",
    "8gaussians",
    "moons",
    "scurve",
    "ring",
    "checkerboard",
    "mixtures",
    "drawn",
];
/// The paths the page offers (`affine` takes a scheduler).
pub const PATHS: [&str; 4] = ["affine", "one_sided", "schrodinger_bridge", "variance_preserving"];
/// The schedulers of the affine path.
pub const SCHEDULERS: [&str; 3] = ["cond_ot", "cosine", "linear_vp"];

/// A target as the page names it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// One of [`TARGETS`].
    pub kind: String,
    /// The points of a `drawn` target (at most [`MAX_DRAWN_POINTS`], inside the window).
    #[serde(default)]
    pub points: Vec<[f64; 2]>,
}

/// A probability path as the page names it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSpec {
    /// One of [`PATHS`].
    pub kind: String,
    /// One of [`SCHEDULERS`] (affine path only; default `cond_ot`).
    #[serde(default = "default_scheduler")]
    pub scheduler: String,
    /// The path's noise parameter (sigma_min, bridge sigma, ...), in `[0, 2]`.
    #[serde(default)]
    pub sigma: f64,
}

fn default_scheduler() -> String {
    "cond_ot".into()
}

impl TargetSpec {
    /// The engine's data set of this target (`drawn` becomes a mixture of small Gaussians at its points).
    pub fn dataset(&self, field: &str) -> Result<Dataset, ApiError> {
        let kind_field = format!("{field}.kind");
        if self.kind != "drawn" && !self.points.is_empty() {
            return Err(ApiError::invalid(
                format!("{field}.points"),
                "points are only given for a `drawn` target",
            ));
        }
        Ok(match self.kind.as_str() {
            "gaussian" => Dataset::Gaussian { dim: 2, std: 1.0 },
            "8gaussians" => Dataset::EightGaussians {},
            "moons" => Dataset::Moons {},
            "scurve" => Dataset::Scurve {},
            "ring" => Dataset::Ring {},
            "checkerboard" => Dataset::Checkerboard {},
            "mixtures" => Dataset::Mixture(mixtures_preset()),
            "drawn" => {
                let points = self.drawn_points(field)?;
                let n_points = points.len();
                Dataset::Mixture(MixtureSpec {
                    weights: vec![1.0 / n_points as f64; n_points],
                    means: points.iter().map(|p| p.to_vec()).collect(),
                    covariances: vec![kde_covariance(); n_points],
                })
            }
            other => {
                return Err(ApiError::invalid(
                    kind_field,
                    format!("unknown target `{other}`; allowed: {}", TARGETS.join(", ")),
                ));
            }
        })
    }

    fn drawn_points(&self, field: &str) -> Result<&[[f64; 2]], ApiError> {
        let points_field = format!("{field}.points");
        if self.points.is_empty() {
            return Err(ApiError::invalid(
                points_field,
                "a drawn target needs at least one point",
            ));
        }
        if self.points.len() > MAX_DRAWN_POINTS {
            return Err(ApiError::invalid(
                points_field,
                format!("{} points; at most {MAX_DRAWN_POINTS}", self.points.len()),
            ));
        }
        for (idx, point) in self.points.iter().enumerate() {
            for (axis, &value) in point.iter().enumerate() {
                check_real(&format!("{points_field}[{idx}][{axis}]"), value, -WINDOW, WINDOW)?;
            }
        }
        Ok(&self.points)
    }

    /// The target as a Gaussian mixture, and whether that is the target itself (`true`) or a kernel density
    /// estimate of its samples drawn with `seed` (`false`).
    pub fn mixture(&self, field: &str, seed: u64) -> Result<(GaussianMixture, bool), ApiError> {
        let labelled = self.labelled_mixture(field, seed)?;
        Ok((labelled.mixture, labelled.exact))
    }

    /// The target as a Gaussian mixture with a class label per component ([`dataset_mixture`]); a drawn
    /// target has no classes.
    pub fn labelled_mixture(&self, field: &str, seed: u64) -> Result<LabelledMixture, ApiError> {
        let dataset = self.dataset(field)?;
        let mut labelled = dataset_mixture(&dataset, seed)?;
        if self.kind == "drawn" {
            labelled.exact = false;
            labelled.labels = vec![0; labelled.labels.len()];
            labelled.classes = 1;
        }
        Ok(labelled)
    }
}

/// What a guidance panel guides: a trained run by name, or the closed form of a target under a path.
pub enum FieldSource<'a> {
    /// A run under the runs folder.
    Run(&'a str),
    /// A closed-form target and path.
    Closed(&'a TargetSpec, &'a PathSpec),
}

/// Reads a request's `run`, `target` and `path`: either a run or a target and a path, never both.
pub fn field_source<'a>(
    run: &'a Option<String>,
    target: &'a Option<TargetSpec>,
    path: &'a Option<PathSpec>,
) -> Result<FieldSource<'a>, ApiError> {
    match (run, target, path) {
        (Some(run), None, None) => Ok(FieldSource::Run(run)),
        (None, Some(target), Some(path)) => Ok(FieldSource::Closed(target, path)),
        (Some(_), _, _) => Err(ApiError::invalid(
            "run",
            "give either `run` or `target` and `path`, not both",
        )),
        (None, None, _) => Err(ApiError::invalid(
            "target",
            "missing: give `target` and `path` (a closed-form field) or `run`",
        )),
        (None, Some(_), None) => Err(ApiError::invalid(
            "path",
            "missing: a closed-form field needs `target` and `path`",
        )),
    }
}

/// A target as a Gaussian mixture whose components carry the data set's class labels.
pub struct LabelledMixture {
    /// The mixture.
    pub mixture: GaussianMixture,
    /// Whether it is the target itself (else a kernel density estimate of its samples).
    pub exact: bool,
    /// The class of each component (the data set's label: the mode of 8gaussians, the moon, the mixture
    /// component; 0 for unlabelled sets).
    pub labels: Vec<usize>,
    /// The number of classes (1 for an unlabelled set).
    pub classes: usize,
}

impl LabelledMixture {
    /// The components of `class`, as a mixture with their weights renormalised; `None` when it has none.
    pub fn class_mixture(&self, class: usize) -> Option<GaussianMixture> {
        let members: Vec<usize> = (0..self.labels.len())
            .filter(|&k| self.labels[k] == class)
            .collect();
        if members.is_empty() {
            return None;
        }
        let weights = self.mixture.weights();
        let total: f64 = members.iter().map(|&k| weights[k]).sum();
        let means = self.mixture.means().select(ndarray::Axis(0), &members);
        let covariances = self.mixture.covariances().select(ndarray::Axis(0), &members);
        GaussianMixture::new(
            Array1::from_iter(members.iter().map(|&k| weights[k] / total)),
            means,
            covariances,
        )
        .ok()
    }
}

/// A 2D data set as a Gaussian mixture with labelled components: gaussian, 8gaussians and mixtures exactly,
/// the others (and a drawn target) as a kernel density estimate of [`KDE_COMPONENTS`] samples drawn with
/// `seed`, each component labelled with its sample's label.
pub fn dataset_mixture(dataset: &Dataset, seed: u64) -> Result<LabelledMixture, ApiError> {
    let internal = |e: ferroflow_paths::PathsError| ApiError::Internal(e.to_string());
    match dataset {
        Dataset::Gaussian { std, .. } => Ok(LabelledMixture {
            mixture: GaussianMixture::isotropic(
                Array1::from(vec![1.0]),
                Array2::zeros((1, 2)),
                Array1::from(vec![std * std]),
            )
            .map_err(internal)?,
            exact: true,
            labels: vec![0],
            classes: 1,
        }),
        Dataset::EightGaussians {} => {
            let means = Array2::from_shape_fn((8, 2), |(k, axis)| {
                let angle = k as f64 * std::f64::consts::FRAC_PI_4;
                5.0 * if axis == 0 { angle.cos() } else { angle.sin() }
            });
            Ok(LabelledMixture {
                mixture: GaussianMixture::isotropic(
                    Array1::from_elem(8, 1.0 / 8.0),
                    means,
                    Array1::from_elem(8, 0.1f64.sqrt()),
                )
                .map_err(internal)?,
                exact: true,
                labels: (0..8).collect(),
                classes: 8,
            })
        }
        Dataset::Mixture(spec) => Ok(LabelledMixture {
            mixture: spec_mixture(spec).map_err(internal)?,
            exact: true,
            labels: (0..spec.weights.len()).collect(),
            classes: spec.weights.len(),
        }),
        other => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (mut samples, mut labels) = (Vec::new(), Vec::new());
            other.sample_labelled_into(KDE_COMPONENTS, &mut rng, &mut samples, Some(&mut labels));
            let means = Array2::from_shape_fn((KDE_COMPONENTS, 2), |(row, axis)| {
                f64::from(samples[row * 2 + axis])
            });
            let labels: Vec<usize> = labels.iter().map(|&l| l.max(0) as usize).collect();
            Ok(LabelledMixture {
                mixture: GaussianMixture::isotropic(
                    Array1::from_elem(KDE_COMPONENTS, 1.0 / KDE_COMPONENTS as f64),
                    means,
                    Array1::from_elem(KDE_COMPONENTS, KDE_BANDWIDTH * KDE_BANDWIDTH),
                )
                .map_err(internal)?,
                exact: false,
                classes: other.num_classes().max(1),
                labels,
            })
        }
    }
}

fn kde_covariance() -> Vec<Vec<f64>> {
    let variance = KDE_BANDWIDTH * KDE_BANDWIDTH;
    vec![vec![variance, 0.0], vec![0.0, variance]]
}

/// The `mixtures` preset: three correlated Gaussians of unequal weight.
pub fn mixtures_preset() -> MixtureSpec {
    MixtureSpec {
        weights: vec![0.5, 0.3, 0.2],
        means: vec![vec![-3.0, -2.0], vec![3.0, -1.0], vec![0.0, 3.5]],
        covariances: vec![
            vec![vec![0.6, 0.3], vec![0.3, 0.4]],
            vec![vec![0.3, -0.15], vec![-0.15, 0.5]],
            vec![vec![0.8, 0.0], vec![0.0, 0.15]],
        ],
    }
}

fn spec_mixture(spec: &MixtureSpec) -> Result<GaussianMixture, ferroflow_paths::PathsError> {
    let n_components = spec.weights.len();
    let total: f64 = spec.weights.iter().sum();
    let weights = Array1::from_iter(spec.weights.iter().map(|w| w / total));
    let means = Array2::from_shape_fn((n_components, 2), |(k, axis)| spec.means[k][axis]);
    let covariances = Array3::from_shape_fn((n_components, 2, 2), |(k, row, col)| {
        spec.covariances[k][row][col]
    });
    GaussianMixture::new(weights, means, covariances)
}

impl PathSpec {
    /// The engine's flow section of this path (velocity prediction, independent coupling).
    pub fn flow_section(&self, field: &str) -> Result<FlowSection, ApiError> {
        let path = match self.kind.as_str() {
            "affine" => PathKind::Affine,
            "one_sided" => PathKind::OneSided,
            "schrodinger_bridge" => PathKind::SchrodingerBridge,
            "variance_preserving" => PathKind::VariancePreserving,
            other => {
                return Err(ApiError::invalid(
                    format!("{field}.kind"),
                    format!("unknown path `{other}`; allowed: {}", PATHS.join(", ")),
                ));
            }
        };
        let scheduler = match self.scheduler.as_str() {
            "cond_ot" => SchedulerKind::CondOt,
            "cosine" => SchedulerKind::Cosine,
            "linear_vp" => SchedulerKind::LinearVp,
            other => {
                return Err(ApiError::invalid(
                    format!("{field}.scheduler"),
                    format!("unknown scheduler `{other}`; allowed: {}", SCHEDULERS.join(", ")),
                ));
            }
        };
        let sigma = check_real(&format!("{field}.sigma"), self.sigma, 0.0, 2.0)?;
        let flow = FlowSection {
            path,
            scheduler,
            sigma,
            ..FlowSection::default()
        };
        flow.build_path()
            .map_err(|e| ApiError::invalid(format!("{field}.sigma"), e.to_string()))?;
        Ok(flow)
    }

    /// The path itself, from the standard normal source of the closed-form views.
    pub fn build(&self) -> Result<Box<dyn ConditionalPath + Send + Sync>, ApiError> {
        self.flow_section("path")?
            .build_path()
            .map_err(|e| ApiError::invalid("path", e.to_string()))
    }

    /// The closed-form marginal velocity of `mixture` under this path, in batched f64 tensor operations
    /// (the guidance crate's `MixtureVelocity`, source N(0, I)).
    pub fn mixture_velocity(
        &self,
        mixture: &GaussianMixture,
    ) -> Result<MixtureVelocity<Box<dyn ConditionalPath + Send + Sync>>, ApiError> {
        MixtureVelocity::new(mixture, self.build()?, 1.0).map_err(|e| ApiError::Internal(e.to_string()))
    }
}

/// The closed-form marginal of a target under a path, from a standard normal source.
pub struct Marginal {
    marginal: MixtureMarginal<Box<dyn ConditionalPath + Send + Sync>>,
    /// Whether the mixture is the target itself (not a kernel density estimate).
    pub exact: bool,
    /// The first regular time: 0, or [`T_MIN_SINGULAR`] for paths singular at 0.
    pub t_min: f64,
}

impl Marginal {
    /// The marginal of `target` under `path`; `seed` draws a kernel density estimate's samples.
    pub fn new(target: &TargetSpec, path: &PathSpec, seed: u64) -> Result<Self, ApiError> {
        let (mixture, exact) = target.mixture("target", seed)?;
        let path = path.build()?;
        let marginal =
            MixtureMarginal::new(mixture, path, 1.0).map_err(|e| ApiError::Internal(e.to_string()))?;
        let regular = |t: f64| {
            let mut velocity = [0.0; 2];
            marginal.velocity_at(&[0.0, 0.0], t, &mut velocity).is_ok()
                && velocity.iter().all(|v| v.is_finite())
        };
        let t_min = if regular(0.0) { 0.0 } else { T_MIN_SINGULAR };
        if !regular(t_min) || !regular(T_MAX) {
            return Err(ApiError::invalid(
                "path",
                format!("the marginal velocity of this path is singular inside [{t_min}, {T_MAX}]"),
            ));
        }
        Ok(Self {
            marginal,
            exact,
            t_min,
        })
    }

    /// `(alpha, sigma, alpha', sigma')` of the conditional path at `t` (for `u_t(x | x1)` on the page).
    pub fn coefficients(&self, t: f64) -> [f64; 4] {
        let c = self
            .marginal
            .path()
            .gaussian_coefficients(t.clamp(self.t_min, T_MAX), 1.0)
            .expect("path times in [0, T_MAX] are regular");
        [c.alpha, c.sigma, c.d_alpha, c.d_sigma]
    }

    /// The marginal velocity `v*(x, t)` with `t` clamped to `[t_min, T_MAX]`.
    pub fn velocity(&self, x: [f64; 2], t: f64) -> [f64; 2] {
        let mut velocity = [0.0; 2];
        self.marginal
            .velocity_at(&x, t.clamp(self.t_min, T_MAX), &mut velocity)
            .expect("finite points at regular times have a velocity");
        velocity
    }

    /// `div v*(x, t)` by central differences (step 1e-4: truncation about 1e-8, rounding about 1e-12).
    pub fn divergence(&self, x: [f64; 2], t: f64) -> f64 {
        const STEP: f64 = 1e-4;
        let mut divergence = 0.0;
        for axis in 0..2 {
            let mut plus = x;
            let mut minus = x;
            plus[axis] += STEP;
            minus[axis] -= STEP;
            divergence += (self.velocity(plus, t)[axis] - self.velocity(minus, t)[axis]) / (2.0 * STEP);
        }
        divergence
    }

    /// `ln rho_t(x)`, the closed form.
    pub fn log_density(&self, x: [f64; 2], t: f64) -> f64 {
        self.marginal
            .log_density_at(&x, t.clamp(0.0, 1.0))
            .unwrap_or(f64::NEG_INFINITY)
    }
}

/// The closed-form marginal of a request in batched f64 tensor operations, in chunks of rows small enough
/// that a many-component target (a drawn one has up to 2,000) keeps its intermediates near 16 MB.
struct BatchedMarginal {
    field: MixtureVelocity<Box<dyn ConditionalPath + Send + Sync>>,
    t_min: f64,
    chunk_rows: i64,
}

impl BatchedMarginal {
    fn new(request: &FlowRequest, t_min: f64) -> Result<Self, ApiError> {
        let (mixture, _) = request.target.mixture("target", request.seed)?;
        let chunk_rows = (1_000_000 / mixture.n_components().max(1)).max(1) as i64;
        let field = request.path.mixture_velocity(&mixture)?;
        Ok(Self {
            field,
            t_min,
            chunk_rows,
        })
    }

    fn chunked(&self, x: &Tensor, mut f: impl FnMut(&Tensor) -> Tensor) -> Tensor {
        let parts: Vec<Tensor> = x.split(self.chunk_rows, 0).iter().map(&mut f).collect();
        Tensor::cat(&parts, 0)
    }

    /// `v*(x, t)` with `t` clamped to the regular times; NaN where the closed form refuses (never at them).
    fn velocity(&self, x: &Tensor, t: f64) -> Tensor {
        let t = t.clamp(self.t_min, T_MAX);
        self.chunked(x, |rows| {
            self.field
                .velocity(rows, t)
                .unwrap_or_else(|_| rows.full_like(f64::NAN))
        })
    }

    /// `div v*(x, t)` by autograd (two vector-Jacobian products per chunk).
    fn divergence(&self, x: &Tensor, t: f64) -> Result<Tensor, ApiError> {
        let t = t.clamp(self.t_min, T_MAX);
        let mut failure = None;
        let out = self.chunked(x, |rows| {
            match divergence_exact(
                |x| {
                    self.field
                        .velocity(x, t)
                        .unwrap_or_else(|_| x.full_like(f64::NAN))
                },
                rows,
                false,
            ) {
                Ok((_, divergence)) => divergence.detach(),
                Err(e) => {
                    failure = Some(e.to_string());
                    rows.select(1, 0).full_like(f64::NAN)
                }
            }
        });
        match failure {
            Some(message) => Err(ApiError::Internal(message)),
            None => Ok(out),
        }
    }

    /// `ln rho_t(x)`; -inf where the closed form refuses.
    fn log_density(&self, x: &Tensor, t: f64) -> Tensor {
        let t = t.clamp(0.0, 1.0);
        tch::no_grad(|| {
            self.chunked(x, |rows| {
                self.field
                    .log_density(rows, t)
                    .unwrap_or_else(|_| rows.select(1, 0).full_like(f64::NEG_INFINITY))
            })
        })
    }
}

fn points_tensor(points: &[[f64; 2]]) -> Tensor {
    let flat: Vec<f64> = points.iter().flat_map(|p| [p[0], p[1]]).collect();
    Tensor::from_slice(&flat).view([points.len() as i64, 2])
}

/// A request for the marginal views over time.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowRequest {
    /// The target.
    pub target: TargetSpec,
    /// The path.
    pub path: PathSpec,
    /// Particles pushed by the field, 1..=5000.
    pub n_particles: i64,
    /// Arrows per side of the field grid, 2..=64.
    pub grid: i64,
    /// Cells per side of the density heat map, 2..=128.
    pub density_grid: i64,
    /// Frames over [0, 1], 2..=201.
    pub frames: i64,
    /// Seed of the particles and of a kernel density estimate's samples.
    #[serde(default)]
    pub seed: u64,
    /// The method pushing the particles, one of [`FLOW_SAMPLERS`] (default `rk4`), two steps per frame
    /// interval: Euler's and the midpoint method's discretisation error shows against RK4; `ddpm` is DDPM's
    /// ancestral sampler (stochastic, see [`crate::ancestral`]).
    #[serde(default = "default_flow_sampler")]
    pub sampler: String,
    /// Lines per direction of a grid over the source's `[-3, 3]^2` pushed by the flow, 0 (none) to
    /// [`MAX_GRID_LINES`]; pushed by the chosen ODE method, by RK4 when the particles follow `ddpm`.
    #[serde(default)]
    pub grid_lines: i64,
}

/// The most lines per direction of a pushed-forward grid.
pub const MAX_GRID_LINES: i64 = 41;
/// Points along each line of a pushed-forward grid.
pub const GRID_LINE_POINTS: usize = 61;
/// Half width of the source square a pushed-forward grid covers.
pub const GRID_HALF_WIDTH: f64 = 3.0;

/// The points of `lines` horizontal then `lines` vertical lines over `[-GRID_HALF_WIDTH, GRID_HALF_WIDTH]^2`,
/// [`GRID_LINE_POINTS`] each, line after line.
pub fn grid_line_points(lines: usize) -> Vec<[f64; 2]> {
    let at = |k: usize, n: usize| -GRID_HALF_WIDTH + 2.0 * GRID_HALF_WIDTH * k as f64 / (n - 1).max(1) as f64;
    let mut points = Vec::with_capacity(2 * lines * GRID_LINE_POINTS);
    for horizontal in [true, false] {
        for line in 0..lines {
            for k in 0..GRID_LINE_POINTS {
                let (along, across) = (at(k, GRID_LINE_POINTS), at(line, lines));
                points.push(if horizontal {
                    [along, across]
                } else {
                    [across, along]
                });
            }
        }
    }
    points
}

fn default_flow_sampler() -> String {
    "rk4".into()
}

/// The methods that may push the particles of the closed-form views.
pub const FLOW_SAMPLERS: [&str; 4] = ["rk4", "midpoint", "euler", crate::ancestral::DDPM];

/// Precomputed frames of the marginal views: the page redraws any `t` from these without a request.
#[derive(Clone, Debug, Serialize)]
pub struct FlowFrames {
    /// Frame times, equally spaced over [0, 1].
    pub t: Vec<f64>,
    /// Half width of the window.
    pub window: f64,
    /// Whether the target is used exactly (else a kernel density estimate of it).
    pub exact: bool,
    /// `(alpha, sigma, alpha', sigma')` per frame.
    pub coefficients: Vec<[f64; 4]>,
    /// Per frame, particle positions `[n_particles * 2]`.
    pub particles: Vec<Vec<f32>>,
    /// Per frame, `div v` at each particle.
    pub divergence: Vec<Vec<f32>>,
    /// Arrows per side.
    pub grid: usize,
    /// Per frame, the velocity at the grid's cell centres `[grid * grid * 2]`, rows from the bottom.
    pub field: Vec<Vec<f32>>,
    /// Cells per side of the heat map.
    pub density_grid: usize,
    /// Per frame, `ln rho_t` at the heat map's cell centres `[density_grid^2]`, rows from the bottom.
    pub log_density: Vec<Vec<f32>>,
    /// Lines per direction of the pushed-forward grid (0: none).
    pub grid_lines: usize,
    /// Points per line of the pushed-forward grid.
    pub grid_line_points: usize,
    /// Per frame, the pushed grid's points `[2 * grid_lines * grid_line_points * 2]` (see [`grid_line_points`]).
    pub pushed_grid: Vec<Vec<f32>>,
    /// Milliseconds the server spent.
    pub compute_ms: f64,
}

/// Rounds to 1e-4 so the JSON stays short (coordinates span about 14 units).
fn short(value: f64) -> f32 {
    ((value * 1e4).round() / 1e4) as f32
}

/// Cell centres of a `cells`-per-side grid over the window.
pub fn grid_points(cells: usize) -> Vec<[f64; 2]> {
    let step = 2.0 * WINDOW / cells as f64;
    (0..cells * cells)
        .map(|idx| {
            let (row, col) = (idx / cells, idx % cells);
            [
                -WINDOW + (col as f64 + 0.5) * step,
                -WINDOW + (row as f64 + 0.5) * step,
            ]
        })
        .collect()
}

/// Standard normal source points.
pub fn source_points(n_points: usize, seed: u64) -> Vec<[f64; 2]> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n_points)
        .map(|_| [StandardNormal.sample(&mut rng), StandardNormal.sample(&mut rng)])
        .collect()
}

/// Frame times `k / (frames - 1)`.
pub fn frame_times(frames: usize) -> Vec<f64> {
    (0..frames).map(|k| k as f64 / (frames - 1) as f64).collect()
}

/// Computes the marginal views of `request`.
pub fn flow_frames(request: &FlowRequest) -> Result<FlowFrames, ApiError> {
    let started = Instant::now();
    let n_particles = check_range("n_particles", request.n_particles, 1, 5_000)?;
    let grid = check_range("grid", request.grid, 2, 64)?;
    let density_grid = check_range("density_grid", request.density_grid, 2, 128)?;
    let frames = check_range("frames", request.frames, 2, 201)?;
    let grid_lines = check_range("grid_lines", request.grid_lines, 0, MAX_GRID_LINES)?;
    let ancestral = request.sampler == crate::ancestral::DDPM;
    let method = match request.sampler.as_str() {
        "rk4" | crate::ancestral::DDPM => Method::Rk4,
        "midpoint" => Method::Midpoint,
        "euler" => Method::Euler,
        other => {
            return Err(ApiError::invalid(
                "sampler",
                format!("unknown sampler `{other}`; allowed: {}", FLOW_SAMPLERS.join(", ")),
            ));
        }
    };
    let marginal = Marginal::new(&request.target, &request.path, request.seed)?;
    let times = frame_times(frames);

    // The same closed forms in batched tensor operations (the guidance crate's `MixtureVelocity`, f64): one
    // call per batch instead of one per point, and the divergence by autograd instead of four more calls.
    let field = BatchedMarginal::new(request, marginal.t_min)?;
    let start = source_points(n_particles, request.seed);
    let x0 = points_tensor(&start);
    let mut velocity = |t: f64, x: &Tensor| -> Result<Tensor, ferroflow_solvers::SolverError> {
        Ok(tch::no_grad(|| field.velocity(x, t)))
    };
    // Two steps per frame interval: with RK4 the particles are drawn, not measured, so this is plenty.
    let options = OdeOptions::fixed(method, 2 * (frames - 1));
    let mut ode = |x: Tensor| {
        integrate_unit_interval(&mut velocity, x, &options, Some(&times))
            .map(|solution| solution.trajectory)
            .map_err(|e| ApiError::Internal(e.to_string()))
    };
    let pushed_grid = if grid_lines > 0 {
        ode(points_tensor(&grid_line_points(grid_lines)))?
    } else {
        Vec::new()
    };
    let trajectory = if ancestral {
        crate::ancestral::ancestral_solve(
            field.field.path(),
            1.0,
            |x, t| field.velocity(x, t),
            |t| t.clamp(field.t_min, T_MAX),
            x0,
            2 * (frames - 1),
            2,
            request.seed,
            false,
            "sampler",
        )?
    } else {
        ode(x0)?
    };

    let grid_x = points_tensor(&grid_points(grid));
    let density_x = points_tensor(&grid_points(density_grid));
    let mut out = FlowFrames {
        t: times.clone(),
        window: WINDOW,
        exact: marginal.exact,
        coefficients: Vec::with_capacity(frames),
        particles: Vec::with_capacity(frames),
        divergence: Vec::with_capacity(frames),
        grid,
        field: Vec::with_capacity(frames),
        density_grid,
        log_density: Vec::with_capacity(frames),
        grid_lines,
        grid_line_points: GRID_LINE_POINTS,
        pushed_grid: Vec::with_capacity(pushed_grid.len()),
        compute_ms: 0.0,
    };
    let shorts = |tensor: &Tensor| -> Result<Vec<f32>, ApiError> {
        let values = Vec::<f64>::try_from(&tensor.detach().contiguous().view([-1]))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if values.iter().any(|v| v.is_nan()) {
            return Err(ApiError::Internal(
                "the closed-form field is not finite here".into(),
            ));
        }
        Ok(values.into_iter().map(short).collect())
    };
    for positions in &pushed_grid {
        out.pushed_grid.push(shorts(positions)?);
    }
    for (&t, positions) in times.iter().zip(&trajectory) {
        out.coefficients.push(marginal.coefficients(t));
        out.particles.push(shorts(positions)?);
        out.divergence.push(shorts(&field.divergence(positions, t)?)?);
        out.field
            .push(shorts(&tch::no_grad(|| field.velocity(&grid_x, t)))?);
        out.log_density
            .push(shorts(&field.log_density(&density_x, t).clamp_min(-1e4))?);
    }
    out.compute_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(out)
}

/// A request for one trajectory with its log-density.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrajectoryRequest {
    /// The target.
    pub target: TargetSpec,
    /// The path.
    pub path: PathSpec,
    /// The start point at t = 0, inside the window.
    pub start: [f64; 2],
    /// RK4 steps from 0 to [`T_MAX`], 4..=5000.
    pub steps: i64,
    /// Seed of a kernel density estimate's samples (use the views' seed).
    #[serde(default)]
    pub seed: u64,
}

/// One trajectory of the marginal field and the log-density along it, integrated and in closed form.
#[derive(Clone, Debug, Serialize)]
pub struct Trajectory {
    /// Output times over `[t_min, T_MAX]` (`t_min` is 0 unless the path is singular there).
    pub t: Vec<f64>,
    /// Positions `[len * 2]`.
    pub points: Vec<f64>,
    /// `ln rho` from `ln rho_{t_min}(x0) - int div v(x_s, s) ds` (the Lagrangian form of the continuity
    /// equation; at `t_min = 0` the start is `ln N(x0; 0, I)`), integrated with the position by RK4.
    pub log_density: Vec<f64>,
    /// `ln rho_t(x_t)` from the closed form.
    pub log_density_exact: Vec<f64>,
    /// `div v(x_t, t)`.
    pub divergence: Vec<f64>,
    /// The largest `|log_density - log_density_exact|`.
    pub max_error: f64,
}

/// Integrates one trajectory with its log-density.
pub fn trajectory(request: &TrajectoryRequest) -> Result<Trajectory, ApiError> {
    for (axis, &value) in request.start.iter().enumerate() {
        check_real(&format!("start[{axis}]"), value, -WINDOW, WINDOW)?;
    }
    let steps = check_range("steps", request.steps, 4, 5_000)?;
    let marginal = Marginal::new(&request.target, &request.path, request.seed)?;
    let n_outputs = steps.min(200);
    let t_min = marginal.t_min;
    let times: Vec<f64> = (0..=n_outputs)
        .map(|k| t_min + (T_MAX - t_min) * k as f64 / n_outputs as f64)
        .collect();
    let [x, y] = request.start;
    let log_density_start = if t_min == 0.0 {
        -std::f64::consts::TAU.ln() - 0.5 * (x * x + y * y)
    } else {
        marginal.log_density(request.start, t_min)
    };
    let state = Array1::from(vec![x, y, log_density_start]);
    let mut field = |t: f64, s: &Array1<f64>| -> Result<Array1<f64>, ferroflow_solvers::SolverError> {
        let point = [s[0], s[1]];
        let velocity = marginal.velocity(point, t);
        Ok(Array1::from(vec![
            velocity[0],
            velocity[1],
            -marginal.divergence(point, t),
        ]))
    };
    let solution = solve_with_trajectory(&mut field, state, &times, &OdeOptions::fixed(Method::Rk4, steps))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut out = Trajectory {
        t: times.clone(),
        points: Vec::with_capacity(2 * times.len()),
        log_density: Vec::with_capacity(times.len()),
        log_density_exact: Vec::with_capacity(times.len()),
        divergence: Vec::with_capacity(times.len()),
        max_error: 0.0,
    };
    for (&t, s) in times.iter().zip(&solution.trajectory) {
        let point = [s[0], s[1]];
        let exact = marginal.log_density(point, t);
        out.points.extend(point);
        out.log_density.push(s[2]);
        out.log_density_exact.push(exact);
        out.divergence.push(marginal.divergence(point, t));
        out.max_error = out.max_error.max((s[2] - exact).abs());
    }
    Ok(out)
}

/// A request for a minibatch's couplings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouplingRequest {
    /// The target.
    pub target: TargetSpec,
    /// Pairs in the minibatch, 2..=1024.
    pub n_pairs: i64,
    /// Seed of the minibatch.
    #[serde(default)]
    pub seed: u64,
    /// Sinkhorn's entropic regularisation, in `[1e-3, 10]`, relative to the batch's largest squared distance
    /// (the training coupling's cost scaling, so it means what `epsilon` of a training means); default 0.05.
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
}

fn default_epsilon() -> f64 {
    0.05
}

/// A minibatch paired independently (row i with row i), by exact optimal transport, and by pairs drawn from
/// the entropic (Sinkhorn) plan as training draws them.
#[derive(Clone, Debug, Serialize)]
pub struct Couplings {
    /// Source points `[n * 2]`.
    pub x0: Vec<f64>,
    /// Target points `[n * 2]`.
    pub x1: Vec<f64>,
    /// The OT permutation: source row i goes to target row `ot[i]`.
    pub ot: Vec<usize>,
    /// Crossing pairs of segments of the independent coupling.
    pub crossings_independent: usize,
    /// Crossing pairs of segments of the OT coupling (OT pairs never meet at the same time, but their
    /// segments can cross at different times: far fewer than independent pairs).
    pub crossings_ot: usize,
    /// Mean squared length of the independent pairs.
    pub cost_independent: f64,
    /// Mean squared length of the OT pairs.
    pub cost_ot: f64,
    /// The regularisation used.
    pub epsilon: f64,
    /// Sinkhorn pairs (drawn with replacement from the plan): source rows.
    pub sinkhorn_source: Vec<usize>,
    /// Sinkhorn pairs: target rows.
    pub sinkhorn_target: Vec<usize>,
    /// Crossing pairs of segments of the Sinkhorn pairs.
    pub crossings_sinkhorn: usize,
    /// Mean squared length of the Sinkhorn pairs.
    pub cost_sinkhorn: f64,
}

/// Draws a minibatch and couples it both ways.
pub fn couplings(request: &CouplingRequest) -> Result<Couplings, ApiError> {
    let n_pairs = check_range("n_pairs", request.n_pairs, 2, 1_024)?;
    let epsilon = check_real("epsilon", request.epsilon, 1e-3, 10.0)?;
    let dataset = request.target.dataset("target")?;
    let mut rng = ChaCha8Rng::seed_from_u64(request.seed);
    let x1_f32 = dataset.sample(n_pairs, &mut rng);
    let x0 = source_points(n_pairs, request.seed.wrapping_add(1));
    let x0 = Array2::from_shape_fn((n_pairs, 2), |(row, axis)| x0[row][axis]);
    let x1 = Array2::from_shape_fn((n_pairs, 2), |(row, axis)| f64::from(x1_f32[row * 2 + axis]));
    let cost = squared_euclidean(x0.view(), x1.view()).map_err(|e| ApiError::Internal(e.to_string()))?;
    let assignment = Jv::default()
        .solve(cost.view())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let sinkhorn = CouplingConfig::Sinkhorn {
        sinkhorn: SinkhornConfig {
            reg: epsilon,
            ..SinkhornConfig::default()
        },
        scaling: CostScaling::default(),
    }
    .build()
    .and_then(|coupling| coupling.pair(x0.view(), x1.view(), &mut rng))
    .map_err(|e| ApiError::Internal(format!("sinkhorn: {e}")))?;
    let identity: Vec<usize> = (0..n_pairs).collect();
    let segments = |rows: &[usize], cols: &[usize]| -> Vec<[[f64; 2]; 2]> {
        rows.iter()
            .zip(cols)
            .map(|(&row, &col)| [[x0[[row, 0]], x0[[row, 1]]], [x1[[col, 0]], x1[[col, 1]]]])
            .collect()
    };
    let mean_cost = |rows: &[usize], cols: &[usize]| {
        rows.iter()
            .zip(cols)
            .map(|(&row, &col)| cost[[row, col]])
            .sum::<f64>()
            / rows.len() as f64
    };
    Ok(Couplings {
        crossings_independent: count_crossings(&segments(&identity, &identity)),
        crossings_ot: count_crossings(&segments(&identity, &assignment.row_to_col)),
        cost_independent: mean_cost(&identity, &identity),
        cost_ot: mean_cost(&identity, &assignment.row_to_col),
        epsilon,
        crossings_sinkhorn: count_crossings(&segments(&sinkhorn.source_idx, &sinkhorn.target_idx)),
        cost_sinkhorn: mean_cost(&sinkhorn.source_idx, &sinkhorn.target_idx),
        sinkhorn_source: sinkhorn.source_idx,
        sinkhorn_target: sinkhorn.target_idx,
        x0: x0.iter().copied().collect(),
        x1: x1.iter().copied().collect(),
        ot: assignment.row_to_col,
    })
}

/// The number of pairs of segments that properly cross (touching ends do not count).
pub fn count_crossings(segments: &[[[f64; 2]; 2]]) -> usize {
    fn orientation(a: [f64; 2], b: [f64; 2], c: [f64; 2]) -> f64 {
        (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    }
    let crosses = |[a, b]: [[f64; 2]; 2], [c, d]: [[f64; 2]; 2]| {
        let (o1, o2) = (orientation(a, b, c), orientation(a, b, d));
        let (o3, o4) = (orientation(c, d, a), orientation(c, d, b));
        o1 * o2 < 0.0 && o3 * o4 < 0.0
    };
    let mut count = 0;
    for (idx, &first) in segments.iter().enumerate() {
        count += segments[idx + 1..]
            .iter()
            .filter(|&&second| crosses(first, second))
            .count();
    }
    count
}
