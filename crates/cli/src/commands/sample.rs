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
    /// Softmax temperature of a discrete run's posterior (default: the run's sample.temperature).
    #[arg(long)]
    pub temperature: Option<f64>,
}

/// Runs `ferroflow sample`.
pub fn run(args: &SampleArgs) -> Result<()> {
    if ferroflow_engine::run::is_discrete_run(&args.run)? {
        return run_discrete(args);
    }
    if args.temperature.is_some() {
        bail!(
            "--temperature is for discrete runs; {} is a continuous run",
            args.run.display()
        );
    }
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

/// `ferroflow sample` for a discrete run: the Euler CTMC sampler, `--steps`, `--temperature`, and
/// classifier-free guidance with `--class` and `--cfg` (default weight 0, the conditional model); writes token
/// ids as float32 `[n, length]` to OUT and, for words, the words to OUT with the extension `.txt`.
fn run_discrete(args: &SampleArgs) -> Result<()> {
    use ferroflow_engine::discrete::{TokenGuidance, TokenSampling, TrainedTokens};
    let refused = [
        (
            "--solver",
            args.ode.solver.is_some() && args.ode.solver != Some(ferroflow_solvers::Method::Euler),
        ),
        ("--atol", args.ode.atol.is_some()),
        ("--rtol", args.ode.rtol.is_some()),
        ("--trajectory", args.trajectory.is_some()),
        ("--lambda", args.guidance.lambda.is_some()),
        (
            "--guidance",
            args.guidance.guidance != crate::flags::GuidanceKind::None,
        ),
    ];
    if let Some((flag, _)) = refused.iter().find(|(_, given)| *given) {
        bail!(
            "{flag} is for continuous runs; {} is a discrete run (it takes --n, --steps, --temperature, --class \
             and --cfg)",
            args.run.display()
        );
    }
    let tokens = TrainedTokens::load(&args.run)?;
    let length = tokens.length();
    check_sample_count("--n", args.n, length)?;
    let mut sampling = TokenSampling::of(&tokens.config);
    if let Some(steps) = args.ode.steps {
        if !(1..=100_000).contains(&steps) {
            bail!("--steps {steps} is outside 1..=100000");
        }
        sampling.steps = steps;
    }
    if let Some(temperature) = args.temperature {
        if !(temperature.is_finite() && temperature > 0.0 && temperature <= 100.0) {
            bail!("--temperature {temperature} is outside (0, 100]");
        }
        sampling.temperature = temperature;
    }
    sampling.guidance = match (args.guidance.class, args.guidance.cfg) {
        (Some(class), weight) => Some(TokenGuidance {
            class,
            weight: weight.unwrap_or(0.0),
        }),
        (None, Some(_)) => bail!("--cfg needs --class: the class to guide towards"),
        (None, None) => None,
    };
    let started = Instant::now();
    let samples = tokens.sample(args.n, &sampling, &mut Stream::Sample.rng(tokens.config.run.seed))?;
    write_npy(&args.out, samples.mapv(|token| token as f32).view())?;
    let mut written = vec![args.out.display().to_string()];
    if matches!(
        tokens.config.data.target,
        ferroflow_engine::data::Dataset::Words { .. }
    ) {
        let text: String = ferroflow_engine::discrete::eval::words_of(samples.view())
            .into_iter()
            .map(|word| word + "\n")
            .collect();
        let text_path = args.out.with_extension("txt");
        ferroflow_engine::files::write_atomic(&text_path, text.as_bytes())?;
        written.push(text_path.display().to_string());
    }
    println!(
        "{} sequences written to {} in {:.2} s ({} Euler CTMC steps)",
        args.n,
        written.join(" and "),
        started.elapsed().as_secs_f64(),
        sampling.steps
    );
    Ok(())
}
