//! `ferroflow eval`: the exact W2 of a finished run against fresh target samples, then its report.

use std::path::PathBuf;

use anyhow::Result;
use ferroflow_engine::metrics::METRICS_FILE;

/// Arguments of `ferroflow eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The run folder.
    #[arg(long)]
    pub run: PathBuf,
}

/// Runs `ferroflow eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    let metrics = ferroflow_engine::run::evaluate(&args.run)?;
    for path in ferroflow_report::write_report(&args.run)? {
        println!("wrote {}", path.display());
    }
    println!(
        "{}: W2 = {:.4} on {} samples ({:.1} s); written to {}",
        args.run.display(),
        metrics.w2.unwrap_or(f64::NAN),
        metrics.w2_samples.unwrap_or(0),
        metrics.eval_seconds.unwrap_or(0.0),
        args.run.join(METRICS_FILE).display()
    );
    Ok(())
}
