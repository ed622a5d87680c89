//! `ferroflow likelihood`: log-likelihoods of points under a trained run, written as `.npy`, with bits/dim.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ferroflow_engine::files::{read_points, write_npy_1d};
use ferroflow_engine::likelihood::{DEFAULT_CHUNK_SIZE, LikelihoodSettings, log_likelihood_with};
use ferroflow_engine::sample::TrainedFlow;
use ferroflow_models::DivergenceEstimator;
use ferroflow_solvers::DataScaling;
use tch::Tensor;

use crate::flags::OdeArgs;

/// Arguments of `ferroflow likelihood`.
#[derive(Debug, clap::Args)]
pub struct LikelihoodArgs {
    /// The run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// The points (.npy, [n, dim], float32 or float64); for a discrete run, token ids (.npy, [n, length]) or,
    /// for a words run, words (.txt, one a line).
    #[arg(long)]
    pub data: PathBuf,
    /// Output .npy file (float64 [n]: log p1 of each point; for a discrete run, the ELBO of each sequence, a
    /// lower bound on its log-probability in nats).
    #[arg(long)]
    pub out: PathBuf,
    /// Exact divergence (the default).
    #[arg(long, conflicts_with = "hutchinson")]
    pub exact: bool,
    /// Hutchinson's estimator with this many Rademacher probes (fixed for each solve).
    #[arg(long, value_name = "K")]
    pub hutchinson: Option<usize>,
    /// ODE options (default: the run's sampling options).
    #[command(flatten)]
    pub ode: OdeArgs,
    /// Points per solve.
    #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
    pub chunk_size: usize,
    /// How the data were scaled, for bits/dim: dequantized (plain -log p / (D ln 2)), unit_interval or
    /// symmetric (8-bit images scaled to [0, 1) or [-1, 1)).
    #[arg(long, default_value = "dequantized")]
    pub scaling: String,
}

/// Runs `ferroflow likelihood`: writes the log-densities and prints their mean and bits/dim.
pub fn run(args: &LikelihoodArgs) -> Result<()> {
    if ferroflow_engine::run::is_discrete_run(&args.run)? {
        return run_discrete(args);
    }
    let scaling = match args.scaling.as_str() {
        "dequantized" => DataScaling::Dequantized,
        "unit_interval" => DataScaling::UnitInterval,
        "symmetric" => DataScaling::Symmetric,
        other => bail!("unknown --scaling {other:?}; allowed: dequantized, unit_interval, symmetric"),
    };
    let estimator = match args.hutchinson {
        Some(n_probes) => DivergenceEstimator::hutchinson(n_probes),
        None => DivergenceEstimator::Exact,
    };
    let flow = TrainedFlow::load(&args.run)?;
    let options = args.ode.apply(&mut flow.config.clone())?;
    // At least one point (the mean of no log-densities is NaN), in standard layout whatever the file's
    // order; the run's dimension is checked by the library.
    let points = read_points(&args.data)?;
    let (n_points, dim) = points.dim();
    let data =
        Tensor::try_from(&points).with_context(|| format!("cannot copy {} to torch", args.data.display()))?;
    let settings = LikelihoodSettings {
        estimator,
        chunk_size: args.chunk_size,
        seed: flow.config.run.seed,
    };
    let started = Instant::now();
    let likelihood = log_likelihood_with(&flow, &data, &settings, &options).with_context(|| {
        format!(
            "likelihood of {} under {}",
            args.data.display(),
            args.run.display()
        )
    })?;
    let seconds = started.elapsed().as_secs_f64();
    write_npy_1d(&args.out, likelihood.log_density.view())?;
    println!(
        "mean log p1 = {:.6} over {n_points} points, {:.4} bits/dim ({:?} scaling); {:?}, {} steps, {} field \
         evaluations, {:.2} s; written to {}",
        likelihood.mean(),
        likelihood.bits_per_dim(flow.intrinsic_dim().unwrap_or(dim), scaling),
        scaling,
        estimator,
        likelihood.steps,
        likelihood.field_evals,
        seconds,
        args.out.display()
    );
    Ok(())
}

/// `ferroflow likelihood` for a discrete run: the ELBO of each sequence (the Monte Carlo estimate of `eval`, its
/// `x_t` drawn from the run's evaluation stream), its mean in bits per token with the standard error.
fn run_discrete(args: &LikelihoodArgs) -> Result<()> {
    use ferroflow_engine::discrete::TrainedTokens;
    use ferroflow_engine::discrete::trained::read_sequences;
    use ferroflow_engine::stream::Stream;
    if args.hutchinson.is_some()
        || args.ode.solver.is_some()
        || args.ode.steps.is_some()
        || args.scaling != "dequantized"
    {
        bail!(
            "--hutchinson, --solver, --steps and --scaling are for continuous runs; {} is a discrete run, whose \
             likelihood is its ELBO",
            args.run.display()
        );
    }
    let tokens = TrainedTokens::load(&args.run)?;
    let sequences = read_sequences(&args.data, &tokens)?;
    let started = Instant::now();
    let bounds = tokens
        .elbo_per_sequence(
            sequences.view(),
            &mut Stream::EvalHeldOut.rng(tokens.config.run.seed),
        )
        .with_context(|| format!("ELBO of {} under {}", args.data.display(), args.run.display()))?;
    write_npy_1d(&args.out, bounds.view())?;
    let (n, length) = sequences.dim();
    let bits = |nats: f64| -nats / (length as f64 * std::f64::consts::LN_2);
    let stderr = if n > 1 {
        format!(
            " ± {:.4}",
            (bounds.var(1.0) / n as f64).sqrt() / (length as f64 * std::f64::consts::LN_2)
        )
    } else {
        String::new()
    };
    println!(
        "mean ELBO = {:.6} nats over {n} sequences: {:.4}{stderr} bits per token (an upper bound on the NLL); \
         {:.2} s; written to {}",
        bounds.mean().unwrap_or(f64::NAN),
        bits(bounds.mean().unwrap_or(f64::NAN)),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
