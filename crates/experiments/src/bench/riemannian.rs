//! `ferroflow bench riemannian`: the Riemannian runs of `configs/riemannian/` trained and measured side by side
//! with Meta's `flow_matching` (its `GeodesicProbPath` and `RiemannianODESolver`, run by
//! `peers/flow_matching_riemannian.py` from `cargo xtask setup --peers`).
//!
//! Like with like: ferroflow draws the peer's data (a source and a target pool holding every training step's
//! batch, from [`Stream::PeerData`]) and the source points of its samples (the same [`Stream::EvalSource`]
//! points that ferroflow's own `eval` integrates from); the peer trains the same network (MLP of the config's
//! width and depth, SELU, on [x, t], output projected onto the tangent space) with Adam at the same learning
//! rate, batch and steps, and samples with RK4 at the config's step count. Both sample sets are then measured
//! by the same code: the exact W2 with geodesic cost against the same fresh target points (`eval`'s
//! reference). The floor is the W2 between that reference and a second fresh target sample of the same size.
//! The product manifold S^2 x T^1 has no peer row: `flow_matching` has no product manifolds (its issue 60).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use ferroflow_engine::RunConfig;
use ferroflow_engine::manifold::{ManifoldSpec, geodesic_w2};
use ferroflow_engine::metrics::RunMetrics;
use ferroflow_engine::sample::{TrainedFlow, reference_samples, to_array};
use ferroflow_engine::stream::Stream;
use ferroflow_engine::train::{FlowModel, Observer};
use ndarray::{Array2, ArrayView2};

use crate::timing::median_time;

/// Settings of `ferroflow bench riemannian`.
#[derive(Clone, Debug)]
pub struct RiemannianBenchSettings {
    /// The configs to run (every `.toml` in this folder).
    pub configs: PathBuf,
    /// Where the runs and the peer's folders are written (replaced on every call).
    pub out_dir: PathBuf,
    /// Training steps instead of the configs' (`None`: the configs').
    pub steps: Option<usize>,
    /// A Python with `flow_matching` (`.peers/python` of `cargo xtask setup --peers`); `None` runs ferroflow
    /// alone.
    pub peer_python: Option<String>,
    /// The peer's torch threads (0: torch's default, all cores, as its users run it).
    pub peer_threads: usize,
    /// Timed sampling runs of ferroflow (the median is reported).
    pub repeats: usize,
}

/// One program's figures on one config.
struct Figures {
    seconds_per_step: f64,
    w2: f64,
    sample_seconds: f64,
    threads: usize,
}

/// One row of the table.
struct Row {
    name: String,
    manifold: String,
    floor: f64,
    ours: Figures,
    kl: Option<(f64, f64)>,
    peer: Option<Figures>,
}

/// Runs the benchmark and prints its table (markdown); `observers` watch ferroflow's training loops.
pub fn riemannian_bench(
    settings: &RiemannianBenchSettings,
    observers: &mut [&mut dyn Observer<FlowModel>],
) -> Result<()> {
    let configs = config_files(&settings.configs)?;
    if settings.out_dir.exists() {
        std::fs::remove_dir_all(&settings.out_dir)
            .with_context(|| format!("cannot clear {}", settings.out_dir.display()))?;
    }
    let mut rows = Vec::new();
    for path in configs {
        let mut config = RunConfig::load(&path)?;
        let Some(spec) = config.data.manifold.clone() else {
            println!(
                "bench riemannian: {} is not a manifold run; skipped",
                path.display()
            );
            continue;
        };
        if let Some(steps) = settings.steps {
            config.train.steps = steps;
        }
        config.run.out_dir = settings.out_dir.display().to_string();
        rows.push(measure(settings, &config, &spec, observers)?);
    }
    ensure!(
        !rows.is_empty(),
        "no manifold config in {}",
        settings.configs.display()
    );
    print_table(settings, &rows);
    Ok(())
}

