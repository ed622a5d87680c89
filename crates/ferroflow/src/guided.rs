//! Guided sampling of trained runs (mode seeking, classifier-free guidance) and the effect study of mode
//! seeking on 2D Gaussian mixtures with a known density.
//!
//! - [`GuidanceArgs`]: the `ferroflow sample` flags (`--guidance mode --lambda L --estimator ... --probes K
//!   --schedule ... --normalize ... --cfg W --class C`), turned into validated [`GuidanceSettings`].
//! - [`sample_guided`]: integrates a [`TrainedFlow`] with those settings and any ODE method.
//! - [`effect_study`]: the study behind `docs/guidance.md` (run by `ferroflow bench guidance --study OUT`):
//!   mean true log-density, coverage of the components and the distortion of their weights, as the strength
//!   grows, for the closed-form marginal velocity and for a quickly trained MLP, with both estimators.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, anyhow, bail};
use ferroflow_guidance::{
    ClassifierFree, Estimator, MixtureVelocity, ModeSeeking, ModeSeekingField, Normalize, ProbeDistribution,
    Schedule, classifier_free_velocity,
};
use ferroflow_models::VelocityNet;
use ferroflow_paths::{AffinePath, CondOtScheduler, GaussianMixture};
use ferroflow_solvers::{Field, Method, OdeOptions, Solution, SolverError, solve, solve_with_trajectory};
use ndarray::{Array1, Array2, Array3};
use plotters::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::RunConfig;
use crate::config::Prediction;
use crate::progress::Progress;
use crate::sample::{TrainedFlow, to_array};

/// Which guidance `ferroflow sample` applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GuidanceKind {
    /// No mode seeking (classifier-free guidance may still be on, with --cfg/--class).
    #[default]
    None,
    /// Divergence-based mode seeking: v + lambda(t) grad_x[-div v].
    Mode,
}

/// The divergence-gradient estimator, as a command-line choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EstimatorName {
    /// D vector-Jacobian products per evaluation.
    Exact,
    /// Hutchinson's estimator with --probes Rademacher probes.
    Hutchinson,
}

/// Guidance flags of `ferroflow sample`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct GuidanceArgs {
    /// Guidance: none, or mode (divergence-based mode seeking; needs --lambda).
    #[arg(long, value_enum, default_value_t = GuidanceKind::None)]
    pub guidance: GuidanceKind,
    /// Mode-seeking strength lambda >= 0 (with --guidance mode).
    #[arg(long, allow_hyphen_values = true)]
    pub lambda: Option<f64>,
    /// Divergence-gradient estimator (default exact).
    #[arg(long, value_enum)]
    pub estimator: Option<EstimatorName>,
    /// Probes per evaluation of Hutchinson's estimator (default 1).
    #[arg(long)]
    pub probes: Option<usize>,
    /// Strength over time: constant, window:T_START:T_END, or decay:POWER (lambda (1 - t)^POWER).
    #[arg(long)]
    pub schedule: Option<String>,
    /// Per-sample normalisation of the gradient: none, clip:SCALE (|g| <= SCALE |v|) or rescale:SCALE.
    #[arg(long)]
    pub normalize: Option<String>,
    /// Seed of Hutchinson's probes.
    #[arg(long, default_value_t = 0)]
    pub guidance_seed: u64,
    /// Classifier-free guidance weight w >= 0 (needs --class and a class-conditional model).
    #[arg(long, allow_hyphen_values = true)]
    pub cfg: Option<f64>,
    /// The class to sample (needs a class-conditional model).
    #[arg(long)]
    pub class: Option<usize>,
}

/// A velocity closure `(x, t) -> v` that records the autograd graph.
type BoxedVelocity<'a> = Box<dyn Fn(&Tensor, f64) -> Tensor + 'a>;

/// One measured quantity of a study row.
type Metric = fn(&StudyRow) -> f64;

/// Validated guidance settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GuidanceSettings {
    /// Mode seeking, when asked for.
    pub mode_seeking: Option<ModeSeeking>,
    /// Classifier-free guidance (or plain conditional sampling with weight 0), when a class was asked for.
    pub classifier_free: Option<ClassifierFree>,
}

