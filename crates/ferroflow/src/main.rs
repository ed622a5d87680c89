//! The `ferroflow` command-line program: train, evaluate and sample flows; OT and W2 between point sets.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ferroflow::RunConfig;
use ferroflow::files::{read_npy, write_npy};
use ferroflow::progress::Progress;
use ferroflow::sample::{TrainedFlow, to_array};
use ferroflow_solvers::OdeOptions;

#[derive(Parser)]
#[command(
    name = "ferroflow",
    version,
    about = "Flow matching in Rust: train, sample, evaluate."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a flow from a config into runs/NAME (or continue a run with --resume).
    Train {
        /// The run config (TOML).
        #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
        config: Option<PathBuf>,
        /// Override `run.name`.
        #[arg(long)]
        name: Option<String>,
        /// Override `train.steps`.
        #[arg(long)]
        steps: Option<usize>,
        /// Continue the run in this folder from its last checkpoint.
        #[arg(long)]
        resume: Option<PathBuf>,
        /// No progress output.
        #[arg(long)]
        quiet: bool,
    },
    /// Measure a finished run: the exact 2-Wasserstein distance to fresh target samples.
    Eval {
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
    },
    /// Draw samples from a trained run.
    Sample {
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
        /// Number of samples.
        #[arg(long, default_value_t = 10_000)]
        n: usize,
        /// Output .npy file ([n, dim] float32).
        #[arg(long)]
        out: PathBuf,
        /// ODE method (euler, midpoint, heun, rk4, bosh3, dopri5); default: the run's.
        #[arg(long)]
        solver: Option<String>,
        /// Steps of a fixed-step method.
        #[arg(long)]
        steps: Option<usize>,
        /// Absolute tolerance of an adaptive method.
        #[arg(long)]
        atol: Option<f64>,
        /// Relative tolerance of an adaptive method.
        #[arg(long)]
        rtol: Option<f64>,
        /// Also write the trajectory at this many equally spaced times to OUT with `.trajectory.npy`
        /// ([times, n, dim] flattened to [times * n, dim]).
        #[arg(long)]
        trajectory: Option<usize>,
        /// Mode-seeking and classifier-free guidance.
        #[command(flatten)]
        guidance: ferroflow::guided::GuidanceArgs,
    },
    /// Exact (or entropic) optimal transport between two point sets with squared-Euclidean cost.
    Ot {
        /// Source points (.npy, [n, d]).
        #[arg(long)]
        x0: PathBuf,
        /// Target points (.npy, [m, d], m >= n).
        #[arg(long)]
        x1: PathBuf,
        /// hungarian or fast.
        #[arg(long, default_value = "fast")]
        solver: String,
        /// Write the permutation (int64 .npy) here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Log-likelihood of points under a trained run (exact or Hutchinson divergence), and bits/dim.
    Likelihood(ferroflow::likelihood::LikelihoodArgs),
    /// Measure a Fashion-MNIST run with the project's classifier: Frechet distance (a stand-in for FID),
    /// class accuracy and confidence over guidance sweeps, bits/dim of test images.
    ImageEval(ferroflow::image_eval::ImageEvalArgs),
    /// Timings of the hot paths against the peers' figures (`bench likelihood`).
    Bench(ferroflow::bench::BenchArgs),
    /// The 2D benchmark of Tong et al. 2023 over configs/bench2d: W2 and NPE per method and task.
    Bench2d(ferroflow::bench2d::Bench2dArgs),
    /// The exact 2-Wasserstein distance between two equal-size point sets.
    W2 {
        /// First set (.npy).
        #[arg(long)]
        a: PathBuf,
        /// Second set (.npy).
        #[arg(long)]
        b: PathBuf,
    },
}

