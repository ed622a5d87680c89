//! Whole runs: train a config into a new run folder (or resume one), then write its loss curve, samples and
//! metrics; evaluate a finished run against fresh target samples.
//!
//! Pictures are not drawn here (the engine does not know plotters): the report crate draws a run's pictures
//! from the files this module writes, and the program calls it after training.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use ndarray::{Array2, ArrayView2};

use crate::config::RunConfig;
use crate::files::{create_run_dir, write_atomic, write_npy};
use crate::metrics::RunMetrics;
use crate::sample::{TrainedFlow, reference_samples, to_array};
use crate::stream::Stream;
use crate::train::{FlowModel, Observer, TrainSummary, train};

/// The file holding the samples drawn after training (`[n_samples, dim]` float32).
pub const SAMPLES_FILE: &str = "samples.npy";
/// The file holding the loss curve (`step,loss` rows).
pub const LOSS_FILE: &str = "loss.csv";
/// The file holding the resolved config.
pub const CONFIG_FILE: &str = "config.toml";

/// Trains `config` into a new folder `out_dir/name` and finishes it (loss curve, samples, metrics).
/// `observers` watch the training loop (progress display, ...) besides the engine's own.
pub fn train_new(config: &RunConfig, observers: &mut [&mut dyn Observer<FlowModel>]) -> Result<PathBuf> {
    let run_dir = create_run_dir(Path::new(&config.run.out_dir), &config.run.name)?;
    write_atomic(&run_dir.join(CONFIG_FILE), config.to_toml().as_bytes())?;
    let summary = train(config, &run_dir, false, observers)?;
    finish(config, &run_dir, &summary)?;
    Ok(run_dir)
}

/// Continues the run in `run_dir` from its last checkpoint to `config.train.steps`, or to `steps` when
/// given (the run's `config.toml` is then updated to say so).
pub fn resume(
    run_dir: &Path,
    steps: Option<usize>,
    observers: &mut [&mut dyn Observer<FlowModel>],
) -> Result<PathBuf> {
    let config_path = run_dir.join(CONFIG_FILE);
    let mut config = RunConfig::load(&config_path)?;
    if let Some(steps) = steps {
        config.train.steps = steps;
        config.validate().context("--steps")?;
        write_atomic(&config_path, config.to_toml().as_bytes())?;
    }
    let summary = train(&config, run_dir, true, observers)
        .with_context(|| format!("cannot resume {}", run_dir.display()))?;
    finish(&config, run_dir, &summary)?;
    Ok(run_dir.to_path_buf())
}

/// Writes the loss curve, the samples and the training metrics.
fn finish(config: &RunConfig, run_dir: &Path, summary: &TrainSummary) -> Result<()> {
    let mut csv = String::from("step,loss\n");
    for point in &summary.loss_curve {
        csv.push_str(&format!("{},{}\n", point.step, point.loss));
    }
    write_atomic(&run_dir.join(LOSS_FILE), csv.as_bytes())?;
    let flow = TrainedFlow::from_config(config.clone(), run_dir)?;
    let started = Instant::now();
    let x0 = flow.source_points(config.sample.n_samples, Stream::TrainSamples);
    let solution = flow.integrate(x0, &config.sample.ode_options(), None)?;
    let sample_seconds = started.elapsed().as_secs_f64();
    write_npy(&run_dir.join(SAMPLES_FILE), to_array(&solution.state).view())?;
    RunMetrics {
        train_steps: Some(summary.total_steps),
        train_seconds: Some(summary.seconds),
        train_steps_per_second: Some(summary.steps_per_second()),
        final_loss: summary.loss_curve.last().map(|p| p.loss),
        sample_seconds: Some(sample_seconds),
        sample_field_evals: Some(solution.stats.field_evals),
        ..RunMetrics::default()
    }
    .merge(run_dir)?;
    Ok(())
}

/// The exact 2-Wasserstein distance between two equal-size `f32` samples (the coupling crate's
/// [`ferroflow_coupling::w2`] on their `f64` copies).
pub fn w2_f32(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Result<f64> {
    let widen = |x: ArrayView2<f32>| -> Array2<f64> { x.mapv(f64::from) };
    Ok(ferroflow_coupling::w2(widen(a).view(), widen(b).view())?)
}

/// Samples `sample.w2_samples` points from the run (source points from [`Stream::EvalSource`]) and measures
/// W2 against as many fresh target samples ([`Stream::EvalTarget`]); merges the result into `metrics.json`.
pub fn evaluate(run_dir: &Path) -> Result<RunMetrics> {
    let flow = TrainedFlow::load(run_dir)?;
    let config = flow.config.clone();
    let n_samples = config.sample.w2_samples;
    let started = Instant::now();
    let x0 = flow.source_points(n_samples, Stream::EvalSource);
    let solution = flow.integrate(x0, &config.sample.ode_options(), None)?;
    let generated = to_array(&solution.state);
    let reference = reference_samples(&config, n_samples);
    let w2 = w2_f32(generated.view(), reference.view())?;
    RunMetrics {
        w2: Some(w2),
        w2_samples: Some(n_samples),
        eval_solver: Some(format!("{:?}", config.sample.solver).to_lowercase()),
        eval_seconds: Some(started.elapsed().as_secs_f64()),
        ..RunMetrics::default()
    }
    .merge(run_dir)
}
