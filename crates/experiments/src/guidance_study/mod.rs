//! The effect study of mode-seeking guidance on 2D Gaussian mixtures with a known density (the study behind
//! `docs/guidance.md`, run by `ferroflow bench guidance --study OUT`): mean true log-density, coverage of the
//! components and the distortion of their weights, as the strength grows, for the closed-form marginal
//! velocity and for a quickly trained MLP, with both estimators.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use ferroflow_engine::RunConfig;
use ferroflow_engine::config::{
    DataSection, FlowSection, ModelSection, RunSection, SampleSection, TrainSection,
};
use ferroflow_engine::data::{Dataset, MixtureSpec};
use ferroflow_engine::files::write_atomic;
use ferroflow_engine::sample::{TrainedFlow, to_array};
use ferroflow_guidance::{
    DivergenceEstimator, MixtureVelocity, ModeSeeking, ModeSeekingField, Normalize, ProbeDistribution,
    Schedule,
};
use ferroflow_models::Activation;
use ferroflow_models::optim::OptimizerConfig;
use ferroflow_paths::{AffinePath, CondOtScheduler, GaussianMixture};
use ferroflow_report::charts::{Panel, Series, lines_png, scatter_grid_png};
use ferroflow_solvers::{Method, OdeOptions, solve};
use ndarray::{Array1, Array2};
use tch::{Device, Kind, Tensor};

/// A velocity closure `(x, t) -> v` that records the autograd graph.
type BoxedVelocity<'a> = Box<dyn Fn(&Tensor, f64) -> Tensor + 'a>;

/// One measured quantity of a study row.
type Metric = fn(&StudyRow) -> f64;

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

    /// The config of the study's MLP run on this mixture (CondOT path, independent coupling, N(0, I) source),
    /// built as a typed value.
    fn run_config(&self, out_dir: &Path, train_steps: usize) -> Result<RunConfig> {
        let covariances = self
            .variances
            .iter()
            .map(|&variance| vec![vec![variance, 0.0], vec![0.0, variance]])
            .collect();
        let config = RunConfig {
            run: RunSection::named(format!("guidance-study-{}", self.name), out_dir),
            data: DataSection {
                source: Dataset::Gaussian { dim: 2, std: 1.0 },
                target: Dataset::Mixture(MixtureSpec {
                    weights: self.weights.clone(),
                    means: self.means.iter().map(|m| m.to_vec()).collect(),
                    covariances,
                }),
                manifold: None,
            },
            model: ModelSection {
                width: 64,
                depth: 3,
                activation: Activation::Selu,
                ..ModelSection::default()
            },
            flow: FlowSection::default(),
            train: TrainSection {
                steps: train_steps,
                batch_size: 256,
                checkpoint_every: train_steps,
                log_every: 500,
                optimizer: OptimizerConfig {
                    lr: 1e-3,
                    ..OptimizerConfig::default()
                },
                ..TrainSection::default()
            },
            sample: SampleSection {
                n_samples: 1000,
                solver: Method::Euler,
                steps: 100,
                w2_samples: 500,
                ..SampleSection::default()
            },
        };
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
        ("exact", DivergenceEstimator::Exact),
        (
            "hutchinson K=1",
            DivergenceEstimator::Hutchinson {
                probes: 1,
                distribution: ProbeDistribution::Rademacher,
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
            ferroflow_engine::run::train_new(&mixture.run_config(scratch, train_steps)?, &mut [], None)?;
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
        scatter_grid_png(
            &out_dir.join(format!("guidance-{}-samples.png", mixture.name)),
            &pictures,
            5.0,
        )?;
    }
    write_atomic(&out_dir.join("guidance-study.md"), markdown.as_bytes())?;
    write_atomic(
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

/// Two panels against the strength: mean true log-density, and the total variation of the component weights;
/// one line per field and estimator.
fn metrics_png(path: &Path, title: &str, rows: &[&StudyRow]) -> Result<()> {
    let metrics: [(&str, Metric); 2] = [
        ("mean true ln p1 of the samples", |r| r.mean_log_density),
        ("TV between component shares and weights", |r| r.weight_tv),
    ];
    let panels: Vec<Panel> = metrics
        .iter()
        .map(|(caption, metric)| {
            let mut series: Vec<Series> = Vec::new();
            for row in rows {
                let name = format!("{}, {}", row.field, row.estimator);
                let Some(index) = STUDY_LAMBDAS.iter().position(|&l| l == row.lambda) else {
                    continue;
                };
                let point = (index, metric(row));
                match series.iter_mut().find(|s| s.name == name) {
                    Some(existing) => existing.points.push(point),
                    None => series.push(Series {
                        name,
                        points: vec![point],
                    }),
                }
            }
            Panel {
                caption: (*caption).to_string(),
                series,
            }
        })
        .collect();
    let labels: Vec<String> = STUDY_LAMBDAS.iter().map(|l| l.to_string()).collect();
    lines_png(
        path,
        &format!("mode seeking on {title}"),
        "lambda",
        &labels,
        &panels,
    )
}
