//! `ferroflow bench ...`: timings of the program's hot paths in the settings where `shared/reference.md` has
//! peer measurements, printed as markdown tables with ratios to those figures.
//!
//! `bench likelihood` trains (or loads from `bench-out/`) the 2D benchmark network (MLP 3 x 64 SELU) on
//! N(0, I) -> 8gaussians, then times, on 10,000 target points: the log-likelihood with the exact divergence
//! and with Hutchinson's estimator (one probe), 100 midpoint steps each (flow_matching's `compute_likelihood`
//! setting), and sampling 10,000 points with 100 Euler steps (its `ODESolver.sample`). It also times Hutchinson
//! at D = 784 through an MLP of width 256 and depth 3 on random weights (1,000 points, 20 midpoint steps; no
//! peer figure). Every timing is the median of `--repeats` runs, for each libtorch thread count asked for.
//!
//! The peer figures are wall times on an idle machine; on a shared one, wall-clock ratios mostly measure the
//! other load (the table prints the load averages, and an on-CPU-time column). A fair ratio comes from running
//! flow_matching's own `compute_likelihood` / `ODESolver.sample` in the same setting right before or after,
//! alternating: measured that way (1 thread, load average about 4.5 on 2 cores, two alternations) ferroflow was
//! 1.23-1.44x flow_matching's speed for the exact likelihood (it backpropagates without `create_graph`, which
//! flow_matching always sets), 1.02-1.24x for Hutchinson and 0.94-1.18x for Euler sampling. With 2 threads on a
//! loaded machine both collapse (threads wait for each other), so 1 thread is the faster setting there.

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
    GaussianSource, LikelihoodSettings, log_likelihood_of_field, log_likelihood_with,
};
use ferroflow_engine::run::CONFIG_FILE;
use ferroflow_engine::sample::TrainedFlow;
use ferroflow_engine::stream::Stream;
use ferroflow_engine::train::{MODEL_FILE, Observer};
use ferroflow_models::DivergenceEstimator;

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
    /// libtorch thread counts to measure, comma-separated.
    pub threads: Vec<usize>,
}

/// flow_matching 1.0.10's figures on this kind of machine (points/s, low and high end of its runs).
const PEER_EXACT: (f64, f64) = (2_800.0, 3_650.0);
const PEER_HUTCHINSON: (f64, f64) = (6_900.0, 7_600.0);
const PEER_SAMPLE: (f64, f64) = (36_700.0, 36_700.0);

/// One row of the table.
struct Row {
    name: String,
    threads: usize,
    timing: Timing,
    n_points: usize,
    peer: Option<(f64, f64)>,
}