/// The `.toml` files of `dir`, sorted.
fn config_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the config folder {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

fn measure(
    settings: &RiemannianBenchSettings,
    config: &RunConfig,
    spec: &ManifoldSpec,
    observers: &mut [&mut dyn Observer<FlowModel>],
) -> Result<Row> {
    let name = config.run.name.clone();
    println!("bench riemannian: training {name} ({} steps)", config.train.steps);
    let run_dir = ferroflow_engine::run::train_new(config, observers, None)?;
    let metrics = ferroflow_engine::run::evaluate(&run_dir)?;
    let flow = TrainedFlow::load(&run_dir)?;
    let n = config.sample.w2_samples;
    let manifold = spec.build()?;
    let reference = manifold.project_batch(reference_samples(config, n).mapv(f64::from).view())?;
    let second = config
        .data
        .target
        .sample(n, &mut Stream::Benchmark.rng(config.run.seed));
    let second = manifold.project_batch(
        Array2::from_shape_vec((n, config.data.target.dim()), second)?
            .mapv(f64::from)
            .view(),
    )?;
    let w2 =
        |a: ArrayView2<f64>| geodesic_w2(manifold.as_ref(), a, reference.view()).map_err(anyhow::Error::msg);
    let floor = w2(second.view())?;

    tch::set_num_threads(config.run.threads as i32);
    let options = config.sample.ode_options();
    // Timed only: `evaluate` above already integrated these source points and measured their W2.
    let (timing, _) = median_time(settings.repeats, || {
        flow.integrate(flow.source_points(n, Stream::EvalSource), &options, None)
    })?;
    let ours = Figures {
        seconds_per_step: seconds_per_step(&metrics)?,
        w2: metrics.w2.context("eval wrote no w2")?,
        sample_seconds: timing.wall_seconds,
        threads: config.run.threads,
    };
    let kl = metrics.kl_estimate.zip(metrics.kl_stderr);
    let peer = match (&settings.peer_python, spec) {
        (Some(python), ManifoldSpec::Sphere { .. } | ManifoldSpec::Torus { .. }) => {
            let peer_dir = settings.out_dir.join(format!("{name}-flow_matching"));
            let samples = run_peer(python, settings.peer_threads, config, spec, &flow, &peer_dir)?;
            let figures = read_peer(&peer_dir, config.train.steps)?;
            let samples = manifold.project_batch(samples.view())?;
            Some(Figures {
                w2: w2(samples.view())?,
                ..figures
            })
        }
        _ => None,
    };
    Ok(Row {
        name,
        manifold: spec.name(),
        floor,
        ours,
        kl,
        peer,
    })
}

fn seconds_per_step(metrics: &RunMetrics) -> Result<f64> {
    let seconds = metrics
        .train_seconds
        .context("metrics.json has no train_seconds")?;
    let steps = metrics.train_steps.context("metrics.json has no train_steps")?;
    Ok(seconds / steps.max(1) as f64)
}

/// Writes the peer's folder, runs the peer script and returns its samples.
fn run_peer(
    python: &str,
    threads: usize,
    config: &RunConfig,
    spec: &ManifoldSpec,
    flow: &TrainedFlow,
    dir: &Path,
) -> Result<Array2<f64>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dim = config.data.target.dim();
    let pool = config.train.steps * config.train.batch_size;
    let mut rng = Stream::PeerData.rng(config.run.seed);
    let x0 = config.data.source.sample(pool, &mut rng);
    let x1 = config.data.target.sample(pool, &mut rng);
    let manifold = spec.build()?;
    let on_manifold = |points: Vec<f32>, rows: usize| -> Result<Array2<f32>> {
        let array = Array2::from_shape_vec((rows, dim), points)?.mapv(f64::from);
        Ok(manifold.project_batch(array.view())?.mapv(|v| v as f32))
    };
    let write =
        |name: &str, array: &Array2<f32>| ferroflow_engine::files::write_npy(&dir.join(name), array.view());
    write("x0_pool.npy", &on_manifold(x0, pool)?)?;
    write("x1_pool.npy", &on_manifold(x1, pool)?)?;
    let n = config.sample.w2_samples;
    write(
        "x0_eval.npy",
        &to_array(&flow.source_points(n, Stream::EvalSource)),
    )?;
    let coupling = match &config.flow.coupling {
        ferroflow_coupling::CouplingConfig::Independent { .. } => "independent",
        ferroflow_coupling::CouplingConfig::ExactOt { .. } => "exact_ot",
        other => bail!("the peer script has no coupling like {other:?}"),
    };
    let peer_settings = serde_json::json!({
        "manifold": match spec { ManifoldSpec::Sphere { .. } => "sphere", _ => "torus" },
        "width": config.model.width,
        "depth": config.model.depth,
        "lr": config.train.optimizer.lr,
        "steps": config.train.steps,
        "batch_size": config.train.batch_size,
        "seed": config.run.seed,
        "coupling": coupling,
        "ode_steps": config.sample.steps,
        "threads": threads,
    });
    ferroflow_engine::files::write_atomic(
        &dir.join("settings.json"),
        serde_json::to_string_pretty(&peer_settings)?.as_bytes(),
    )?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/flow_matching_riemannian.py");
    println!("bench riemannian: running flow_matching on {}", config.run.name);
    super::run_peer_script(python, script, &[dir.display().to_string()])?;
    let samples = ferroflow_engine::files::read_points(&dir.join("samples.npy"))?;
    ensure!(
        samples.dim() == (n, dim),
        "the peer wrote {:?} samples, expected ({n}, {dim})",
        samples.dim()
    );
    Ok(samples.mapv(f64::from))
}