impl GuidanceArgs {
    /// Checks the flags and builds the settings; a bad value is refused with its flag's name.
    pub fn settings(&self) -> Result<GuidanceSettings> {
        let mode_seeking = match self.guidance {
            GuidanceKind::None => {
                for (set, flag) in [
                    (self.lambda.is_some(), "--lambda"),
                    (self.estimator.is_some(), "--estimator"),
                    (self.probes.is_some(), "--probes"),
                    (self.schedule.is_some(), "--schedule"),
                    (self.normalize.is_some(), "--normalize"),
                ] {
                    if set {
                        bail!("{flag} needs --guidance mode");
                    }
                }
                None
            }
            GuidanceKind::Mode => {
                let lambda = self.lambda.context("--guidance mode needs --lambda")?;
                let estimator = match (self.estimator.unwrap_or(EstimatorName::Exact), self.probes) {
                    (EstimatorName::Exact, Some(_)) => bail!("--probes needs --estimator hutchinson"),
                    (EstimatorName::Exact, None) => Estimator::Exact,
                    (EstimatorName::Hutchinson, probes) => Estimator::Hutchinson {
                        probes: probes.unwrap_or(1),
                        probe: ProbeDistribution::Rademacher,
                    },
                };
                let config = ModeSeeking {
                    lambda,
                    estimator,
                    schedule: parse_schedule(self.schedule.as_deref().unwrap_or("constant"))?,
                    normalize: parse_normalize(self.normalize.as_deref().unwrap_or("none"))?,
                    seed: self.guidance_seed,
                };
                config
                    .validate()
                    .context("guidance flags (--lambda, --probes, --schedule, --normalize)")?;
                Some(config)
            }
        };
        let classifier_free = match (self.cfg, self.class) {
            (Some(_), None) => bail!("--cfg needs --class (the class to guide towards)"),
            (weight, Some(class)) => {
                let config = ClassifierFree {
                    weight: weight.unwrap_or(0.0),
                    class,
                };
                config.validate().context("--cfg")?;
                Some(config)
            }
            (None, None) => None,
        };
        Ok(GuidanceSettings {
            mode_seeking,
            classifier_free,
        })
    }
}

/// Parses `constant`, `window:T_START:T_END` or `decay:POWER`.
pub fn parse_schedule(text: &str) -> Result<Schedule> {
    let parts: Vec<&str> = text.split(':').collect();
    let number = |s: &str| -> Result<f64> {
        s.trim()
            .parse::<f64>()
            .with_context(|| format!("--schedule {text:?}: {s:?} is not a number"))
    };
    match parts.as_slice() {
        ["constant"] => Ok(Schedule::Constant),
        ["window", start, end] => Ok(Schedule::Window {
            t_start: number(start)?,
            t_end: number(end)?,
        }),
        ["decay", power] => Ok(Schedule::Decay {
            power: number(power)?,
        }),
        _ => bail!("--schedule {text:?}: allowed: constant, window:T_START:T_END, decay:POWER"),
    }
}

/// Parses `none`, `clip:SCALE` or `rescale:SCALE`.
pub fn parse_normalize(text: &str) -> Result<Normalize> {
    let parts: Vec<&str> = text.split(':').collect();
    let number = |s: &str| -> Result<f64> {
        s.trim()
            .parse::<f64>()
            .with_context(|| format!("--normalize {text:?}: {s:?} is not a number"))
    };
    match parts.as_slice() {
        ["none"] => Ok(Normalize::None),
        ["clip", scale] => Ok(Normalize::Clip {
            scale: number(scale)?,
        }),
        ["rescale", scale] => Ok(Normalize::Rescale {
            scale: number(scale)?,
        }),
        _ => bail!("--normalize {text:?}: allowed: none, clip:SCALE, rescale:SCALE"),
    }
}

/// Integrates `flow` from t = 0 to 1 from `x0` with the guidance of `settings` (plain sampling when there is
/// none); with `times`, also returns the states at those times.
pub fn sample_guided(
    flow: &TrainedFlow,
    x0: Tensor,
    options: &OdeOptions,
    times: Option<&[f64]>,
    settings: &GuidanceSettings,
) -> Result<Solution<Tensor>> {
    if settings == &GuidanceSettings::default() {
        return Ok(flow.integrate(x0, options, times)?);
    }
    let params = flow.net.params().views();
    let velocity: BoxedVelocity<'_> = match settings.classifier_free {
        None => Box::new(|x: &Tensor, t: f64| flow.velocity_with_grad(x, t)),
        Some(cfg) => {
            let guided = classifier_free_velocity(&flow.net, &params, cfg)
                .with_context(|| format!("run {}", flow.run_dir.display()))?;
            if flow.config.flow.prediction != Prediction::Velocity {
                bail!(
                    "run {}: classifier-free guidance needs a velocity-predicting model (flow.prediction = \
                     \"velocity\")",
                    flow.run_dir.display()
                );
            }
            Box::new(guided)
        }
    };
    let solution = match &settings.mode_seeking {
        Some(config) => {
            let mut field = ModeSeekingField::new(&velocity, config.clone())?;
            integrate(&mut field, x0, options, times)?
        }
        None => {
            let mut field =
                |t: f64, x: &Tensor| -> Result<Tensor, SolverError> { Ok(tch::no_grad(|| velocity(x, t))) };
            integrate(&mut field, x0, options, times)?
        }
    };
    Ok(solution)
}

