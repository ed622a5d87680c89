//! `ferroflow image-eval`: a Fashion-MNIST run measured with the project's classifier over guidance sweeps.

use std::path::PathBuf;

use anyhow::Result;
use ferroflow_experiments::image_eval::{ImageEvalSettings, evaluate, render};
use ferroflow_models::DivergenceEstimator;

use crate::flags::{OdeArgs, parse_estimator, parse_normalize, parse_schedule};

/// Arguments of `ferroflow image-eval`.
#[derive(Clone, Debug, clap::Args)]
pub struct ImageEvalArgs {
    /// The run folder (a Fashion-MNIST run).
    #[arg(long)]
    pub run: PathBuf,
    /// The classifier's parameters, as written by `cargo xtask train-classifier`.
    #[arg(long, default_value = "runs/classifier/classifier.safetensors")]
    pub classifier: PathBuf,
    /// Samples per setting (for a conditional run, n / 10 of each class, rounded up).
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// Classifier-free guidance weights to sweep, comma-separated (class-conditional runs; default 0).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub cfg: Vec<f64>,
    /// Mode-seeking strengths to sweep, comma-separated (default 0: no mode seeking).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub lambda: Vec<f64>,
    /// Divergence-gradient estimator of mode seeking (exact needs 784 backward passes per evaluation).
    #[arg(long, default_value = "hutchinson", value_parser = parse_estimator)]
    pub estimator: DivergenceEstimator,
    /// Probes of Hutchinson's estimator (mode seeking and bits/dim).
    #[arg(long, default_value_t = 1)]
    pub probes: usize,
    /// Mode-seeking normalisation: none, clip:SCALE or rescale:SCALE.
    #[arg(long)]
    pub normalize: Option<String>,
    /// Mode-seeking schedule: constant, window:T_START:T_END or decay:POWER.
    #[arg(long)]
    pub schedule: Option<String>,
    /// ODE options (default: the run's sampling options).
    #[command(flatten)]
    pub ode: OdeArgs,
    /// Test images whose bits/dim to measure (0: skip).
    #[arg(long, default_value_t = 0)]
    pub bpd_images: usize,
    /// Output folder (default RUN/image-eval).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl ImageEvalArgs {
    /// The experiment's settings; a bad schedule, normalisation or solver name is refused with its flag.
    pub fn settings(&self) -> Result<ImageEvalSettings> {
        Ok(ImageEvalSettings {
            run: self.run.clone(),
            classifier: self.classifier.clone(),
            n: self.n,
            cfg: self.cfg.clone(),
            lambda: self.lambda.clone(),
            estimator: match self.estimator {
                DivergenceEstimator::Exact => DivergenceEstimator::Exact,
                DivergenceEstimator::Hutchinson { distribution, .. } => DivergenceEstimator::Hutchinson {
                    probes: self.probes,
                    distribution,
                },
            },
            normalize: parse_normalize(self.normalize.as_deref().unwrap_or("none"))?,
            schedule: parse_schedule(self.schedule.as_deref().unwrap_or("constant"))?,
            ode: self.ode.overrides(),
            bpd_images: self.bpd_images,
            out: self.out.clone(),
        })
    }
}

/// Runs `ferroflow image-eval` and prints its tables.
pub fn run(args: &ImageEvalArgs) -> Result<()> {
    let result = evaluate(&args.settings()?)?;
    println!("{}", render(&result));
    Ok(())
}