/// The peer's timings from its `peer.json` (its W2 is filled in by the caller).
fn read_peer(dir: &Path, steps: usize) -> Result<Figures> {
    let path = dir.join("peer.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let number = |key: &str| {
        json[key]
            .as_f64()
            .with_context(|| format!("{} has no number `{key}`", path.display()))
    };
    Ok(Figures {
        seconds_per_step: number("train_s")? / steps.max(1) as f64,
        w2: f64::NAN,
        sample_seconds: number("sample_s")?,
        threads: number("threads")? as usize,
    })
}

fn print_table(settings: &RiemannianBenchSettings, rows: &[Row]) {
    println!(
        "\nRiemannian flow matching, ferroflow{} ; W2: exact, geodesic cost, against the same fresh target \
         points; floor: W2 of a second fresh target sample; sampling: RK4 from the same source points\n",
        if settings.peer_python.is_some() {
            " and flow_matching 1.0.10 side by side"
        } else {
            ""
        }
    );
    println!(
        "| run | manifold | W2 floor | ferroflow W2 | flow_matching W2 | KL estimate (ferroflow) | ms/step ferroflow \
         | ms/step flow_matching | step speed ratio | sampling s ferroflow | sampling s flow_matching |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let peer = row.peer.as_ref();
        let dash = || "-".to_owned();
        println!(
            "| {} | {} | {:.3} | {:.3} | {} | {} | {:.2} ({} thr) | {} | {} | {:.3} | {} |",
            row.name,
            row.manifold,
            row.floor,
            row.ours.w2,
            peer.map_or_else(dash, |p| format!("{:.3}", p.w2)),
            row.kl.map_or_else(dash, |(kl, se)| format!("{kl:.3} ± {se:.3}")),
            row.ours.seconds_per_step * 1e3,
            row.ours.threads,
            peer.map_or_else(dash, |p| format!(
                "{:.2} ({} thr)",
                p.seconds_per_step * 1e3,
                p.threads
            )),
            peer.map_or_else(dash, |p| format!(
                "{:.1}x",
                p.seconds_per_step / row.ours.seconds_per_step
            )),
            row.ours.sample_seconds,
            peer.map_or_else(dash, |p| format!("{:.3}", p.sample_seconds)),
        );
    }
}