fn main() {
    if let Err(err) = run(Cli::parse()) {
        eprintln!("ferroflow: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train {
            config,
            name,
            steps,
            resume,
            quiet,
        } => {
            let mut progress = if quiet { Progress::Silent } else { Progress::auto() };
            let run_dir = if let Some(dir) = resume {
                ferroflow::run::resume(&dir, steps, &mut progress)?
            } else {
                let path = config.expect("clap requires --config without --resume");
                let mut config = RunConfig::load(&path)?;
                if let Some(name) = name {
                    config.run.name = name;
                }
                if let Some(steps) = steps {
                    config.train.steps = steps;
                }
                config
                    .validate()
                    .with_context(|| format!("{} with the command-line overrides", path.display()))?;
                ferroflow::run::train_new(&config, &mut progress)?
            };
            let metrics = ferroflow::files::read_metrics(&run_dir)?;
            println!(
                "trained {} in {:.1} s ({:.2} steps/s), final loss {:.4}; results in {}",
                metrics.get("train_steps").and_then(|v| v.as_u64()).unwrap_or(0),
                metrics
                    .get("train_seconds")
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.0),
                metrics
                    .get("train_steps_per_second")
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.0),
                metrics
                    .get("final_loss")
                    .and_then(|v| v.as_f64())
                    .unwrap_or(f64::NAN),
                run_dir.display()
            );
            Ok(())
        }
        Command::Eval { run } => {
            let metrics = ferroflow::run::evaluate(&run)?;
            let written = ferroflow::report::write_report(&run)?;
            for path in &written {
                println!("wrote {}", path.display());
            }
            println!(
                "{}: W2 = {:.4} on {} samples ({:.1} s); written to {}",
                run.display(),
                metrics["w2"].as_f64().unwrap_or(f64::NAN),
                metrics["w2_samples"],
                metrics["eval_seconds"].as_f64().unwrap_or(0.0),
                run.join("metrics.json").display()
            );
            Ok(())
        }
        Command::Sample {
            run,
            n,
            out,
            solver,
            steps,
            atol,
            rtol,
            trajectory,
            guidance,
        } => {
            if n == 0 {
                bail!("--n must be at least 1");
            }
            let guidance = guidance.settings()?;
            let flow = TrainedFlow::load(&run)?;
            let mut sample = flow.config.sample.clone();
            if let Some(name) = solver {
                sample.solver = ferroflow::likelihood::parse_method(&name)?;
            }
            sample.steps = steps.unwrap_or(sample.steps);
            sample.atol = atol.unwrap_or(sample.atol);
            sample.rtol = rtol.unwrap_or(sample.rtol);
            let mut config = flow.config.clone();
            config.sample = sample;
            config.validate().context("sampling options")?;
            let options: OdeOptions = config.sample.ode_options();
            let times: Option<Vec<f64>> =
                trajectory.map(|k| (0..k.max(2)).map(|i| i as f64 / (k.max(2) - 1) as f64).collect());
            let started = Instant::now();
            let solution = ferroflow::guided::sample_guided(
                &flow,
                flow.source_points(n, 2),
                &options,
                times.as_deref(),
                &guidance,
            )?;
            write_npy(&out, to_array(&solution.state).view())?;
            if !solution.trajectory.is_empty() {
                let stacked = tch::Tensor::cat(&solution.trajectory, 0);
                let traj_path = out.with_extension("trajectory.npy");
                write_npy(&traj_path, to_array(&stacked).view())?;
                println!(
                    "trajectory ({} times) written to {}",
                    solution.trajectory.len(),
                    traj_path.display()
                );
            }
            println!(
                "{n} samples written to {} in {:.2} s ({} steps, {} field evaluations)",
                out.display(),
                started.elapsed().as_secs_f64(),
                solution.stats.steps,
                solution.stats.field_evals
            );
            Ok(())
        }
        Command::Ot { x0, x1, solver, out } => {
            let a = read_npy(&x0)?.mapv(f64::from);
            let b = read_npy(&x1)?.mapv(f64::from);
            if a.ncols() != b.ncols() {
                bail!(
                    "{} has {} columns but {} has {}",
                    x0.display(),
                    a.ncols(),
                    x1.display(),
                    b.ncols()
                );
            }
            let solver: Box<dyn ferroflow_coupling::AssignmentSolver> = match solver.as_str() {
                "fast" | "jv" => Box::new(ferroflow_coupling::Jv::default()),
                "hungarian" => Box::new(ferroflow_coupling::Hungarian),
                other => bail!("unknown --solver {other:?}; allowed: fast, hungarian"),
            };
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
            if let Some(out) = out {
                let perm = ndarray::Array1::from_iter(assignment.row_to_col.iter().map(|&c| c as i64));
                let mut bytes = Vec::new();
                ndarray_npy::WriteNpyExt::write_npy(&perm, &mut bytes)?;
                ferroflow::files::write_atomic(&out, &bytes)?;
            }
            Ok(())
        }
        Command::Likelihood(args) => ferroflow::likelihood::run_cli(&args),
        Command::ImageEval(args) => ferroflow::image_eval::run_cli(&args),
        Command::Bench(args) => ferroflow::bench::run_cli(&args),
        Command::Bench2d(args) => ferroflow::bench2d::run(&args),
        Command::W2 { a, b } => {
            let xa = read_npy(&a)?;
            let xb = read_npy(&b)?;
            if xa.dim() != xb.dim() {
                bail!(
                    "{} has shape {:?} but {} has {:?}; W2 needs equal sizes",
                    a.display(),
                    xa.dim(),
                    b.display(),
                    xb.dim()
                );
            }
            println!("{:.6}", ferroflow::run::wasserstein2(xa.view(), xb.view())?);
            Ok(())
        }
    }
}