fn integrate<F: Field<Tensor>>(
    field: &mut F,
    x0: Tensor,
    options: &OdeOptions,
    times: Option<&[f64]>,
) -> Result<Solution<Tensor>, SolverError> {
    match times {
        Some(times) => solve_with_trajectory(field, x0, times, options),
        None => solve(field, x0, 0.0, 1.0, options),
    }
}

/// The strengths of the effect study.
pub const STUDY_LAMBDAS: [f64; 8] = [0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0];

/// Samples per setting of the effect study.
const STUDY_SAMPLES: i64 = 2000;

/// Euler steps of the effect study.
const STUDY_STEPS: usize = 100;

/// A component counts as covered when it receives at least this share of the samples.
const COVERAGE_SHARE: f64 = 0.01;

/// One 2D Gaussian mixture of the study.
struct StudyMixture {
    name: &'static str,
    description: &'static str,
    weights: Vec<f64>,
    means: Vec<[f64; 2]>,
    variances: Vec<f64>,
}

fn study_mixtures() -> Vec<StudyMixture> {
    let ring_weights: Vec<f64> = (1..=8).map(|k| k as f64 / 36.0).collect();
    let ring_means = (0..8)
        .map(|k| {
            let angle = 2.0 * std::f64::consts::PI * k as f64 / 8.0;
            [3.0 * angle.cos(), 3.0 * angle.sin()]
        })
        .collect();
    vec![
        StudyMixture {
            name: "ring8",
            description: "8 components of std 0.2 on a circle of radius 3, weights 1/36, 2/36, ..., 8/36",
            weights: ring_weights,
            means: ring_means,
            variances: vec![0.04; 8],
        },
        StudyMixture {
            name: "narrow-wide",
            description: "a narrow component (std 0.15) at (-2, 0) and a wide one (std 1) at (2, 0), weights 1/2 each",
            weights: vec![0.5, 0.5],
            means: vec![[-2.0, 0.0], [2.0, 0.0]],
            variances: vec![0.0225, 1.0],
        },
    ]
}

impl StudyMixture {
    fn gaussian_mixture(&self) -> Result<GaussianMixture> {
        let n = self.weights.len();
        let means = Array2::from_shape_vec((n, 2), self.means.iter().flatten().copied().collect())?;
        Ok(GaussianMixture::isotropic(
            Array1::from_vec(self.weights.clone()),
            means,
            Array1::from_vec(self.variances.clone()),
        )?)
    }

    /// The config of the study's MLP run on this mixture (CondOT path, independent coupling, N(0, I) source).
    fn run_config(&self, out_dir: &Path, train_steps: usize) -> Result<RunConfig> {
        let n = self.weights.len();
        let mut covariances = Array3::<f64>::zeros((n, 2, 2));
        for (k, &variance) in self.variances.iter().enumerate() {
            covariances[[k, 0, 0]] = variance;
            covariances[[k, 1, 1]] = variance;
        }
        let list = |values: &[f64]| {
            let items: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
            format!("[{}]", items.join(", "))
        };
        let means: Vec<String> = self.means.iter().map(|m| list(m)).collect();
        let covs: Vec<String> = covariances
            .outer_iter()
            .map(|c| {
                format!(
                    "[{}, {}]",
                    list(&[c[[0, 0]], c[[0, 1]]]),
                    list(&[c[[1, 0]], c[[1, 1]]])
                )
            })
            .collect();
        let text = format!(
            r#"
[run]
name = "guidance-study-{name}"
out_dir = {out_dir:?}
seed = 0
threads = 1

[data]
source = {{ kind = "gaussian" }}
target = {{ kind = "mixture", weights = {weights}, means = [{means}], covariances = [{covs}] }}

[model]
width = 64
depth = 3
activation = "selu"

[flow]
path = "affine"
scheduler = {{ kind = "cond_ot" }}
sigma = 0.0
coupling = {{ kind = "independent" }}

[train]
steps = {train_steps}
batch_size = 256
checkpoint_every = {train_steps}
log_every = 500

[train.optimizer]
kind = "adam"
lr = 1e-3

[sample]
n_samples = 1000
solver = "euler"
steps = 100
w2_samples = 500
"#,
            name = self.name,
            out_dir = out_dir.display().to_string(),
            weights = list(&self.weights),
            means = means.join(", "),
            covs = covs.join(", "),
        );
        let config: RunConfig = toml::from_str(&text).context("the study's run config")?;
        config.validate()?;
        Ok(config)
    }
}

