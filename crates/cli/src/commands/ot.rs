//! `ferroflow ot`: exact optimal transport between two point sets with squared-Euclidean cost, by the
//! coupling crate's assignment solvers.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use ferroflow_coupling::SolverKind;
use ferroflow_engine::files::{read_points, write_atomic};

/// Arguments of `ferroflow ot`.
#[derive(Debug, clap::Args)]
pub struct OtArgs {
    /// Source points (.npy, [n, d]).
    #[arg(long)]
    pub x0: PathBuf,
    /// Target points (.npy, [m, d], m >= n).
    #[arg(long)]
    pub x1: PathBuf,
    /// hungarian, or fast (jv, the default).
    #[arg(long, default_value = "fast", value_parser = parse_solver)]
    pub solver: SolverKind,
    /// Write the permutation (int64 .npy) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The coupling crate's solver named on the command line (`fast` is kept as the name of `jv`).
fn parse_solver(name: &str) -> Result<SolverKind> {
    match name {
        "fast" | "jv" => Ok(SolverKind::Jv),
        "hungarian" => Ok(SolverKind::Hungarian),
        other => bail!("unknown --solver {other:?}; allowed: fast (jv), hungarian"),
    }
}

/// Runs `ferroflow ot`.
pub fn run(args: &OtArgs) -> Result<()> {
    // The mean cost of no points is not a number; both sets need at least one point.
    let a = read_points(&args.x0)?.mapv(f64::from);
    let b = read_points(&args.x1)?.mapv(f64::from);
    if a.ncols() != b.ncols() {
        bail!(
            "{} has {} columns but {} has {}",
            args.x0.display(),
            a.ncols(),
            args.x1.display(),
            b.ncols()
        );
    }
    let solver = args.solver.build();
    let started = Instant::now();
    let cost = ferroflow_coupling::squared_euclidean(a.view(), b.view())?;
    let assignment = solver.solve(cost.view())?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "total cost {:.6} (mean {:.6}) by {} in {:.2} ms",
        assignment.total_cost,
        assignment.total_cost / a.nrows() as f64,
        solver.name(),
        seconds * 1e3
    );
    if let Some(out) = &args.out {
        let perm = ndarray::Array1::from_iter(assignment.row_to_col.iter().map(|&c| c as i64));
        let mut bytes = Vec::new();
        ndarray_npy::WriteNpyExt::write_npy(&perm, &mut bytes)?;
        write_atomic(out, &bytes)?;
    }
    Ok(())
}
