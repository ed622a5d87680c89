//! `ferroflow bench likelihood | train | guidance | riemannian | discrete | distributed`: the flags of each benchmark, handed to the experiments
//! crate as plain settings.

use anyhow::{Context, Result};
use ferroflow_experiments::bench::discrete::DiscreteBenchSettings;
use ferroflow_experiments::bench::distributed::DistributedBenchSettings;
use ferroflow_experiments::bench::guidance::GuidanceBenchSettings;
use ferroflow_experiments::bench::riemannian::RiemannianBenchSettings;
use ferroflow_experiments::bench::train::TrainBenchSettings;
use ferroflow_experiments::bench::{LikelihoodBenchSettings, likelihood_bench};
use std::path::PathBuf;

use crate::progress::Progress;

/// Arguments of `ferroflow bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub which: BenchKind,
}

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchKind {
    /// Log-likelihood (exact and Hutchinson) and sampling of a trained 2D flow; Hutchinson at D = 784.
    Likelihood(LikelihoodBenchArgs),
    /// Training steps/s of I-CFM and OT-CFM in torchcfm's 2D setting.
    Train(TrainBenchArgs),
    /// Cost of a guided sampling step (plain, Hutchinson, exact) against D; `--study DIR` reruns the
    /// guidance effect study.
    Guidance(GuidanceBenchArgs),
    /// The Riemannian configs trained and measured, side by side with flow_matching's Riemannian flow
    /// matching when `--peer-python` is given (`cargo xtask bench riemannian --peers`).
    Riemannian(RiemannianBenchArgs),
    /// A discrete run (checkerboard tokens) trained and measured, side by side with flow_matching's discrete
    /// flow matching when `--peer-python` is given (`cargo xtask bench discrete --peers`).
    Discrete(DiscreteBenchArgs),
    /// Training steps/s of 1 process against 2 MPI ranks (2D MLP and Fashion-MNIST U-Net), with the time
    /// spent in the all-reduce and the scaling efficiency.
    Distributed(DistributedBenchArgs),
}

/// Arguments of `ferroflow bench distributed`.
#[derive(Debug, clap::Args)]
pub struct DistributedBenchArgs {
    /// The 2D config (its MLP is timed).
    #[arg(long, default_value = "configs/default.toml")]
    pub mlp_config: PathBuf,
    /// Steps of each 2D launch.
    #[arg(long, default_value_t = 3000)]
    pub mlp_steps: usize,
    /// The Fashion-MNIST config (its U-Net is timed); `none` skips it.
    #[arg(long, default_value = "configs/fashion-mnist.toml")]
    pub unet_config: PathBuf,
    /// Steps of each U-Net launch.
    #[arg(long, default_value_t = 40)]
    pub unet_steps: usize,
    /// Launches per (model, layout); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Where the launches' runs go (replaced).
    #[arg(long, default_value = "bench-out/distributed")]
    pub out_dir: PathBuf,
    /// Arguments for mpirun (space-separated), e.g. "--allow-run-as-root --oversubscribe" when running as
    /// root.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub mpirun_args: String,
    /// Internal: run one launch's training and print its figures (started by the benchmark itself).
    #[arg(long, hide = true)]
    pub worker: bool,
    /// Internal (worker): the config.
    #[arg(long, hide = true)]
    pub worker_config: Option<PathBuf>,
    /// Internal (worker): steps.
    #[arg(long, hide = true, default_value_t = 0)]
    pub worker_steps: usize,
    /// Internal (worker): libtorch threads.
    #[arg(long, hide = true, default_value_t = 1)]
    pub worker_threads: usize,
    /// Internal (worker): the run's name.
    #[arg(long, hide = true, default_value = "worker")]
    pub worker_name: String,
}

