//! `ferroflow bench ...`: timings of the program's hot paths in the settings where `shared/reference.md` has
//! peer measurements, printed as markdown tables with ratios to those figures.
//!
//! `bench likelihood` trains (or loads from `bench-out/`) the 2D benchmark network (MLP 3 x 64 SELU) on
//! N(0, I) -> 8gaussians, then times, on 10,000 target points: the log-likelihood with the exact divergence
//! and with Hutchinson's estimator (one probe), 100 midpoint steps each (flow_matching's `compute_likelihood`
//! setting), and sampling 10,000 points with 100 Euler steps (its `ODESolver.sample`). It also times Hutchinson
//! at D = 784 through an MLP of width 256 and depth 3 on random weights (1,000 points, 20 midpoint steps; no
//! peer). Every timing is the median of `--repeats` runs, for each thread setting asked for: a fixed count,
//! or `0` for the count ferroflow picks by the work's size (`ferroflow_engine::threads`), which is what users
//! get. With `--peer-python`, flow_matching runs the same three computations in the same invocation, right
//! after ours: pinned to the same count beside a fixed setting, at torch's default beside ours. Every row
//! also shows its arithmetic rate and the share of the machine's matrix-multiply rate ([`crate::roofline`]).
//!
//! These machines are shared: a loaded machine slows both sides, and two threads on a loaded 2-core machine
//! collapse (they wait for each other), so only ratios from one invocation mean anything.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ferroflow_models::{Mlp, MlpConfig, VelocityNet};
use ferroflow_solvers::{Method, OdeOptions};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use ferroflow_engine::RunConfig;
use ferroflow_engine::config::{
    DataSection, FlowSection, ModelSection, RunSection, SampleSection, TrainSection,
};
use ferroflow_engine::data::Dataset;
use ferroflow_engine::likelihood::{
    GaussianSource, LikelihoodSettings, log_likelihood_of_net, log_likelihood_with,
};
use ferroflow_engine::run::CONFIG_FILE;
use ferroflow_engine::sample::TrainedFlow;
use ferroflow_engine::stream::Stream;
use ferroflow_engine::threads::Threads;
use ferroflow_engine::train::{MODEL_FILE, Observer};
use ferroflow_models::DivergenceEstimator;

use crate::roofline::{Roofline, network_flops};
use crate::timing::{Timing, load_average, median_time};

pub mod discrete;
pub mod distributed;
pub mod guidance;
pub mod riemannian;
pub mod train;

/// Settings of `ferroflow bench likelihood`.
#[derive(Clone, Debug)]
pub struct LikelihoodBenchSettings {
    /// Where the benchmark's run folder is kept (reused when present).
    pub out_dir: PathBuf,
    /// Training steps of the 2D network.
    pub train_steps: usize,
    /// Points of the 2D timings.
    pub n_points: usize,
    /// Timed runs per measurement (the median is reported).
    pub repeats: usize,
    /// libtorch thread settings to measure: a count, or 0 for ferroflow's own choice by the work's size
    /// (what a user gets). The peer runs pinned to 1 thread beside our 1, and at torch's default beside our 0.
    pub threads: Vec<usize>,
    /// A Python with flow_matching: run its `compute_likelihood` and `ODESolver.sample` side by side.
    pub peer_python: Option<String>,
}

/// One row of the table.
struct Row {
    name: &'static str,
    /// The thread setting (0: by work size) and the count it came to.
    threads: (usize, usize),
    timing: Timing,
    n_points: usize,
    flops: f64,
    /// The peer's key in its output, when it has this benchmark.
    peer_key: Option<&'static str>,
}

/// The peer's points/s for one thread setting: `(threads it ran with, key, points/s)`.
struct PeerRates {
    threads: usize,
    rates: Vec<(String, f64)>,
}

