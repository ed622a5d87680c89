//! Whole runs: train a config into a new run folder (or resume one), then write its samples, pictures,
//! loss curve and metrics; evaluate a finished run against fresh target samples.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use ferroflow_coupling::{AssignmentSolver, Jv, squared_euclidean};
use ndarray::ArrayView2;
use serde_json::{Map, Value, json};

use crate::batch::{rng_for, stream};
use crate::config::RunConfig;
use crate::files::{create_run_dir, update_metrics, write_atomic, write_npy};
use crate::progress::Progress;
use crate::sample::{TrainedFlow, to_array};
use crate::train::{TrainSummary, train};

/// Trains `config` into a new folder `out_dir/name` and finishes it (samples, pictures, metrics).
pub fn train_new(config: &RunConfig, progress: &mut Progress) -> Result<PathBuf> {
    let run_dir = create_run_dir(Path::new(&config.run.out_dir), &config.run.name)?;
    write_atomic(&run_dir.join("config.toml"), config.to_toml().as_bytes())?;
    let summary = train(config, &run_dir, false, progress)?;
    finish(config, &run_dir, &summary)?;
    Ok(run_dir)
}

/// Continues the run in `run_dir` from its last checkpoint to `config.train.steps`, or to `steps` when
/// given (the run's `config.toml` is then updated to say so).
pub fn resume(run_dir: &Path, steps: Option<usize>, progress: &mut Progress) -> Result<PathBuf> {
    let config_path = run_dir.join("config.toml");
    let mut config = RunConfig::load(&config_path)?;
    if let Some(steps) = steps {
        config.train.steps = steps;
        config.validate().context("--steps")?;
        write_atomic(&config_path, config.to_toml().as_bytes())?;
    }
    let summary = train(&config, run_dir, true, progress)
        .with_context(|| format!("cannot resume {}", run_dir.display()))?;
    finish(&config, run_dir, &summary)?;
    Ok(run_dir.to_path_buf())
}

/// Writes the loss curve, samples, their picture and the training metrics.
fn finish(config: &RunConfig, run_dir: &Path, summary: &TrainSummary) -> Result<()> {
    let mut csv = String::from("step,loss\n");
    for point in &summary.loss_curve {
        csv.push_str(&format!("{},{}\n", point.step, point.loss));
    }
    write_atomic(&run_dir.join("loss.csv"), csv.as_bytes())?;
    let flow = TrainedFlow::from_config(config.clone(), run_dir)?;
    let started = Instant::now();
    let x0 = flow.source_points(config.sample.n_samples, 0);
    let solution = flow.integrate(x0, &config.sample.ode_options(), None)?;
    let sample_seconds = started.elapsed().as_secs_f64();
    let samples = to_array(&solution.state);
    write_npy(&run_dir.join("samples.npy"), samples.view())?;
    if matches!(config.data.target, crate::data::Dataset::FashionMnist { .. }) {
        let shown = solution
            .state
            .narrow(0, 0, solution.state.size()[0].min(100))
            .view([-1, 1, 28, 28]);
        crate::images::image_grid_png(&run_dir.join("samples.png"), &shown, 10)?;
    } else if config.data.target.dim() >= 2 {
        let reference = reference_samples(config, samples.nrows());
        let title = format!(
            "{} -> {} ({} steps)",
            config.data.source.name(),
            config.data.target.name(),
            summary.total_steps
        );
        crate::plot::samples_png(
            &run_dir.join("samples.png"),
            &title,
            samples.view(),
            reference.view(),
        )?;
    }
    let mut metrics = Map::new();
    metrics.insert("train_steps".into(), json!(summary.total_steps));
    metrics.insert("train_seconds".into(), json!(summary.seconds));
    metrics.insert("train_steps_per_second".into(), json!(summary.steps_per_second()));
    metrics.insert(
        "final_loss".into(),
        json!(summary.loss_curve.last().map(|p| p.loss)),
    );
    metrics.insert("sample_seconds".into(), json!(sample_seconds));
    metrics.insert("sample_field_evals".into(), json!(solution.stats.field_evals));
    update_metrics(run_dir, metrics)
}

/// Fresh samples of the target from the evaluation stream (never seen in training).
pub fn reference_samples(config: &RunConfig, n_samples: usize) -> ndarray::Array2<f32> {
    let mut rng = rng_for(config.run.seed, stream::EVAL_TARGET);
    let points = config.data.target.sample(n_samples, &mut rng);
    ndarray::Array2::from_shape_vec((n_samples, config.data.target.dim()), points).expect("n x dim points")
}

/// The exact 2-Wasserstein distance between two equal-size samples: sqrt(min over permutations of the mean
/// squared distance), by the exact assignment solver.
pub fn wasserstein2(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Result<f64> {
    let a = a.mapv(f64::from);
    let b = b.mapv(f64::from);
    let cost = squared_euclidean(a.view(), b.view())?;
    let assignment = Jv::default().solve(cost.view())?;
    Ok((assignment.total_cost / a.nrows() as f64).sqrt())
}

/// Samples `sample.w2_samples` points from the run and measures W2 against as many fresh target samples.
pub fn evaluate(run_dir: &Path) -> Result<Map<String, Value>> {
    let flow = TrainedFlow::load(run_dir)?;
    let config = flow.config.clone();
    let n = config.sample.w2_samples;
    let started = Instant::now();
    let x0 = flow.source_points(n, 1);
    let solution = flow.integrate(x0, &config.sample.ode_options(), None)?;
    let generated = to_array(&solution.state);
    let reference = reference_samples(&config, n);
    let w2 = wasserstein2(generated.view(), reference.view())?;
    let mut metrics = Map::new();
    metrics.insert("w2".into(), json!(w2));
    metrics.insert("w2_samples".into(), json!(n));
    metrics.insert(
        "eval_solver".into(),
        json!(format!("{:?}", config.sample.solver).to_lowercase()),
    );
    metrics.insert("eval_seconds".into(), json!(started.elapsed().as_secs_f64()));
    update_metrics(run_dir, metrics.clone())?;
    Ok(metrics)
}
