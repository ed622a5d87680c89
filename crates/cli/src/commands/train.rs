//! `ferroflow train`: trains a config into `runs/NAME` (or continues a run with `--resume`), then draws the
//! samples' picture.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferroflow_engine::RunConfig;
use ferroflow_engine::metrics::RunMetrics;

use crate::progress::Progress;

/// Arguments of `ferroflow train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The run config (TOML).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    pub config: Option<PathBuf>,
    /// Override `run.name`.
    #[arg(long)]
    pub name: Option<String>,
    /// Override `train.steps`.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Continue the run in this folder from its last checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `ferroflow train`.
pub fn run(args: &TrainArgs) -> Result<()> {
    let mut progress = Progress::auto();
    let mut observers: Vec<&mut dyn ferroflow_engine::train::Observer<ferroflow_engine::train::FlowModel>> =
        Vec::new();
    if !args.quiet {
        observers.push(&mut progress);
    }
    let run_dir = match (&args.resume, &args.config) {
        (Some(dir), _) => ferroflow_engine::run::resume(dir, args.steps, &mut observers)?,
        (None, Some(path)) => {
            let mut config = RunConfig::load(path)?;
            if let Some(name) = &args.name {
                config.run.name = name.clone();
            }
            if let Some(steps) = args.steps {
                config.train.steps = steps;
            }
            config
                .validate()
                .with_context(|| format!("{} with the command-line overrides", path.display()))?;
            ferroflow_engine::run::train_new(&config, &mut observers)?
        }
        (None, None) => unreachable!("clap requires --config without --resume"),
    };
    ferroflow_report::write_samples_picture(&run_dir)?;
    let metrics = RunMetrics::read(&run_dir)?;
    println!(
        "trained {} in {:.1} s ({:.2} steps/s), final loss {:.4}; results in {}",
        metrics.train_steps.unwrap_or(0),
        metrics.train_seconds.unwrap_or(0.0),
        metrics.train_steps_per_second.unwrap_or(0.0),
        metrics.final_loss.unwrap_or(f64::NAN),
        run_dir.display()
    );
    Ok(())
}
