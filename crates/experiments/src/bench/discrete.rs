//! `ferroflow bench discrete`: a discrete run (`configs/discrete/checkerboard.toml`: the 2D checkerboard cut into
//! two tokens) trained and measured side by side with Meta's `flow_matching` (its `MixtureDiscreteProbPath`,
//! `PolynomialConvexScheduler` and `MixtureDiscreteEulerSolver`, run by `peers/flow_matching_discrete.py` from
//! `cargo xtask setup --peers`).
//!
//! Like with like: ferroflow trains through [`ferroflow_engine::run::train_new_discrete`] on its own batches.
//! The peer does not see those batches; it gets a pool of `steps * batch_size` continuous target points drawn
//! from [`Stream::PeerData`] (one fresh batch per step, as ferroflow draws), and discretises them itself with
//! the grid's formula (bin `floor((x + half_width) / (2 half_width / bins))`, clamped to the window), so both
//! programs train on the same law without sharing a sample. The peer builds the same network (the token MLP:
//! the same embedding table over the states, mask included, the same time features, layer sizes and
//! activation, PyTorch's default initialisation) and both sides count its parameters: a mismatch stops the
//! benchmark. It trains with the same source (masked or uniform), `kappa_t = t^n`
//! (`PolynomialConvexScheduler(n)`), loss (PyTorch's cross-entropy over every position, or
//! `MixturePathGeneralizedKL`), time sampling, Adam settings, batch, steps and EMA of the weights (sampling with
//! the EMA when the config has one), and samples with `MixtureDiscreteEulerSolver` over the config's number of
//! uniform steps. Its timings are measured in-process, start-up and data loading excluded; its sampling time is
//! the median of `--repeats` runs, like ferroflow's.
//!
//! Both sides' samples are then measured by the same code: decoded to bin centres ([`Grid::decode_points`])
//! and compared with the exact W2 against the same `sample.w2_samples` fresh continuous target points (the
//! first points of [`Stream::EvalTarget`]), and by the total-variation distance between their histograms
//! over the grid's bins and that of [`TV_REFERENCE_POINTS`] fresh points (the same stream, discretised). The
//! floors are the same two distances for a second fresh data sample of the same size, discretised
//! ([`Stream::Benchmark`]): what the grid and the sample size allow.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use ferroflow_engine::RunConfig;
use ferroflow_engine::config::{DiscreteLoss, ModelKind, TimeSampling};
use ferroflow_engine::data::Dataset;
use ferroflow_engine::discrete::{TokenSampling, TrainedTokens};
use ferroflow_engine::metrics::RunMetrics;
use ferroflow_engine::stream::Stream;
use ferroflow_engine::tokens::Grid;
use ferroflow_models::discrete::TokenSource;
use ferroflow_models::optim::OptimizerKind;
use ferroflow_paths::SchedulerKind;
use ndarray::{Array2, ArrayView2};
use serde::Serialize;

use crate::timing::{load_average, median_time};

/// Fresh data points of the histogram the total-variation distances compare against.
pub const TV_REFERENCE_POINTS: usize = 1_000_000;

/// The report's file names in `--out-dir`.
pub const REPORT_MARKDOWN: &str = "bench-discrete.md";
/// See [`REPORT_MARKDOWN`].
pub const REPORT_JSON: &str = "bench-discrete.json";

/// The folder of the peer's files in `--out-dir`.
pub const PEER_DIR: &str = "flow_matching";

/// Settings of `ferroflow bench discrete`.
#[derive(Clone, Debug)]
pub struct DiscreteBenchSettings {
    /// The discrete config to run (a `tokens_2d` target and the token MLP).
    pub config: PathBuf,
    /// Where the run, the peer's folder and the report are written (each replaced on every call).
    pub out_dir: PathBuf,
    /// Training steps instead of the config's (`None`: the config's).
    pub steps: Option<usize>,
    /// A Python with `flow_matching` (`.peers/python` of `cargo xtask setup --peers`); `None` runs ferroflow
    /// alone.
    pub peer_python: Option<String>,
    /// The peer's torch threads (0: torch's default, all cores, as its users run it).
    pub peer_threads: usize,
    /// Timed sampling runs of each program (the median is reported).
    pub repeats: usize,
}

