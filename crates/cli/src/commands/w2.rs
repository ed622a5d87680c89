//! `ferroflow w2`: the exact 2-Wasserstein distance between two equal-size point sets.

use std::path::PathBuf;

use anyhow::{Result, bail};
use ferroflow_engine::files::read_npy;

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
    let xa = read_npy(&args.a)?;
    let xb = read_npy(&args.b)?;
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
