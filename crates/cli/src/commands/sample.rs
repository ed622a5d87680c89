//! `ferroflow sample`: draws samples from a trained run with any ODE method and optional guidance.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use ferroflow_engine::config::check_sample_count;
use ferroflow_engine::files::write_npy;
use ferroflow_engine::guided::sample_guided;
use ferroflow_engine::sample::{TrainedFlow, to_array};
use ferroflow_engine::stream::Stream;

use crate::flags::{GuidanceArgs, OdeArgs};

/// Arguments of `ferroflow sample`.
#[derive(Debug, clap::Args)]
pub struct SampleArgs {
    /// The run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Number of samples.
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// Output .npy file ([n, dim] float32).
    #[arg(long)]
    pub out: PathBuf,
    /// ODE options (default: the run's sampling options).
    #[command(flatten)]
    pub ode: OdeArgs,
    /// Also write the trajectory at this many equally spaced times to OUT with `.trajectory.npy`
    /// ([times, n, dim] flattened to [times * n, dim]).
    #[arg(long)]
    pub trajectory: Option<usize>,
    /// Mode-seeking and classifier-free guidance.
    #[command(flatten)]
    pub guidance: GuidanceArgs,
}

/// Runs `ferroflow sample`.
pub fn run(args: &SampleArgs) -> Result<()> {
    let n = args.n;
    let guidance = args.guidance.settings()?;
    let flow = TrainedFlow::load(&args.run)?;
    check_sample_count("--n", n, flow.dim())?;
    if let Some(k) = args.trajectory {
        if k < 2 {
            bail!("--trajectory {k}: a trajectory needs at least 2 times (the start and the end)");
        }
        // The trajectory holds k states of n points.
        check_sample_count("--trajectory x --n", k.saturating_mul(n), flow.dim())?;
    }
    let options = args.ode.apply(&mut flow.config.clone())?;
    let times: Option<Vec<f64>> = args
        .trajectory
        .map(|k| (0..k).map(|i| i as f64 / (k - 1) as f64).collect());
    let started = Instant::now();
    let solution = sample_guided(
        &flow,
        flow.source_points(n, Stream::Sample),
        &options,
        times.as_deref(),
        &guidance,
    )?;
    write_npy(&args.out, to_array(&solution.state).view())?;
    if !solution.trajectory.is_empty() {
        let stacked = tch::Tensor::cat(&solution.trajectory, 0);
        let traj_path = args.out.with_extension("trajectory.npy");
        write_npy(&traj_path, to_array(&stacked).view())?;
        println!(
            "trajectory ({} times) written to {}",
            solution.trajectory.len(),
            traj_path.display()
        );
    }
    println!(
        "{n} samples written to {} in {:.2} s ({} steps, {} field evaluations)",
        args.out.display(),
        started.elapsed().as_secs_f64(),
        solution.stats.steps,
        solution.stats.field_evals
    );
    Ok(())
}
