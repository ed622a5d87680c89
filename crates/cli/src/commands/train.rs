//! `ferroflow train`: trains a config into `runs/NAME` (or continues a run with `--resume`), then draws the
//! samples' picture.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use ferroflow_distributed::BackendChoice;
use ferroflow_engine::discrete::DiscreteModel;
use ferroflow_engine::distributed::Launch;
use ferroflow_engine::metrics::RunMetrics;
use ferroflow_engine::train::{FlowModel, Observer};
use ferroflow_engine::{RunConfig, TrainError};

use crate::progress::{Notes, Progress};

/// Arguments of `ferroflow train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The run config (TOML).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    pub config: Option<PathBuf>,
    /// Override `run.name` (a resumed run keeps its folder's name).
    #[arg(long, conflicts_with = "resume")]
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
    /// Collectives of a data-parallel job: `auto` (MPI when started by mpirun or srun, else one process),
    /// `single`, `mpi`, or `nccl` (CUDA tensors on NCCL; needs a build with the `nccl` feature and a GPU per
    /// rank). `train.batch_size` stays the global batch; each rank trains its slice.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    pub backend: BackendChoice,
    /// After every step, check that every rank holds bit-identical weights, Adam moments and EMA (a
    /// checksum all-gathered), and stop naming the ranks if not.
    #[arg(long)]
    pub check_replicas: bool,
}

fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    s.parse()
}

/// A training stopped by Ctrl-C or SIGTERM after checkpointing its current step; the program exits with
/// status 130.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted at step {step}; the checkpoint of that step is saved. Continue with:\n  ferroflow train --resume {}",
    dir.display()
)]
pub struct Interrupted {
    /// The run folder.
    pub dir: PathBuf,
    /// The step checkpointed.
    pub step: usize,
}

/// Raises the returned flag on the first SIGINT or SIGTERM (the training loop then checkpoints and stops);
/// a second one ends the process at once with status 130.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .context("cannot install the signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install the signal handler")?;
    }
    Ok(stop)
}

/// Turns the engine's interruption into [`Interrupted`] naming the folder to resume.
fn name_interruption(err: anyhow::Error, dir: &Path) -> anyhow::Error {
    match err.chain().find_map(|e| e.downcast_ref::<TrainError>()) {
        Some(TrainError::Interrupted { step }) => Interrupted {
            dir: dir.to_path_buf(),
            step: *step,
        }
        .into(),
        _ => err,
    }
}

/// Runs `ferroflow train`: in one process, or as one rank of a job started by `mpirun` or `srun`, where
/// rank 0 alone shows progress, writes the folder and draws the picture, and an error names its rank.
pub fn run(args: &TrainArgs) -> Result<()> {
    let comm = ferroflow_distributed::init(args.backend).context("--backend")?;
    let launch = Launch {
        comm: &*comm,
        check_replicas: args.check_replicas,
    };
    if comm.world_size() == 1 {
        return train_here(args, &launch);
    }
    let (rank, world) = (comm.rank(), comm.world_size());
    let result = train_here(args, &launch)
        .with_context(|| format!("rank {rank} of {world} ({} backend)", comm.backend()));
    match &result {
        // Every rank agreed to stop at the same step: finish MPI normally (exit status 130).
        Err(err) if err.chain().any(|e| e.is::<Interrupted>()) => {}
        // A rank that fails alone (its checkpoint cannot be written, ...) must not wait in MPI_Finalize for
        // ranks blocked in the next all-reduce: it says why and ends the whole job at once.
        Err(err) => {
            eprintln!("ferroflow: error: {err:#}");
            comm.abort(1)
        }
        Ok(()) => {}
    }
    result
}

/// Whether the folder to resume holds a discrete run: rank 0 reads its config, the others are told.
fn resumes_discrete(dir: &Path, launch: &Launch<'_>) -> Result<bool> {
    let local = if launch.is_root() {
        ferroflow_engine::run::is_discrete_run(dir)
    } else {
        Ok(false)
    };
    let local = ferroflow_engine::distributed::agree_any(launch.comm, local)??;
    let mut flag = vec![u8::from(local)];
    launch.comm.broadcast_bytes(&mut flag, 0)?;
    Ok(flag == [1])
}

fn train_here(args: &TrainArgs, launch: &Launch<'_>) -> Result<()> {
    let stop = stop_on_signals()?;
    let root = launch.is_root();
    let quiet = args.quiet || !root;
    let mut progress = Progress::auto();
    let mut notes = Notes;
    let mut discrete = false;
    let run_dir = match (&args.resume, &args.config) {
        (Some(dir), _) if resumes_discrete(dir, launch)? => {
            discrete = true;
            let mut observers: Vec<&mut dyn Observer<DiscreteModel>> = Vec::new();
            if root {
                observers.push(&mut notes);
            }
            if !quiet {
                observers.push(&mut progress);
            }
            ferroflow_engine::run::resume_discrete_on(dir, args.steps, launch, &mut observers, Some(&stop))
                .map_err(|e| name_interruption(e, dir))?
        }
        (Some(dir), _) => {
            let mut observers: Vec<&mut dyn Observer<FlowModel>> = Vec::new();
            if root {
                observers.push(&mut notes);
            }
            if !quiet {
                observers.push(&mut progress);
            }
            ferroflow_engine::run::resume_on(dir, args.steps, launch, &mut observers, Some(&stop))
                .map_err(|e| name_interruption(e, dir))?
        }
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
            if let Some(note) = ferroflow_engine::train::resolve_device(&config.run.device)
                .ok()
                .and_then(|device| ferroflow_engine::train::device_note(&config.run.device, device))
                .filter(|_| root)
            {
                eprintln!("{note}");
            }
            let dir = Path::new(&config.run.out_dir).join(&config.run.name);
            if config.data.target.is_tokens() {
                // A discrete run: the same observers, watching a token network.
                discrete = true;
                let mut observers: Vec<&mut dyn Observer<DiscreteModel>> = Vec::new();
                if root {
                    observers.push(&mut notes);
                }
                if !quiet {
                    observers.push(&mut progress);
                }
                ferroflow_engine::run::train_new_discrete_on(&config, launch, &mut observers, Some(&stop))
                    .map_err(|e| name_interruption(e, &dir))?
            } else {
                let mut observers: Vec<&mut dyn Observer<FlowModel>> = Vec::new();
                if root {
                    observers.push(&mut notes);
                }
                if !quiet {
                    observers.push(&mut progress);
                }
                ferroflow_engine::run::train_new_on(&config, launch, &mut observers, Some(&stop))
                    .map_err(|e| name_interruption(e, &dir))?
            }
        }
        (None, None) => unreachable!("clap requires --config without --resume"),
    };
    if !root {
        return Ok(());
    }
    if discrete {
        // A discrete run's report is cheap (bin histograms, or the words listed): write it whole.
        ferroflow_report::write_report(&run_dir)?;
    } else {
        ferroflow_report::write_samples_picture(&run_dir)?;
    }
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