impl DistributedBenchArgs {
    fn run(&self) -> Result<()> {
        if self.worker {
            let comm = ferroflow_distributed::init(ferroflow_distributed::BackendChoice::Auto)?;
            let config = self
                .worker_config
                .as_ref()
                .context("--worker needs --worker-config")?;
            return ferroflow_experiments::bench::distributed::worker(
                &*comm,
                config,
                self.worker_steps,
                self.worker_threads,
                &self.out_dir,
                &self.worker_name,
            );
        }
        let mut models = vec![("2D MLP".to_owned(), self.mlp_config.clone(), self.mlp_steps)];
        if self.unet_config.as_os_str() != "none" {
            models.push(("U-Net".to_owned(), self.unet_config.clone(), self.unet_steps));
        }
        let settings = DistributedBenchSettings {
            program: std::env::current_exe().context("cannot find this program")?,
            models,
            repeats: self.repeats,
            out_dir: self.out_dir.clone(),
            mpirun_args: self.mpirun_args.split_whitespace().map(str::to_owned).collect(),
        };
        let report = ferroflow_experiments::bench::distributed::run(&settings)?;
        println!("{report}");
        Ok(())
    }
}

/// Arguments of `ferroflow bench discrete`.
#[derive(Debug, clap::Args)]
pub struct DiscreteBenchArgs {
    /// The discrete config to run (a `tokens_2d` target and the token MLP).
    #[arg(long, default_value = "configs/discrete/checkerboard.toml")]
    pub config: PathBuf,
    /// Where the run, the peer's folder and the report are written (each replaced on every call).
    #[arg(long, default_value = "bench-out/discrete")]
    pub out_dir: PathBuf,
    /// Training steps instead of the config's.
    #[arg(long, default_value_t = 3000)]
    pub steps: usize,
    /// A Python with flow_matching (`.peers/python` from `cargo xtask setup --peers`): run it side by side.
    #[arg(long)]
    pub peer_python: Option<String>,
    /// The peer's torch threads (0: torch's default, as its users run it).
    #[arg(long, default_value_t = 0)]
    pub peer_threads: usize,
    /// Timed sampling runs of each program (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

impl DiscreteBenchArgs {
    /// The experiment's settings.
    pub fn settings(&self) -> DiscreteBenchSettings {
        DiscreteBenchSettings {
            config: self.config.clone(),
            out_dir: self.out_dir.clone(),
            steps: Some(self.steps),
            peer_python: self.peer_python.clone(),
            peer_threads: self.peer_threads,
            repeats: self.repeats,
        }
    }
}

/// Arguments of `ferroflow bench riemannian`.
#[derive(Debug, clap::Args)]
pub struct RiemannianBenchArgs {
    /// The configs to run (every `.toml` in this folder with `data.manifold`).
    #[arg(long, default_value = "configs/riemannian")]
    pub configs: PathBuf,
    /// Where the runs and the peer's folders are written (replaced on every call).
    #[arg(long, default_value = "bench-out/riemannian")]
    pub out_dir: PathBuf,
    /// Training steps instead of the configs'.
    #[arg(long)]
    pub steps: Option<usize>,
    /// A Python with flow_matching (`.peers/python` from `cargo xtask setup --peers`): run it side by side.
    #[arg(long)]
    pub peer_python: Option<String>,
    /// The peer's torch threads (0: torch's default, as its users run it).
    #[arg(long, default_value_t = 0)]
    pub peer_threads: usize,
    /// Timed sampling runs of ferroflow (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

impl RiemannianBenchArgs {
    /// The experiment's settings.
    pub fn settings(&self) -> RiemannianBenchSettings {
        RiemannianBenchSettings {
            configs: self.configs.clone(),
            out_dir: self.out_dir.clone(),
            steps: self.steps,
            peer_python: self.peer_python.clone(),
            peer_threads: self.peer_threads,
            repeats: self.repeats,
        }
    }
}

/// Arguments of `ferroflow bench likelihood`.
#[derive(Debug, clap::Args)]
pub struct LikelihoodBenchArgs {
    /// Where the benchmark's run folder is kept (reused when present).
    #[arg(long, default_value = "bench-out")]
    pub out_dir: PathBuf,
    /// Training steps of the 2D network.
    #[arg(long, default_value_t = 3000)]
    pub train_steps: usize,
    /// Points of the 2D timings.
    #[arg(long, default_value_t = 10_000)]
    pub n_points: usize,
    /// Timed runs per measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// libtorch thread settings to measure, comma-separated: a count, or 0 for ferroflow's choice by the
    /// work's size (beside which the peer runs at torch's default).
    #[arg(long, default_value = "1,0", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// A Python with flow_matching (`.peers/python` from `cargo xtask setup --peers`): run it side by side.
    #[arg(long)]
    pub peer_python: Option<String>,
}

impl LikelihoodBenchArgs {
    /// The experiment's settings.
    pub fn settings(&self) -> LikelihoodBenchSettings {
        LikelihoodBenchSettings {
            out_dir: self.out_dir.clone(),
            train_steps: self.train_steps,
            n_points: self.n_points,
            repeats: self.repeats,
            threads: self.threads.clone(),
            peer_python: self.peer_python.clone(),
        }
    }
}

/// Arguments of `ferroflow bench train`.
#[derive(Debug, clap::Args)]
pub struct TrainBenchArgs {
    /// Steps per timed run.
    #[arg(long, default_value_t = 3000)]
    pub steps: usize,
    /// Timed runs per setting (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// libtorch thread counts to measure, comma-separated.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// A Python with torch and torchcfm: also run torchcfm's loop in the same setting, side by side.
    #[arg(long)]
    pub peer_python: Option<String>,
}

impl TrainBenchArgs {
    /// The experiment's settings.
    pub fn settings(&self) -> TrainBenchSettings {
        TrainBenchSettings {
            steps: self.steps,
            repeats: self.repeats,
            threads: self.threads.clone(),
            peer_python: self.peer_python.clone(),
        }
    }
}

/// Arguments of `ferroflow bench guidance`.
#[derive(Debug, clap::Args)]
pub struct GuidanceBenchArgs {
    /// Data dimensions of the MLPs, comma-separated.
    #[arg(long, default_value = "2,16,64,256,784", value_delimiter = ',')]
    pub dims: Vec<usize>,
    /// Batch of the MLP timings.
    #[arg(long, default_value_t = 256)]
    pub batch: i64,
    /// Hidden width of the MLPs.
    #[arg(long, default_value_t = 256)]
    pub width: usize,
    /// Hidden layers of the MLPs.
    #[arg(long, default_value_t = 3)]
    pub depth: usize,
    /// Timed runs per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// libtorch threads.
    #[arg(long, default_value_t = 1)]
    pub threads: i32,
    /// Batch of the U-Net timings (0 skips the U-Net).
    #[arg(long, default_value_t = 16)]
    pub unet_batch: i64,
    /// Run the effect study on 2D Gaussian mixtures instead, writing tables and pictures into this folder.
    #[arg(long)]
    pub study: Option<PathBuf>,
    /// Training steps of the study's MLPs.
    #[arg(long, default_value_t = 4000)]
    pub study_train_steps: usize,
}

impl GuidanceBenchArgs {
    /// The experiment's settings.
    pub fn settings(&self) -> GuidanceBenchSettings {
        GuidanceBenchSettings {
            dims: self.dims.clone(),
            batch: self.batch,
            width: self.width,
            depth: self.depth,
            repeats: self.repeats,
            threads: self.threads,
            unet_batch: self.unet_batch,
            study: self.study.clone(),
            study_train_steps: self.study_train_steps,
        }
    }
}

/// Runs `ferroflow bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    match &args.which {
        BenchKind::Likelihood(args) => likelihood_bench(&args.settings(), &mut [&mut Progress::auto()]),
        BenchKind::Train(args) => ferroflow_experiments::bench::train::run(&args.settings()),
        BenchKind::Guidance(args) => ferroflow_experiments::bench::guidance::run(&args.settings()),
        BenchKind::Riemannian(args) => ferroflow_experiments::bench::riemannian::riemannian_bench(
            &args.settings(),
            &mut [&mut Progress::auto()],
        ),
        BenchKind::Discrete(args) => ferroflow_experiments::bench::discrete::discrete_bench(
            &args.settings(),
            &mut [&mut Progress::auto()],
        )
        .map(|_| ()),
        BenchKind::Distributed(args) => args.run(),
    }
}