/// Runs `ferroflow bench likelihood`: trains or loads the 2D run (watched by `observers`), then times the
/// likelihoods and sampling (and the peer's, side by side, when asked) and prints the table with the
/// roofline shares.
pub fn likelihood_bench(
    args: &LikelihoodBenchSettings,
    observers: &mut [&mut dyn Observer<ferroflow_engine::train::FlowModel>],
) -> Result<()> {
    if args.repeats == 0 || args.n_points == 0 || args.threads.is_empty() {
        bail!("--repeats and --n-points must be at least 1, and --threads must name at least one setting");
    }
    let mut flow = trained_flow(&args.out_dir, args.train_steps, observers)?;
    let load_at_start = load_average();
    let cores = ferroflow_engine::threads::cores();
    let roofline = Roofline::measure(&[1, cores], args.repeats.max(7));
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let points = Dataset::EightGaussians {}.sample(args.n_points, &mut rng);
    let data = Tensor::from_slice(&points).view([args.n_points as i64, 2]);
    let x0 = flow.source_points(args.n_points, Stream::Benchmark);
    let midpoint = OdeOptions::fixed(Method::Midpoint, 100);
    let euler = OdeOptions::fixed(Method::Euler, 100);
    // flow_matching integrates all points as one batch; so do we here.
    let settings = |estimator| LikelihoodSettings {
        estimator,
        chunk_size: args.n_points,
        seed: 0,
    };
    let dim = flow.dim();
    let n = args.n_points;

    let (big_net, big_data) = random_image_sized_mlp()?;
    let big_options = OdeOptions::fixed(Method::Midpoint, 20);
    let big_settings = LikelihoodSettings {
        estimator: DivergenceEstimator::hutchinson(1),
        chunk_size: 1000,
        seed: 0,
    };

    let mut rows = Vec::new();
    let mut checks = Vec::new();
    let mut peers = Vec::new();
    for &setting in &args.threads {
        flow.threads = if setting == 0 {
            Threads::Auto
        } else {
            Threads::Fixed(setting)
        };
        // What each computation came to (the same for all three 2D ones but the exact divergence's).
        let count = |passes: usize| {
            flow.threads
                .count(flow.net.flops_per_sample() * n as f64 * passes as f64)
        };
        let (timing, exact) = median_time(args.repeats, || {
            log_likelihood_with(&flow, &data, &settings(DivergenceEstimator::Exact), &midpoint)
        })?;
        rows.push(Row {
            name: "log-likelihood, exact divergence, 100 midpoint steps, D = 2",
            threads: (setting, count(1 + dim)),
            timing,
            n_points: n,
            flops: network_flops(flow.net.as_ref(), n, (200 * (1 + dim)) as f64),
            peer_key: Some("exact"),
        });
        let (timing, hutchinson) = median_time(args.repeats, || {
            log_likelihood_with(
                &flow,
                &data,
                &settings(DivergenceEstimator::hutchinson(1)),
                &midpoint,
            )
        })?;
        rows.push(Row {
            name: "log-likelihood, Hutchinson (1 probe), 100 midpoint steps, D = 2",
            threads: (setting, count(2)),
            timing,
            n_points: n,
            flops: network_flops(flow.net.as_ref(), n, 400.0),
            peer_key: Some("hutchinson"),
        });
        let (timing, _) = median_time(args.repeats, || flow.integrate(x0.copy(), &euler, None))?;
        rows.push(Row {
            name: "sampling, 100 Euler steps, D = 2",
            threads: (setting, count(1)),
            timing,
            n_points: n,
            flops: network_flops(flow.net.as_ref(), n, 100.0),
            peer_key: Some("sample"),
        });
        let big_threads = flow
            .threads
            .apply(big_net.flops_per_sample() * big_settings.chunk_size as f64 * 2.0);
        let (timing, big) = median_time(args.repeats, || {
            log_likelihood_of_net(
                &big_net,
                &big_data,
                GaussianSource { std: 1.0 },
                &big_settings,
                &big_options,
            )
        })?;
        rows.push(Row {
            name: "log-likelihood, Hutchinson (1 probe), 20 midpoint steps, D = 784, MLP 3 x 256",
            threads: (setting, big_threads),
            timing,
            n_points: big_data.size()[0] as usize,
            flops: network_flops(&big_net, big_data.size()[0] as usize, 80.0),
            peer_key: None,
        });
        checks.push((setting, exact.mean(), hutchinson.mean(), big.mean()));
        // The peer right after ours, in the matching setting: pinned beside a fixed count, its default beside
        // our choice.
        if let Some(python) = &args.peer_python {
            peers.push((setting, peer_likelihood(python, n, args.repeats, setting)?));
        }
    }

    println!(
        "\n## ferroflow bench likelihood\n\nNetwork: {} (trained {} steps on N(0, I) -> 8gaussians), MLP 3 x 64 \
         SELU. Median of {} runs. {} Load average (1, 5, 15 min) at the start: {load_at_start}; at the end: {}.\n",
        flow.run_dir.display(),
        flow.config.train.steps,
        args.repeats,
        roofline.summary(),
        load_average()
    );
    let with_peer = args.peer_python.is_some();
    println!(
        "| benchmark | threads | median s | points/s | GFLOP/s | roofline |{}",
        if with_peer {
            " flow_matching threads | flow_matching points/s | ratio |"
        } else {
            ""
        }
    );
    println!(
        "|---|---|---|---|---|---|{}",
        if with_peer { "---|---|---|" } else { "" }
    );
    for row in &rows {
        let rate = row.n_points as f64 / row.timing.wall_seconds;
        let (gflops, share) = roofline.cells(row.flops, row.timing.wall_seconds, row.threads.1);
        let threads = match row.threads {
            (0, count) => format!("auto ({count})"),
            (_, count) => count.to_string(),
        };
        let mut line = format!(
            "| {} | {threads} | {:.3} | {rate:.0} | {gflops} | {share} |",
            row.name, row.timing.wall_seconds
        );
        if with_peer {
            let peer = peers
                .iter()
                .find(|(setting, _)| *setting == row.threads.0)
                .and_then(|(_, peer)| {
                    let key = row.peer_key?;
                    let rate = peer.rates.iter().find(|(k, _)| k == key)?.1;
                    Some((peer.threads, rate))
                });
            line.push_str(&match peer {
                Some((threads, peer_rate)) => {
                    let label = if row.threads.0 == 0 {
                        format!("default ({threads})")
                    } else {
                        threads.to_string()
                    };
                    format!(" {label} | {peer_rate:.0} | {:.2}x |", rate / peer_rate)
                }
                None => " - | - | - |".into(),
            });
        }
        println!("{line}");
    }
    println!(
        "\nGFLOP/s counts the network's matrix arithmetic only (2 per weight per point and pass; the exact \
         divergence makes 1 + D passes per evaluation in forward mode, Hutchinson 2, sampling 1); roofline is \
         its share of the matrix-multiply rate at that thread count. ratio = ours / peer (> 1 is faster), both \
         timed in this invocation; `auto` is ferroflow's choice by the work's size, `default` torch's."
    );
    println!("\nSanity (mean log p1 of the timed points):");
    for (setting, exact, hutchinson, big) in checks {
        let label = if setting == 0 {
            "auto threads".to_owned()
        } else {
            format!("{setting} thread(s)")
        };
        println!("- {label}: 2D exact {exact:.4}, 2D Hutchinson {hutchinson:.4}, 784-D Hutchinson {big:.1}");
    }
    Ok(())
}