/// One measured setting of the effect study.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StudyRow {
    /// The mixture.
    pub mixture: String,
    /// `closed-form v*` or `trained MLP`.
    pub field: String,
    /// `exact` or `hutchinson K=1`.
    pub estimator: String,
    /// The guidance strength.
    pub lambda: f64,
    /// Mean of the true `ln p1` over the finite samples.
    pub mean_log_density: f64,
    /// Share of the components that receive at least 1% of the samples.
    pub coverage: f64,
    /// Total variation between the components' shares of the samples and their weights.
    pub weight_tv: f64,
    /// Samples that left the finite numbers.
    pub non_finite: usize,
    /// Seconds of sampling.
    pub seconds: f64,
}

/// Runs the effect study and writes `guidance-study.md` (tables), `guidance-study.json` and
/// `guidance-<mixture>-metrics.png`, `guidance-<mixture>-samples.png` into `out_dir`. Trains one small MLP per
/// mixture in a temporary folder (removed afterwards). Takes a few minutes on two cores.
pub fn effect_study(out_dir: &Path) -> Result<Vec<StudyRow>> {
    effect_study_with(out_dir, 4000)
}

/// [`effect_study`] with `train_steps` training steps per MLP.
pub fn effect_study_with(out_dir: &Path, train_steps: usize) -> Result<Vec<StudyRow>> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let scratch = std::env::temp_dir().join(format!("ferroflow-guidance-study-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let result = run_study(out_dir, &scratch, train_steps);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn run_study(out_dir: &Path, scratch: &Path, train_steps: usize) -> Result<Vec<StudyRow>> {
    tch::set_num_threads(1);
    let estimators = [
        ("exact", Estimator::Exact),
        (
            "hutchinson K=1",
            Estimator::Hutchinson {
                probes: 1,
                probe: ProbeDistribution::Rademacher,
            },
        ),
    ];
    let mut rows = Vec::new();
    let mut markdown = String::new();
    for mixture in study_mixtures() {
        let gaussian_mixture = mixture.gaussian_mixture()?;
        let closed_form =
            MixtureVelocity::new(&gaussian_mixture, AffinePath::new(CondOtScheduler, 0.0)?, 1.0)?;
        eprintln!(
            "guidance study: training the MLP on {} ({train_steps} steps)",
            mixture.name
        );
        let run_dir =
            crate::run::train_new(&mixture.run_config(scratch, train_steps)?, &mut Progress::Silent)?;
        let flow = TrainedFlow::load(&run_dir)?;
        tch::manual_seed(2024);
        let x0 = Tensor::randn([STUDY_SAMPLES, 2], (Kind::Float, Device::Cpu));
        let fields: [(&str, BoxedVelocity<'_>); 2] = [
            (
                "closed-form v*",
                Box::new(|x: &Tensor, t: f64| {
                    closed_form
                        .velocity(x, t.min(1.0 - 1e-4))
                        .expect("the CondOT mixture velocity is regular below t = 1")
                }),
            ),
            (
                "trained MLP",
                Box::new(|x: &Tensor, t: f64| flow.velocity_with_grad(x, t)),
            ),
        ];
        let mut pictures: Vec<(String, Array2<f32>)> = Vec::new();
        for (field_name, velocity) in &fields {
            for (estimator_name, estimator) in estimators {
                for lambda in STUDY_LAMBDAS {
                    let config = ModeSeeking {
                        lambda,
                        estimator,
                        schedule: Schedule::Constant,
                        normalize: Normalize::None,
                        seed: 1,
                    };
                    let mut field = ModeSeekingField::new(velocity, config)?;
                    let started = std::time::Instant::now();
                    let samples = solve(
                        &mut field,
                        x0.shallow_clone(),
                        0.0,
                        1.0,
                        &OdeOptions::fixed(Method::Euler, STUDY_STEPS),
                    )?
                    .state;
                    let seconds = started.elapsed().as_secs_f64();
                    let row = measure(
                        &closed_form,
                        &mixture,
                        &samples,
                        field_name,
                        estimator_name,
                        lambda,
                        seconds,
                    )?;
                    eprintln!(
                        "  {:<12} {:<15} {:<15} lambda {:<5} mean ln p {:>9.3}  coverage {:.3}  TV {:.3}  ({:.1} s)",
                        row.mixture,
                        row.field,
                        row.estimator,
                        row.lambda,
                        row.mean_log_density,
                        row.coverage,
                        row.weight_tv,
                        row.seconds
                    );
                    if estimator_name == "exact" && [0.0, 0.3, 3.0].contains(&lambda) {
                        pictures.push((format!("{field_name}, lambda = {lambda}"), to_array(&samples)));
                    }
                    rows.push(row);
                }
            }
        }
        let mixture_rows: Vec<&StudyRow> = rows.iter().filter(|r| r.mixture == mixture.name).collect();
        write_table(&mut markdown, &mixture, &mixture_rows, train_steps);
        metrics_png(
            &out_dir.join(format!("guidance-{}-metrics.png", mixture.name)),
            mixture.name,
            &mixture_rows,
        )?;
        samples_grid_png(
            &out_dir.join(format!("guidance-{}-samples.png", mixture.name)),
            &pictures,
        )?;
    }
    crate::files::write_atomic(&out_dir.join("guidance-study.md"), markdown.as_bytes())?;
    crate::files::write_atomic(
        &out_dir.join("guidance-study.json"),
        serde_json::to_string_pretty(&rows)?.as_bytes(),
    )?;
    Ok(rows)
}

fn measure(
    closed_form: &MixtureVelocity<AffinePath<CondOtScheduler>>,
    mixture: &StudyMixture,
    samples: &Tensor,
    field: &str,
    estimator: &str,
    lambda: f64,
    seconds: f64,
) -> Result<StudyRow> {
    let samples = samples.to_kind(Kind::Double);
    let finite = samples.isfinite().all_dim(1, false);
    let n_total = samples.size()[0];
    let kept = samples.index_select(0, &finite.nonzero().squeeze_dim(1));
    let n_kept = kept.size()[0];
    let (mean_log_density, coverage, weight_tv) = if n_kept == 0 {
        (f64::NAN, 0.0, 1.0)
    } else {
        let log_density = closed_form.log_density(&kept, 1.0)?;
        let assignment = closed_form.responsibilities(&kept, 1.0)?.argmax(1, false);
        let n_components = mixture.weights.len() as i64;
        let counts = Vec::<i64>::try_from(assignment.bincount(None::<Tensor>, n_components))
            .map_err(|e| anyhow!("{e}"))?;
        let shares: Vec<f64> = counts.iter().map(|&c| c as f64 / n_kept as f64).collect();
        let covered = shares.iter().filter(|&&s| s >= COVERAGE_SHARE).count();
        let tv = 0.5
            * shares
                .iter()
                .zip(&mixture.weights)
                .map(|(s, w)| (s - w).abs())
                .sum::<f64>();
        (
            log_density.mean(Kind::Double).double_value(&[]),
            covered as f64 / n_components as f64,
            tv,
        )
    };
    Ok(StudyRow {
        mixture: mixture.name.to_string(),
        field: field.to_string(),
        estimator: estimator.to_string(),
        lambda,
        mean_log_density,
        coverage,
        weight_tv,
        non_finite: (n_total - n_kept) as usize,
        seconds,
    })
}

fn write_table(markdown: &mut String, mixture: &StudyMixture, rows: &[&StudyRow], train_steps: usize) {
    let _ = writeln!(
        markdown,
        "### {}\n\n{}. {} samples, {} Euler steps from N(0, I); MLP 3 x 64 SELU trained {} steps (CondOT, \
         independent coupling). Coverage: share of components with >= 1% of the samples; TV: total variation \
         between the components' shares and their weights (0 = exact weights).\n",
        mixture.name, mixture.description, STUDY_SAMPLES, STUDY_STEPS, train_steps
    );
    let _ = writeln!(
        markdown,
        "| field | estimator | lambda | mean ln p1 | coverage | TV of weights | non-finite | seconds |\n|---|---|---:|---:|---:|---:|---:|---:|"
    );
    for row in rows {
        let _ = writeln!(
            markdown,
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {} | {:.1} |",
            row.field,
            row.estimator,
            row.lambda,
            row.mean_log_density,
            row.coverage,
            row.weight_tv,
            row.non_finite,
            row.seconds
        );
    }
    let _ = writeln!(markdown);
}

static FONT: Once = Once::new();

/// Registers the shipped font under `sans-serif` (once per process), as `plot.rs` does.
fn register_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSans.ttf");
        // Registration fails only on a malformed font, which the first caption would reveal.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

const SERIES_COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

/// Two panels against the strength (as an index into [`STUDY_LAMBDAS`]): mean true log-density, and the
/// total variation of the component weights; one line per field and estimator.
fn metrics_png(path: &Path, title: &str, rows: &[&StudyRow]) -> Result<()> {
    register_font();
    let mut series: Vec<(String, Vec<&StudyRow>)> = Vec::new();
    for row in rows {
        let name = format!("{}, {}", row.field, row.estimator);
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, list)) => list.push(row),
            None => series.push((name, vec![row])),
        }
    }
    let root = BitMapBackend::new(path, (1200, 520)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let root = root.titled(&format!("mode seeking on {title}"), ("sans-serif", 22))?;
        let panels = root.split_evenly((1, 2));
        let n_lambdas = STUDY_LAMBDAS.len() as f64;
        let metrics: [(&str, Metric); 2] = [
            ("mean true ln p1 of the samples", |r| r.mean_log_density),
            ("TV between component shares and weights", |r| r.weight_tv),
        ];
        for (panel, (caption, metric)) in panels.iter().zip(metrics) {
            let values: Vec<f64> = rows.iter().map(|r| metric(r)).filter(|v| v.is_finite()).collect();
            let (mut low, mut high) = values
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            if low > high {
                (low, high) = (0.0, 1.0);
            }
            let pad = ((high - low) * 0.08).max(1e-3);
            let mut chart = ChartBuilder::on(panel)
                .caption(caption, ("sans-serif", 16))
                .margin(14)
                .x_label_area_size(40)
                .y_label_area_size(56)
                .build_cartesian_2d(-0.2..n_lambdas - 0.8, (low - pad)..(high + pad))?;
            chart
                .configure_mesh()
                .light_line_style(WHITE)
                .x_labels(STUDY_LAMBDAS.len())
                .x_label_formatter(&|v| {
                    let index = v.round();
                    if (v - index).abs() < 1e-6 && index >= 0.0 && (index as usize) < STUDY_LAMBDAS.len() {
                        format!("{}", STUDY_LAMBDAS[index as usize])
                    } else {
                        String::new()
                    }
                })
                .x_desc("lambda")
                .label_style(("sans-serif", 13))
                .draw()?;
            for (series_idx, (name, list)) in series.iter().enumerate() {
                let color = SERIES_COLORS[series_idx % SERIES_COLORS.len()];
                let points: Vec<(f64, f64)> = list
                    .iter()
                    .filter_map(|r| {
                        let index = STUDY_LAMBDAS.iter().position(|&l| l == r.lambda)? as f64;
                        let value = metric(r);
                        value.is_finite().then_some((index, value))
                    })
                    .collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
                chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.85))
                .label_font(("sans-serif", 12))
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("cannot draw {}", path.display()))
}