/// One program's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    /// Training wall seconds per step.
    pub seconds_per_train_step: f64,
    /// Median wall seconds of sampling `sample.w2_samples` sequences.
    pub sample_seconds: f64,
    /// `sample_seconds / sample.steps`.
    pub seconds_per_sample_step: f64,
    /// Exact W2 of the decoded samples against the continuous reference.
    pub w2: f64,
    /// Total-variation distance of the samples' histogram to the reference histogram.
    pub tv: f64,
    /// Threads the program ran with.
    pub threads: usize,
    /// Scalar parameters of its network.
    pub parameters: i64,
    /// Its mean training loss over the last window of `train.log_every` steps.
    pub final_loss: Option<f64>,
    /// Positions of the samples still holding the mask after the last step.
    pub unrevealed: usize,
}

/// What the benchmark measured, as written to `bench-discrete.json`.
#[derive(Clone, Debug, Serialize)]
pub struct DiscreteBenchReport {
    /// The config's run name.
    pub run: String,
    /// Training steps of both programs.
    pub train_steps: usize,
    /// Batch size of both programs.
    pub batch_size: usize,
    /// Euler CTMC steps of both samplers.
    pub sample_steps: usize,
    /// Sequences sampled and measured per program.
    pub samples: usize,
    /// Bins per axis.
    pub bins: usize,
    /// Timed sampling runs per program.
    pub repeats: usize,
    /// W2 of a fresh discretised data sample against the reference: the floor the grid allows.
    pub floor_w2: f64,
    /// Total variation of a fresh data sample of the same size: the floor the sample size allows.
    pub floor_tv: f64,
    /// ferroflow's figures.
    pub ferroflow: Figures,
    /// flow_matching's figures, when it ran.
    pub flow_matching: Option<Figures>,
    /// Load averages (1, 5, 15 min) at the start and at the end.
    pub load_average: (String, String),
}