/// Runs flow_matching's likelihoods and sampling in the same setting (`peers/flow_matching_likelihood.py`),
/// pinned to `threads` or at torch's default for 0.
fn peer_likelihood(python: &str, n_points: usize, repeats: usize, threads: usize) -> Result<PeerRates> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/flow_matching_likelihood.py");
    let threads_arg = if threads == 0 {
        "default".to_owned()
    } else {
        threads.to_string()
    };
    let text = run_peer_script(
        python,
        script,
        &[n_points.to_string(), repeats.to_string(), threads_arg],
    )?;
    let value = |key: &str| peer_value(&text, script, key);
    Ok(PeerRates {
        threads: value("threads")? as usize,
        rates: ["exact", "hutchinson", "sample"]
            .iter()
            .map(|&key| Ok((key.to_owned(), value(key)?)))
            .collect::<Result<_>>()?,
    })
}

/// Runs the peer `script` with `python` and `args` and returns what it printed; a failure names the script,
/// how long it ran and the last line of its error output. Every benchmark that runs a peer goes through here.
pub(super) fn run_peer_script(python: &str, script: &str, args: &[String]) -> Result<String> {
    let started = std::time::Instant::now();
    let output = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {python} {script}"))?;
    if !output.status.success() {
        bail!(
            "{script} failed after {:.0} s: {}",
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The number a peer script printed after `key ` at the start of a line.
fn peer_value(text: &str, script: &str, key: &str) -> Result<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{key} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("{script} printed no `{key} <value>` line"))
}

/// The benchmark's trained 2D run: loaded from `out_dir` when a finished one is there, trained otherwise
/// (watched by `observers`, e.g. a progress display).
fn trained_flow(
    out_dir: &Path,
    train_steps: usize,
    observers: &mut [&mut dyn Observer<ferroflow_engine::train::FlowModel>],
) -> Result<TrainedFlow> {
    let name = format!("likelihood-8gaussians-{train_steps}");
    let run_dir = out_dir.join(&name);
    if run_dir.join(MODEL_FILE).exists() && run_dir.join(CONFIG_FILE).exists() {
        eprintln!("bench: loading {}", run_dir.display());
        return TrainedFlow::load(&run_dir);
    }
    if run_dir.exists() {
        // An interrupted earlier training: this folder belongs to the benchmark, so start it again.
        std::fs::remove_dir_all(&run_dir).with_context(|| format!("cannot remove {}", run_dir.display()))?;
    }
    let config = RunConfig {
        run: RunSection::named(name, out_dir),
        data: DataSection {
            source: Dataset::Gaussian { dim: 2, std: 1.0 },
            target: Dataset::EightGaussians {},
            manifold: None,
        },
        model: ModelSection::default(),
        flow: FlowSection::default(),
        train: TrainSection {
            steps: train_steps,
            batch_size: 256,
            checkpoint_every: 0,
            ..TrainSection::default()
        },
        sample: SampleSection {
            n_samples: 2000,
            solver: Method::Euler,
            steps: 100,
            w2_samples: 2000,
            ..SampleSection::default()
        },
    };
    config.validate()?;
    eprintln!("bench: training {train_steps} steps into {}", run_dir.display());
    let run_dir = ferroflow_engine::run::train_new(&config, observers, None)?;
    TrainedFlow::load(&run_dir)
}

/// An MLP velocity on 784-D points (width 256, depth 3, random weights from a fixed seed) and 1,000 points.
fn random_image_sized_mlp() -> Result<(Mlp, Tensor)> {
    tch::manual_seed(784);
    let config = MlpConfig {
        width: 256,
        ..MlpConfig::benchmark(784)
    };
    let net = Mlp::new(config, Device::Cpu)?;
    let data = Tensor::randn([1000, 784], (Kind::Float, Device::Cpu));
    Ok((net, data))
}
