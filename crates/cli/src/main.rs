//! The `ferroflow` command-line program: train, evaluate and sample flows; likelihoods; OT and W2 between
//! point sets; benchmarks and studies. This crate alone knows clap and the terminal: each command lives in
//! its own module under [`commands`], shared flag groups in [`flags`], and progress display is an observer of
//! the engine's training loop ([`progress`]).

mod commands;
mod flags;
mod progress;

use anyhow::Result;
use clap::{Parser, Subcommand};

use commands::{bench, bench2d, eval, explore, image_eval, likelihood, ot, sample, train, w2};

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
    Train(train::TrainArgs),
    /// Measure a finished run: the exact 2-Wasserstein distance to fresh target samples.
    Eval(eval::EvalArgs),
    /// Draw samples from a trained run.
    Sample(sample::SampleArgs),
    /// Exact (or entropic) optimal transport between two point sets with squared-Euclidean cost.
    Ot(ot::OtArgs),
    /// Log-likelihood of points under a trained run (exact or Hutchinson divergence), and bits/dim.
    Likelihood(likelihood::LikelihoodArgs),
    /// Measure a Fashion-MNIST run with the project's classifier: Frechet distance (a stand-in for FID),
    /// class accuracy and confidence over guidance sweeps, bits/dim of test images.
    ImageEval(image_eval::ImageEvalArgs),
    /// Timings of the hot paths against the peers' figures (`bench likelihood`).
    Bench(bench::BenchArgs),
    /// The 2D benchmark of Tong et al. 2023 over configs/bench2d: W2 and NPE per method and task.
    Bench2d(bench2d::Bench2dArgs),
    /// The exact 2-Wasserstein distance between two equal-size point sets.
    W2(w2::W2Args),
    /// Serve the browser explorer on 127.0.0.1 (closed-form views, live training, trained runs).
    Explore(explore::ExploreArgs),
}

fn main() {
    if let Err(err) = run(Cli::parse()) {
        if let Some(interrupted) = err.downcast_ref::<train::Interrupted>() {
            eprintln!("ferroflow: {interrupted}");
            std::process::exit(130);
        }
        eprintln!("ferroflow: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Sample(args) => sample::run(args),
        Command::Ot(args) => ot::run(args),
        Command::Likelihood(args) => likelihood::run(args),
        Command::ImageEval(args) => image_eval::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Bench2d(args) => bench2d::run(args),
        Command::W2(args) => w2::run(args),
        Command::Explore(args) => explore::run(args),
    }
}