/// Scatter plots of sample sets, three per row.
fn samples_grid_png(path: &Path, pictures: &[(String, Array2<f32>)]) -> Result<()> {
    register_font();
    let columns = 3;
    let rows = pictures.len().div_ceil(columns).max(1);
    let root = BitMapBackend::new(path, (360 * columns as u32, 360 * rows as u32)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let panels = root.split_evenly((rows, columns));
        for (panel, (title, samples)) in panels.iter().zip(pictures) {
            let mut chart = ChartBuilder::on(panel)
                .caption(title, ("sans-serif", 14))
                .margin(8)
                .x_label_area_size(22)
                .y_label_area_size(30)
                .build_cartesian_2d(-5.0..5.0, -5.0..5.0)?;
            chart
                .configure_mesh()
                .light_line_style(WHITE)
                .label_style(("sans-serif", 11))
                .draw()?;
            let blue = RGBColor(31, 119, 180).mix(0.35).filled();
            chart.draw_series(
                samples
                    .rows()
                    .into_iter()
                    .filter(|r| r[0].is_finite() && r[1].is_finite() && r[0].abs() < 5.0 && r[1].abs() < 5.0)
                    .map(|r| Circle::new((r[0] as f64, r[1] as f64), 1, blue)),
            )?;
        }
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("cannot draw {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(guidance: GuidanceKind) -> GuidanceArgs {
        GuidanceArgs {
            guidance,
            ..GuidanceArgs::default()
        }
    }

    #[test]
    fn flags_become_validated_settings() {
        let mut mode = args(GuidanceKind::Mode);
        mode.lambda = Some(0.2);
        mode.estimator = Some(EstimatorName::Hutchinson);
        mode.probes = Some(4);
        mode.schedule = Some("window:0.1:0.9".into());
        mode.normalize = Some("clip:2".into());
        let settings = mode.settings().unwrap();
        let config = settings.mode_seeking.unwrap();
        assert_eq!(config.lambda, 0.2);
        assert_eq!(
            config.schedule,
            Schedule::Window {
                t_start: 0.1,
                t_end: 0.9
            }
        );
        assert_eq!(config.normalize, Normalize::Clip { scale: 2.0 });
        assert!(settings.classifier_free.is_none());

        let mut bad = mode.clone();
        bad.lambda = Some(-1.0);
        assert!(format!("{:#}", bad.settings().unwrap_err()).contains("`lambda`"));
        let mut bad = mode.clone();
        bad.probes = Some(0);
        assert!(format!("{:#}", bad.settings().unwrap_err()).contains("`estimator.probes`"));
        let mut bad = mode.clone();
        bad.schedule = Some("window:0.9:0.1".into());
        assert!(format!("{:#}", bad.settings().unwrap_err()).contains("`schedule.t_start`"));
        let mut bad = mode.clone();
        bad.schedule = Some("linear".into());
        assert!(bad.settings().is_err());
        let mut no_lambda = mode.clone();
        no_lambda.lambda = None;
        assert!(no_lambda.settings().is_err());
        let mut stray = args(GuidanceKind::None);
        stray.lambda = Some(0.1);
        assert!(
            stray
                .settings()
                .unwrap_err()
                .to_string()
                .contains("--guidance mode")
        );
        let mut cfg_without_class = args(GuidanceKind::None);
        cfg_without_class.cfg = Some(1.0);
        assert!(cfg_without_class.settings().is_err());
        assert_eq!(
            args(GuidanceKind::None).settings().unwrap(),
            GuidanceSettings::default()
        );
    }

    /// A tiny run: 30 training steps on a 2-component mixture.
    fn tiny_run(dir: &Path) -> TrainedFlow {
        let mixture = &study_mixtures()[1];
        let mut config = mixture.run_config(dir, 30).unwrap();
        config.sample.n_samples = 64;
        config.sample.w2_samples = 32;
        config.sample.steps = 10;
        let run_dir = crate::run::train_new(&config, &mut Progress::Silent).unwrap();
        TrainedFlow::load(&run_dir).unwrap()
    }

    #[test]
    fn guided_sampling_of_a_run_matches_plain_at_lambda_zero_and_refuses_a_class() {
        let dir = std::env::temp_dir().join(format!("ferroflow-guided-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let flow = tiny_run(&dir);
        let options = OdeOptions::fixed(Method::Heun, 10);
        let plain = flow
            .integrate(flow.source_points(50, 2), &options, None)
            .unwrap()
            .state;
        let guided = |args: &GuidanceArgs| {
            sample_guided(
                &flow,
                flow.source_points(50, 2),
                &options,
                None,
                &args.settings().unwrap(),
            )
        };
        let mut mode = args(GuidanceKind::Mode);
        mode.lambda = Some(0.0);
        assert!(guided(&mode).unwrap().state.equal(&plain));
        mode.lambda = Some(0.5);
        assert!(!guided(&mode).unwrap().state.equal(&plain));

        let mut class = args(GuidanceKind::None);
        class.class = Some(1);
        class.cfg = Some(2.0);
        let err = guided(&class).err().unwrap();
        assert!(format!("{err:#}").contains("unconditional"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