/// Runs `ferroflow bench likelihood`: trains or loads the 2D run (watched by `observers`), then times the
/// likelihoods and sampling and prints the tables.
pub fn likelihood_bench(
    args: &LikelihoodBenchSettings,
    observers: &mut [&mut dyn Observer<ferroflow_engine::train::FlowModel>],
) -> Result<()> {
    if args.repeats == 0 || args.n_points == 0 || args.threads.contains(&0) {
        bail!("--repeats, --n-points and every --threads value must be at least 1");
    }
    let flow = trained_flow(&args.out_dir, args.train_steps, observers)?;
    let load_at_start = load_average();
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

    let (big_net, big_data) = random_image_sized_mlp()?;
    let big_options = OdeOptions::fixed(Method::Midpoint, 20);
    let big_settings = LikelihoodSettings {
        estimator: DivergenceEstimator::hutchinson(1),
        chunk_size: 1000,
        seed: 0,
    };

    let mut rows = Vec::new();
    let mut checks = Vec::new();
    for &threads in &args.threads {
        tch::set_num_threads(threads as i32);
        let (timing, exact) = median_time(args.repeats, || {
            log_likelihood_with(&flow, &data, &settings(DivergenceEstimator::Exact), &midpoint)
        })?;
        rows.push(Row {
            name: "log-likelihood, exact divergence, 100 midpoint steps, D = 2".into(),
            threads,
            timing,
            n_points: args.n_points,
            peer: Some(PEER_EXACT),
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
            name: "log-likelihood, Hutchinson (1 probe), 100 midpoint steps, D = 2".into(),
            threads,
            timing,
            n_points: args.n_points,
            peer: Some(PEER_HUTCHINSON),
        });
        let (timing, _) = median_time(args.repeats, || flow.integrate(x0.copy(), &euler, None))?;
        rows.push(Row {
            name: "sampling, 100 Euler steps, D = 2".into(),
            threads,
            timing,
            n_points: args.n_points,
            peer: Some(PEER_SAMPLE),
        });
        let (timing, big) = median_time(args.repeats, || {
            let velocity = |x: &Tensor, t: f64| big_net.forward(x, &Tensor::from_slice(&[t as f32]));
            log_likelihood_of_field(
                velocity,
                &big_data,
                GaussianSource { std: 1.0 },
                &big_settings,
                &big_options,
            )
        })?;
        rows.push(Row {
            name: "log-likelihood, Hutchinson (1 probe), 20 midpoint steps, D = 784, MLP 3 x 256".into(),
            threads,
            timing,
            n_points: big_data.size()[0] as usize,
            peer: None,
        });
        checks.push((threads, exact.mean(), hutchinson.mean(), big.mean()));
    }

    println!(
        "\n## ferroflow bench likelihood\n\nNetwork: {} (trained {} steps on N(0, I) -> 8gaussians). Median of {} \
         runs. Peer: flow_matching 1.0.10, measured on this kind of machine (shared/reference.md). Load average \
         (1, 5, 15 min) at the start: {load_at_start}; at the end: {}.\n",
        flow.run_dir.display(),
        flow.config.train.steps,
        args.repeats,
        load_average()
    );
    println!(
        "| benchmark | threads | median wall s | points/s (wall) | points per CPU-s | peer points/s | ratio (wall) \
         | ratio (CPU) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let ratio = |rate: f64, peer: Option<(f64, f64)>| match peer {
        Some((low, high)) if low == high => format!("{:.2}", rate / low),
        Some((low, high)) => format!("{:.2}-{:.2}", rate / high, rate / low),
        None => "-".into(),
    };
    for row in &rows {
        let rate = row.n_points as f64 / row.timing.wall_seconds;
        let cpu_rate = row.timing.cpu_seconds.map(|cpu| row.n_points as f64 / cpu);
        let peer = match row.peer {
            Some((low, high)) if low == high => format!("{low:.0}"),
            Some((low, high)) => format!("{low:.0}-{high:.0}"),
            None => "-".into(),
        };
        println!(
            "| {} | {} | {:.3} | {:.0} | {} | {} | {} | {} |",
            row.name,
            row.threads,
            row.timing.wall_seconds,
            rate,
            cpu_rate.map_or("-".into(), |r| format!("{r:.0}")),
            peer,
            ratio(rate, row.peer),
            cpu_rate.map_or("-".into(), |r| ratio(r, row.peer)),
        );
    }
    println!(
        "\nratio = ours / peer (> 1 is faster), against the high and low end of the peer's range. The CPU \
         column divides by the on-CPU time of all our threads, which on a shared machine leaves out the waits \
         for a core; the peer's figures are wall times."
    );
    println!("\nSanity (mean log p1 of the timed points):");
    for (threads, exact, hutchinson, big) in checks {
        println!(
            "- {threads} thread(s): 2D exact {exact:.4}, 2D Hutchinson {hutchinson:.4}, 784-D Hutchinson {big:.1}"
        );
    }
    if args.threads.len() > 1 {
        for name in rows
            .iter()
            .map(|row| &row.name)
            .collect::<std::collections::BTreeSet<_>>()
        {
            let best = rows
                .iter()
                .filter(|row| &row.name == name)
                .min_by(|a, b| a.timing.wall_seconds.total_cmp(&b.timing.wall_seconds))
                .expect("one row per thread count");
            println!("- fastest for {name}: {} thread(s)", best.threads);
        }
    }
    Ok(())
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
