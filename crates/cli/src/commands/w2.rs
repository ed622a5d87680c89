//! `ferroflow w2`: the exact 2-Wasserstein distance between two equal-size point sets.

use std::path::PathBuf;

use anyhow::{Result, bail};
use ferroflow_engine::files::read_points;

/// Arguments of `ferroflow w2`.
#[derive(Debug, clap::Args)]
pub struct W2Args {
    /// First set (.npy).
    #[arg(long)]
    pub a: PathBuf,
    /// Second set (.npy).
    #[arg(long)]
    pub b: PathBuf,
}

/// Runs `ferroflow w2`.
pub fn run(args: &W2Args) -> Result<()> {
    // W2 between empty sets is not a number; both sets need at least one point.
    let xa = read_points(&args.a)?;
    let xb = read_points(&args.b)?;
    if xa.dim() != xb.dim() {
        bail!(
            "{} has shape {:?} but {} has {:?}; W2 needs equal sizes",
            args.a.display(),
            xa.dim(),
            args.b.display(),
            xb.dim()
        );
    }
    println!("{:.6}", ferroflow_engine::run::w2_f32(xa.view(), xb.view())?);
    Ok(())
}