/// Runs the benchmark, prints its report (markdown) and writes it to `out_dir` as markdown and JSON;
/// `observers` watch ferroflow's training loop.
pub fn discrete_bench(
    settings: &DiscreteBenchSettings,
    observers: &mut [&mut dyn ferroflow_engine::train::Observer<ferroflow_engine::discrete::DiscreteModel>],
) -> Result<DiscreteBenchReport> {
    ensure!(settings.repeats >= 1, "--repeats must be at least 1");
    let mut config = RunConfig::load(&settings.config)?;
    let grid = grid_of(&config, &settings.config)?;
    if let Some(steps) = settings.steps {
        ensure!(steps >= 1, "--steps must be at least 1");
        config.train.steps = steps;
    }
    ensure!(
        config.model.kind == ModelKind::TokenMlp,
        "{}: model.kind must be \"token_mlp\" (the peer replicates the token MLP only)",
        settings.config.display()
    );
    if settings.peer_python.is_some() {
        check_peer_can_follow(&config, &settings.config)?;
    }
    clear_previous(&settings.out_dir, &config.run.name)?;
    config.run.out_dir = settings.out_dir.display().to_string();
    let load_at_start = load_average();

    let name = config.run.name.clone();
    println!("bench discrete: training {name} ({} steps)", config.train.steps);
    let run_dir = ferroflow_engine::run::train_new_discrete(&config, observers, None)?;
    let metrics = RunMetrics::read(&run_dir)?;
    let measure = Measure::new(&config, grid)?;

    // The run's own sampler (`eval`'s and `sample`'s), from the weights training saved (the EMA when enabled).
    let tokens = TrainedTokens::from_config(config.clone(), &run_dir)?;
    let sampling = TokenSampling::of(&config);
    let n = config.sample.w2_samples;
    println!("bench discrete: sampling {n} sequences with ferroflow");
    let (timing, samples) = median_time(settings.repeats, || {
        tokens.sample(n, &sampling, &mut Stream::EvalSource.rng(config.run.seed))
    })?;
    let (w2, tv) = measure.of_tokens(samples.view())?;
    let ours = Figures {
        seconds_per_train_step: seconds_per_step(&metrics)?,
        sample_seconds: timing.wall_seconds,
        seconds_per_sample_step: timing.wall_seconds / config.sample.steps as f64,
        w2,
        tv,
        threads: tch::get_num_threads() as usize,
        parameters: tokens.net.params().numel(),
        final_loss: metrics.final_loss,
        unrevealed: unrevealed(&config, samples.view()),
    };

    let peer = match &settings.peer_python {
        Some(python) => {
            let dir = settings.out_dir.join(PEER_DIR);
            run_peer(python, settings, &config, grid, ours.parameters, &dir)?;
            let (figures, samples) = read_peer(&dir, &config, grid, ours.parameters)?;
            let (w2, tv) = measure.of_tokens(samples.view())?;
            Some(Figures { w2, tv, ..figures })
        }
        None => None,
    };
    let report = DiscreteBenchReport {
        run: name,
        train_steps: config.train.steps,
        batch_size: config.train.batch_size,
        sample_steps: config.sample.steps,
        samples: n,
        bins: grid.bins,
        repeats: settings.repeats,
        floor_w2: measure.floor_w2,
        floor_tv: measure.floor_tv,
        ferroflow: ours,
        flow_matching: peer,
        load_average: (load_at_start, load_average()),
    };
    let markdown = markdown(&config, &report);
    println!("\n{markdown}");
    ferroflow_engine::files::write_atomic(&settings.out_dir.join(REPORT_MARKDOWN), markdown.as_bytes())?;
    ferroflow_engine::files::write_atomic(
        &settings.out_dir.join(REPORT_JSON),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    println!(
        "bench discrete: wrote {} and {}",
        settings.out_dir.join(REPORT_MARKDOWN).display(),
        settings.out_dir.join(REPORT_JSON).display()
    );
    Ok(report)
}

/// Removes what an earlier call left in `out_dir` (the run folder `name`, the peer's folder, the report), and
/// nothing else: `--out-dir` may name a folder that holds other things.
fn clear_previous(out_dir: &Path, name: &str) -> Result<()> {
    for folder in [name, PEER_DIR] {
        let path = out_dir.join(folder);
        if path.exists() {
            std::fs::remove_dir_all(&path).with_context(|| format!("cannot clear {}", path.display()))?;
        }
    }
    for file in [REPORT_MARKDOWN, REPORT_JSON] {
        let path = out_dir.join(file);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// The grid of the config's `tokens_2d` target (the only kind of token data measured here).
fn grid_of(config: &RunConfig, file: &Path) -> Result<Grid> {
    match &config.data.target {
        Dataset::Tokens2d { bins, half_width, .. } => Ok(Grid {
            bins: *bins,
            half_width: *half_width,
        }),
        other => bail!(
            "{}: data.target is {}; bench discrete measures tokens_2d targets only",
            file.display(),
            other.name()
        ),
    }
}

/// The continuous data set a `tokens_2d` target discretises.
fn base_dataset(config: &RunConfig) -> Result<Dataset> {
    match &config.data.target {
        Dataset::Tokens2d { dataset, .. } => Ok(dataset.dataset()),
        other => bail!("data.target is {}, not tokens_2d", other.name()),
    }
}

/// Refuses settings the peer script does not replicate, naming the config key.
fn check_peer_can_follow(config: &RunConfig, file: &Path) -> Result<()> {
    let refuse = |key: &str, detail: String| -> Result<()> {
        bail!(
            "{}: {key} = {detail}: the peer script does not replicate it, so the two runs would differ",
            file.display()
        )
    };
    match config.flow.scheduler {
        SchedulerKind::Polynomial { .. } | SchedulerKind::CondOt => {}
        other => refuse(
            "flow.scheduler",
            format!("{other:?} (flow_matching's mixture path needs a polynomial kappa_t)"),
        )?,
    }
    let optimizer = &config.train.optimizer;
    if optimizer.warmup_steps > 0 {
        refuse("train.optimizer.warmup_steps", optimizer.warmup_steps.to_string())?;
    }
    if optimizer.grad_clip > 0.0 {
        refuse("train.optimizer.grad_clip", optimizer.grad_clip.to_string())?;
    }
    Ok(())
}

fn seconds_per_step(metrics: &RunMetrics) -> Result<f64> {
    let seconds = metrics
        .train_seconds
        .context("metrics.json has no train_seconds")?;
    let steps = metrics.train_steps.context("metrics.json has no train_steps")?;
    Ok(seconds / steps.max(1) as f64)
}

/// The measuring code both programs' samples go through, with its references and floors.
struct Measure {
    grid: Grid,
    /// `sample.w2_samples` fresh continuous target points.
    reference: Array2<f32>,
    /// The histogram of [`TV_REFERENCE_POINTS`] fresh points, as probabilities.
    histogram: Vec<f64>,
    floor_w2: f64,
    floor_tv: f64,
}

impl Measure {
    fn new(config: &RunConfig, grid: Grid) -> Result<Self> {
        let dataset = base_dataset(config)?;
        let n = config.sample.w2_samples;
        let seed = config.run.seed;
        let big = n.max(TV_REFERENCE_POINTS);
        let fresh = Array2::from_shape_vec((big, 2), dataset.sample(big, &mut Stream::EvalTarget.rng(seed)))?;
        let reference = fresh.slice(ndarray::s![..n, ..]).to_owned();
        let histogram = probabilities(&grid, grid.encode_points(fresh.view()).view())?;
        let second = Array2::from_shape_vec((n, 2), dataset.sample(n, &mut Stream::Benchmark.rng(seed)))?;
        let second = grid.encode_points(second.view());
        let mut measure = Self {
            grid,
            reference,
            histogram,
            floor_w2: f64::NAN,
            floor_tv: f64::NAN,
        };
        (measure.floor_w2, measure.floor_tv) = measure.of_tokens(second.view())?;
        Ok(measure)
    }

    /// The W2 and total variation of token pairs `[n, 2]`. A position still holding the mask (token `bins`)
    /// decodes to just outside the window's edge, as [`Grid::decode_points`] has it.
    fn of_tokens(&self, tokens: ArrayView2<u32>) -> Result<(f64, f64)> {
        let points = self.grid.decode_points(tokens);
        let w2 = ferroflow_engine::run::w2_f32(points.view(), self.reference.view())?;
        let tv = total_variation(&probabilities(&self.grid, tokens)?, &self.histogram);
        Ok((w2, tv))
    }
}

/// The positions of `tokens` holding the mask (none with a uniform source).
fn unrevealed(config: &RunConfig, tokens: ArrayView2<u32>) -> usize {
    match config.flow.discrete.unwrap_or_default().source {
        TokenSource::Masked => {
            let mask = config.data.target.vocab_size().unwrap_or(0) as u32;
            tokens.iter().filter(|&&token| token == mask).count()
        }
        TokenSource::Uniform => 0,
    }
}

/// The histogram of token pairs `[n, 2]` over the `bins x bins` cells, as probabilities, with one more cell
/// (last) for the pairs that still hold the mask (token `bins`): the reference puts no mass there, so a position
/// the sampler left unrevealed counts fully against its sample.
fn probabilities(grid: &Grid, tokens: ArrayView2<u32>) -> Result<Vec<f64>> {
    ensure!(
        tokens.ncols() == 2 && tokens.nrows() > 0,
        "token pairs of shape {:?}, expected [n > 0, 2]",
        tokens.dim()
    );
    let mut counts = vec![0.0; grid.bins * grid.bins + 1];
    for row in tokens.rows() {
        let (x, y) = (row[0] as usize, row[1] as usize);
        ensure!(
            x <= grid.bins && y <= grid.bins,
            "token pair ({x}, {y}) outside the {} bins and the mask",
            grid.bins
        );
        let cell = if x == grid.bins || y == grid.bins {
            grid.bins * grid.bins
        } else {
            x * grid.bins + y
        };
        counts[cell] += 1.0;
    }
    let total = tokens.nrows() as f64;
    Ok(counts.into_iter().map(|c| c / total).collect())
}

/// Half the L1 distance between two histograms.
fn total_variation(p: &[f64], q: &[f64]) -> f64 {
    0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>()
}

/// Writes the peer's folder (data pool and settings) and runs the peer script in it.
fn run_peer(
    python: &str,
    settings: &DiscreteBenchSettings,
    config: &RunConfig,
    grid: Grid,
    parameters: i64,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pool = config.train.steps * config.train.batch_size;
    let points = base_dataset(config)?.sample(pool, &mut Stream::PeerData.rng(config.run.seed));
    ferroflow_engine::files::write_npy(
        &dir.join("x1_pool.npy"),
        Array2::from_shape_vec((pool, 2), points)?.view(),
    )?;
    let discrete = config.flow.discrete.unwrap_or_default();
    let exponent = match config.flow.scheduler {
        SchedulerKind::Polynomial { exponent } => exponent,
        SchedulerKind::CondOt => 1.0,
        other => bail!("flow.scheduler {other:?} has no polynomial kappa_t"),
    };
    let mlp = &config.model.token_mlp;
    let optimizer = &config.train.optimizer;
    let peer_settings = serde_json::json!({
        "bins": grid.bins,
        "half_width": grid.half_width,
        "length": 2,
        "source": match discrete.source { TokenSource::Masked => "masked", TokenSource::Uniform => "uniform" },
        "loss": match discrete.loss {
            DiscreteLoss::CrossEntropy => "cross_entropy",
            DiscreteLoss::GeneralizedKl => "generalized_kl",
        },
        "kappa_exponent": exponent,
        "time_sampling": match config.flow.time_sampling {
            TimeSampling::Uniform {} => serde_json::json!({"kind": "uniform"}),
            TimeSampling::LogitNormal { mean, std } =>
                serde_json::json!({"kind": "logit_normal", "mean": mean, "std": std}),
        },
        "embedding_dim": mlp.embedding_dim,
        "width": mlp.width,
        "depth": mlp.depth,
        "activation": serde_json::to_value(mlp.activation)?,
        "time_embedding": serde_json::to_value(mlp.time_embedding)?,
        "parameters": parameters,
        "optimizer": match optimizer.kind { OptimizerKind::Adam => "adam", OptimizerKind::AdamW => "adamw" },
        "lr": optimizer.lr,
        "beta1": optimizer.beta1,
        "beta2": optimizer.beta2,
        "eps": optimizer.eps,
        "weight_decay": optimizer.weight_decay,
        "ema_decay": config.train.ema_decay,
        "steps": config.train.steps,
        "batch_size": config.train.batch_size,
        "seed": config.run.seed,
        "log_every": config.train.log_every.max(1),
        "sample_steps": config.sample.steps,
        "n_samples": config.sample.w2_samples,
        "temperature": config.sample.temperature,
        "repeats": settings.repeats,
        "threads": settings.peer_threads,
    });
    ferroflow_engine::files::write_atomic(
        &dir.join("settings.json"),
        serde_json::to_string_pretty(&peer_settings)?.as_bytes(),
    )?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/flow_matching_discrete.py");
    println!(
        "bench discrete: running flow_matching on {} ({} steps)",
        config.run.name, config.train.steps
    );
    super::run_peer_script(python, script, &[dir.display().to_string()])?;
    Ok(())
}

/// The peer's figures from `peer.json` (W2 and total variation are filled in by the caller) and its
/// samples from `samples.npy`, checked: `[n_samples, 2]` whole token ids inside the vocabulary, and a network
/// with as many parameters as ferroflow's.
fn read_peer(dir: &Path, config: &RunConfig, grid: Grid, parameters: i64) -> Result<(Figures, Array2<u32>)> {
    let path = dir.join("peer.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let number = |key: &str| {
        json[key]
            .as_f64()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .with_context(|| format!("{} has no non-negative number `{key}`", path.display()))
    };
    let peer_parameters = json["parameters"]
        .as_i64()
        .with_context(|| format!("{} has no whole number `parameters`", path.display()))?;
    ensure!(
        peer_parameters == parameters,
        "{}: the peer's network has {peer_parameters} parameters, ferroflow's {parameters}: not the same \
         network, so the comparison would not be like with like",
        path.display()
    );
    let steps = config.train.steps;
    let sample_seconds = number("sample_s")?;
    let figures = Figures {
        seconds_per_train_step: number("train_s")? / steps.max(1) as f64,
        sample_seconds,
        seconds_per_sample_step: sample_seconds / config.sample.steps as f64,
        w2: f64::NAN,
        tv: f64::NAN,
        threads: number("threads")? as usize,
        parameters: peer_parameters,
        final_loss: json["final_loss"].as_f64(),
        unrevealed: 0,
    };
    let samples_path = dir.join("samples.npy");
    let samples = ferroflow_engine::files::read_npy(&samples_path)
        .with_context(|| format!("cannot read the peer's samples {}", samples_path.display()))?;
    let n = config.sample.w2_samples;
    ensure!(
        samples.dim() == (n, 2),
        "{}: the peer wrote samples of shape {:?}, expected ({n}, 2)",
        samples_path.display(),
        samples.dim()
    );
    let mut tokens = Array2::zeros((n, 2));
    for (((row, column), &value), token) in samples.indexed_iter().zip(tokens.iter_mut()) {
        ensure!(
            value.fract() == 0.0 && value >= 0.0 && (value as usize) < grid.bins,
            "{}: row {row}, column {column} is {value}, not a token id in 0..{} (the vocabulary)",
            samples_path.display(),
            grid.bins
        );
        *token = value as u32;
    }
    Ok((figures, tokens))
}

fn markdown(config: &RunConfig, report: &DiscreteBenchReport) -> String {
    let mut out = String::new();
    let discrete = config.flow.discrete.unwrap_or_default();
    out.push_str(&format!(
        "## ferroflow bench discrete\n\nRun `{}`: {} bins per axis, {:?} source, {:?} loss, kappa_t from {:?}, \
         token MLP ({} x {}, embeddings of {}), batch {}, {} training steps, EMA decay {}; {} Euler CTMC steps, \
         {} sequences sampled per program{}. Timings: training from each program's own clock (in-process), \
         sampling the median of {} runs. Load average (1, 5, 15 min) at the start: {}; at the end: {} (a shared \
         machine: wall times include waits for a core).\n\n",
        report.run,
        report.bins,
        discrete.source,
        discrete.loss,
        config.flow.scheduler,
        config.model.token_mlp.depth,
        config.model.token_mlp.width,
        config.model.token_mlp.embedding_dim,
        report.batch_size,
        report.train_steps,
        config.train.ema_decay,
        report.sample_steps,
        report.samples,
        if report.flow_matching.is_some() {
            "; flow_matching 1.0.10 side by side"
        } else {
            ""
        },
        report.repeats,
        report.load_average.0,
        report.load_average.1,
    ));
    out.push_str(
        "| program | threads | parameters | final loss (last log window) | ms/train step | ms/sampling step | sampling s | W2 | TV \
         | unrevealed |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    out.push_str(&format!(
        "| data (floor) | - | - | - | - | - | - | {:.4} | {:.4} | - |\n",
        report.floor_w2, report.floor_tv
    ));
    let mut row = |name: &str, f: &Figures| {
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.4} | {:.4} | {} |\n",
            f.threads,
            f.parameters,
            f.final_loss.map_or_else(|| "-".to_owned(), |l| format!("{l:.4}")),
            f.seconds_per_train_step * 1e3,
            f.seconds_per_sample_step * 1e3,
            f.sample_seconds,
            f.w2,
            f.tv,
            f.unrevealed,
        ));
    };
    row("ferroflow", &report.ferroflow);
    if let Some(peer) = &report.flow_matching {
        row("flow_matching", peer);
        out.push_str(&format!(
            "\nSpeed ratio (flow_matching time / ferroflow time, > 1: ferroflow faster): training step {:.2}x, \
             sampling step {:.2}x.\n",
            peer.seconds_per_train_step / report.ferroflow.seconds_per_train_step,
            peer.seconds_per_sample_step / report.ferroflow.seconds_per_sample_step,
        ));
        if peer.threads != report.ferroflow.threads {
            out.push_str(&format!(
                "The two programs ran with different thread counts ({} and {}): the ratios compare two settings, \
                 not two programs (`--peer-threads {}` runs the peer like ferroflow; on a loaded machine, \
                 threads that wait for each other can make the larger count much slower).\n",
                report.ferroflow.threads, peer.threads, report.ferroflow.threads
            ));
        }
    }
    out.push_str(
        "\nW2: exact, decoded bin centres against the same fresh continuous data points; TV: total variation \
         between the samples' histogram over the bins and that of 1,000,000 fresh discretised data points. The \
         floor row is a fresh discretised data sample of the same size: the best W2 the grid and the best TV the \
         sample size allow. Unrevealed: positions still holding the mask after the last sampling step, a check \
         (they would decode just outside the window and count fully in TV): flow_matching's solver draws every \
         position from the posterior at its last step, and ferroflow's exact jump probability reveals every \
         position by t = 1, so both should show 0.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_variation_of_histograms() {
        let grid = Grid {
            bins: 2,
            half_width: 1.0,
        };
        let a = probabilities(&grid, ndarray::array![[0u32, 0], [1, 1]].view()).unwrap();
        let b = probabilities(&grid, ndarray::array![[0u32, 0], [0, 1]].view()).unwrap();
        assert_eq!(a, [0.5, 0.0, 0.0, 0.5, 0.0]);
        assert_eq!(total_variation(&a, &a), 0.0);
        assert_eq!(total_variation(&a, &b), 0.5);
        // The mask (token 2 here) goes to the last cell, which the data never fills.
        let masked = probabilities(&grid, ndarray::array![[0u32, 2], [1, 1]].view()).unwrap();
        assert_eq!(masked, [0.0, 0.0, 0.0, 0.5, 0.5]);
        assert!(probabilities(&grid, ndarray::array![[0u32, 3]].view()).is_err());
    }
}
