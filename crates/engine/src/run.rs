//! Whole runs: train a config into a new run folder (or resume one), then write its loss curve, samples and
//! metrics; evaluate a finished run against fresh target samples.
//!
//! Pictures are not drawn here (the engine does not know plotters): the report crate draws a run's pictures
//! from the files this module writes, and the program calls it after training.

use std::path::{Path, PathBuf};
use std::time::Instant;

use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, anyhow, bail};
use ndarray::{Array2, ArrayView2};

use crate::config::RunConfig;
use crate::distributed::{Launch, agree_any};
use crate::files::{write_atomic, write_npy};
use crate::lock::{LOCK_FILE, LockError, RunLock, is_temporary, remove_temporaries};
use crate::metrics::RunMetrics;
use crate::sample::{TrainedFlow, reference_samples, to_array};
use crate::stream::Stream;
use crate::train::{CHECKPOINT_FILE, FlowModel, Observer, Start, TrainSummary, train};

/// The file holding the samples drawn after training (`[n_samples, dim]` float32).
pub const SAMPLES_FILE: &str = "samples.npy";
/// The file holding the loss curve (`step,loss` rows).
pub const LOSS_FILE: &str = "loss.csv";
/// The file holding the resolved config.
pub const CONFIG_FILE: &str = "config.toml";

/// Trains `config` into a new folder `out_dir/name` and finishes it (loss curve, samples, metrics).
/// `observers` watch the training loop (progress display, ...) besides the engine's own; raising `stop`
/// (Ctrl-C) checkpoints the current step and ends with [`crate::error::TrainError::Interrupted`].
///
/// The folder is locked while this runs. A folder that exists is refused unless it holds nothing but what
/// an interrupted start leaves before its config is written (its lock file, temporaries, and the step-0
/// checkpoint written just before the config): then it is taken and started afresh.
pub fn train_new(
    config: &RunConfig,
    observers: &mut [&mut dyn Observer<FlowModel>],
    stop: Option<&AtomicBool>,
) -> Result<PathBuf> {
    train_new_on(config, &Launch::single(), observers, stop)
}

/// [`train_new`] as one rank of a data-parallel job: every rank calls it with the same config; rank 0 alone
/// creates, locks, writes and finishes the folder, and its config (with the launch's world size and backend
/// recorded in `run.world_size` and `run.backend`) is the one every rank trains. A failure on any rank ends
/// every rank with an error naming it.
pub fn train_new_on(
    config: &RunConfig,
    launch: &Launch<'_>,
    observers: &mut [&mut dyn Observer<FlowModel>],
    stop: Option<&AtomicBool>,
) -> Result<PathBuf> {
    train_new_with(config, launch, observers, stop, train, finish)
}

/// [`train_new`] for a discrete run (a token target): trained by [`crate::discrete::train`], finished by
/// writing `loss.csv`, `samples.npy` (`[n_samples, length]` token ids as float32, drawn with the Euler CTMC
/// sampler from [`Stream::TrainSamples`]), for words `samples.txt` (one word a line, padding stripped), and
/// `metrics.json`.
pub fn train_new_discrete(
    config: &RunConfig,
    observers: &mut [&mut dyn Observer<crate::discrete::DiscreteModel>],
    stop: Option<&AtomicBool>,
) -> Result<PathBuf> {
    train_new_discrete_on(config, &Launch::single(), observers, stop)
}

/// [`train_new_discrete`] as one rank of a data-parallel job (see [`train_new_on`]).
pub fn train_new_discrete_on(
    config: &RunConfig,
    launch: &Launch<'_>,
    observers: &mut [&mut dyn Observer<crate::discrete::DiscreteModel>],
    stop: Option<&AtomicBool>,
) -> Result<PathBuf> {
    if !config.data.target.is_tokens() {
        bail!(
            "data.target is {}, not a token data set",
            config.data.target.name()
        );
    }
    train_new_with(
        config,
        launch,
        observers,
        stop,
        crate::discrete::train,
        finish_discrete,
    )
}

/// The file holding a words run's samples, one word a line.
pub const WORDS_FILE: &str = "samples.txt";

/// The training function of a run whose model observers see as `M`.
type TrainFn<M> = fn(
    &RunConfig,
    &Path,
    Start,
    Option<&AtomicBool>,
    &Launch<'_>,
    &mut [&mut dyn Observer<M>],
) -> std::result::Result<TrainSummary, crate::error::TrainError>;

/// The config every rank trains: rank 0's, sent to the others (so a rank that read another file, or another
/// version of it, cannot train something else), with the launch recorded in it.
/// Rank 0 passes its config; the other ranks may pass `None`.
fn launch_config(config: Option<&RunConfig>, launch: &Launch<'_>) -> Result<RunConfig> {
    let comm = launch.comm;
    let mut config = if comm.world_size() > 1 {
        let mut text = match (launch.is_root(), config) {
            (true, Some(config)) => config.to_toml()?.into_bytes(),
            (true, None) => bail!("rank 0 has no config to send"),
            (false, _) => Vec::new(),
        };
        comm.broadcast_bytes(&mut text, 0)?;
        let text = String::from_utf8(text).context("rank 0's config is not UTF-8")?;
        RunConfig::parse(&text, Path::new("rank 0's config"))?
    } else {
        config.context("no config")?.clone()
    };
    config.run.world_size = comm.world_size();
    config.run.backend = comm.backend().name().to_owned();
    Ok(config)
}

fn train_new_with<M: ?Sized>(
    config: &RunConfig,
    launch: &Launch<'_>,
    observers: &mut [&mut dyn Observer<M>],
    stop: Option<&AtomicBool>,
    train: TrainFn<M>,
    finish: fn(&RunConfig, &Path, &TrainSummary) -> Result<()>,
) -> Result<PathBuf> {
    let comm = launch.comm;
    let checked = config.validate().map_err(anyhow::Error::from).and_then(|()| {
        config.to_toml()?;
        Ok(crate::train::resolve_device(&config.run.device)?)
    });
    agree_any(comm, checked)??;
    let config = &launch_config(Some(config), launch)?;
    let run_dir = Path::new(&config.run.out_dir).join(&config.run.name);
    // Rank 0 alone claims and cleans the folder; every rank learns whether it could.
    let claimed = if launch.is_root() {
        claim_new_run_dir(Path::new(&config.run.out_dir), &config.run.name).and_then(|(dir, lock)| {
            tell(observers, lock.note());
            clean_temporaries(&dir, observers)?;
            Ok(Some(lock))
        })
    } else {
        Ok(None)
    };
    let lock = agree_any(comm, claimed)??;
    let trained = train(config, &run_dir, Start::Fresh, stop, launch, observers);
    let summary = match trained {
        Ok(summary) => summary,
        Err(err) => {
            // Failed before its first checkpoint: leave no empty folder behind.
            if let Some(lock) = lock
                && !run_dir.join(CHECKPOINT_FILE).exists()
                && !run_dir.join(CONFIG_FILE).exists()
            {
                let _ = remove_temporaries(&run_dir);
                drop(lock);
                let _ = std::fs::remove_dir(&run_dir);
            }
            return Err(err.into());
        }
    };
    if launch.is_root() {
        finish(config, &run_dir, &summary)?;
    }
    drop(lock);
    Ok(run_dir)
}

/// Continues the run in `run_dir` from its last checkpoint (or from step 0 when it has a config but no
/// checkpoint yet) to `config.train.steps`, or to `steps` when given: the run's `config.toml` then says so,
/// but only once the checkpoint has loaded and fits (a refused resume changes nothing). A discrete run (a token
/// target) is refused here, naming [`resume_discrete`]; [`is_discrete_run`] tells them apart.
pub fn resume(
    run_dir: &Path,
    steps: Option<usize>,
    observers: &mut [&mut dyn Observer<FlowModel>],
    stop: Option<&AtomicBool>,
) -> Result<PathBuf> {
    resume_on(run_dir, steps, &Launch::single(), observers, stop)
}

/// [`resume`] as one rank of a data-parallel job: rank 0 alone reads, locks and writes the folder, and
/// sends its config to the others. A checkpoint written by any number of ranks resumes on any other number
/// (the batch of each step is the same global batch; only its split differs).
pub fn resume_on(
    run_dir: &Path,
    steps: Option<usize>,
    launch: &Launch<'_>,
    observers: &mut [&mut dyn Observer<FlowModel>],
    stop: Option<&AtomicBool>,
) -> Result<PathBuf> {
    resume_with(run_dir, steps, launch, observers, stop, false, train, finish)
}

/// [`resume`] for a discrete run.
pub fn resume_discrete(
    run_dir: &Path,
    steps: Option<usize>,
    observers: &mut [&mut dyn Observer<crate::discrete::DiscreteModel>],
    stop: Option<&AtomicBool>,
) -> Result<PathBuf> {
    resume_discrete_on(run_dir, steps, &Launch::single(), observers, stop)
}

/// [`resume_discrete`] as one rank of a data-parallel job (see [`resume_on`]).
pub fn resume_discrete_on(
    run_dir: &Path,
    steps: Option<usize>,
    launch: &Launch<'_>,
    observers: &mut [&mut dyn Observer<crate::discrete::DiscreteModel>],
    stop: Option<&AtomicBool>,
) -> Result<PathBuf> {
    resume_with(
        run_dir,
        steps,
        launch,
        observers,
        stop,
        true,
        crate::discrete::train,
        finish_discrete,
    )
}

/// Whether the run in `run_dir` is a discrete run (its `config.toml` has a token target).
pub fn is_discrete_run(run_dir: &Path) -> Result<bool> {
    let config_path = run_dir.join(CONFIG_FILE);
    if !config_path.exists() {
        bail!(
            "{} has no {CONFIG_FILE}: it is not a run folder, or training never started there (the config is \
             written after the first checkpoint); start it again with `ferroflow train --config ...`",
            run_dir.display()
        );
    }
    Ok(RunConfig::load(&config_path)?.data.target.is_tokens())
}

#[allow(clippy::too_many_arguments)]
fn resume_with<M: ?Sized>(
    run_dir: &Path,
    steps: Option<usize>,
    launch: &Launch<'_>,
    observers: &mut [&mut dyn Observer<M>],
    stop: Option<&AtomicBool>,
    discrete: bool,
    train: TrainFn<M>,
    finish: fn(&RunConfig, &Path, &TrainSummary) -> Result<()>,
) -> Result<PathBuf> {
    let comm = launch.comm;
    // Rank 0 alone opens the folder; the others wait for its config.
    let opened = if launch.is_root() {
        open_for_resume(run_dir, steps, observers, discrete).map(Some)
    } else {
        Ok(None)
    };
    let opened = agree_any(comm, opened)??;
    let (config, lock) = match opened {
        Some((config, lock)) => (Some(config), Some(lock)),
        None => (None, None),
    };
    let config = launch_config(config.as_ref(), launch)?;
    let summary = train(&config, run_dir, Start::Resume, stop, launch, observers)
        .with_context(|| format!("cannot resume {}", run_dir.display()))?;
    if launch.is_root() {
        finish(&config, run_dir, &summary)?;
    }
    drop(lock);
    Ok(run_dir.to_path_buf())
}

/// Locks a run folder, loads its config (with `--steps` applied) and cleans it for a resume.
fn open_for_resume<M: ?Sized>(
    run_dir: &Path,
    steps: Option<usize>,
    observers: &mut [&mut dyn Observer<M>],
    discrete: bool,
) -> Result<(RunConfig, RunLock)> {
    if !run_dir.is_dir() {
        bail!("{} is not a run folder", run_dir.display());
    }
    let lock = RunLock::acquire(run_dir)?;
    tell(observers, lock.note());
    let config_path = run_dir.join(CONFIG_FILE);
    if !config_path.exists() {
        bail!(
            "{} has no {CONFIG_FILE}: training never started there (it is written after the first checkpoint); \
             start it again with `ferroflow train --config ...`",
            run_dir.display()
        );
    }
    let mut config = RunConfig::load(&config_path)?;
    if config.data.target.is_tokens() != discrete {
        bail!(
            "{}: data.target = {} is {}, which this resume does not train",
            config_path.display(),
            config.data.target.name(),
            if discrete {
                "not a token data set"
            } else {
                "a token data set (a discrete run)"
            }
        );
    }
    if let Some(steps) = steps {
        config.train.steps = steps;
        config.validate().context("--steps")?;
        config.to_toml().context("--steps")?;
    }
    clean_temporaries(run_dir, observers)?;
    if !run_dir.join(CHECKPOINT_FILE).exists() {
        tell(
            observers,
            Some(&format!(
                "{} has no checkpoint yet: training from step 0",
                run_dir.display()
            )),
        );
    }
    Ok((config, lock))
}

/// Creates `out_dir/name` and locks it, or takes an existing one that holds only the leftovers of a start
/// that died before its first checkpoint. Exactly one of several processes racing for one name wins.
fn claim_new_run_dir(out_dir: &Path, name: &str) -> Result<(PathBuf, RunLock)> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let dir = out_dir.join(name);
    let exists = |detail: &str| {
        anyhow!(
            "run folder {} exists already (key run.name = {name:?}){detail}: choose another name, remove it, \
             or continue it with `ferroflow train --resume {}`",
            dir.display(),
            dir.display()
        )
    };
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    let lock = match RunLock::acquire(&dir) {
        Ok(lock) => lock,
        Err(LockError::Busy { .. }) => return Err(exists(" and another process is training in it")),
        Err(e) => return Err(e.into()),
    };
    let entries = std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if file_name != LOCK_FILE && file_name != CHECKPOINT_FILE && !is_temporary(&file_name) {
            return Err(exists(""));
        }
    }
    Ok((dir, lock))
}

/// Removes the temporaries that a process killed while writing left in the (locked) folder, saying so.
fn clean_temporaries<M: ?Sized>(run_dir: &Path, observers: &mut [&mut dyn Observer<M>]) -> Result<()> {
    let removed =
        remove_temporaries(run_dir).with_context(|| format!("cannot clean {}", run_dir.display()))?;
    if removed > 0 {
        tell(
            observers,
            Some(&format!(
                "{}: removed {removed} temporary file(s) left by an interrupted write",
                run_dir.display()
            )),
        );
    }
    Ok(())
}

/// Hands a message to every observer.
fn tell<M: ?Sized>(observers: &mut [&mut dyn Observer<M>], note: Option<&str>) {
    if let Some(note) = note {
        for observer in observers.iter_mut() {
            observer.on_note(note);
        }
    }
}

/// Writes the loss curve, the samples and the training metrics.
fn finish(config: &RunConfig, run_dir: &Path, summary: &TrainSummary) -> Result<()> {
    let mut csv = String::from("step,loss\n");
    for point in &summary.loss_curve {
        csv.push_str(&format!("{},{}\n", point.step, point.loss));
    }
    write_atomic(&run_dir.join(LOSS_FILE), csv.as_bytes())?;
    let flow = TrainedFlow::from_config(config.clone(), run_dir)?;
    let started = Instant::now();
    let x0 = flow.source_points(config.sample.n_samples, Stream::TrainSamples);
    let solution = flow.integrate(x0, &config.sample.ode_options(), None)?;
    let sample_seconds = started.elapsed().as_secs_f64();
    write_npy(&run_dir.join(SAMPLES_FILE), to_array(&solution.state).view())?;
    RunMetrics {
        train_steps: Some(summary.total_steps),
        train_seconds: Some(summary.total_seconds),
        train_steps_per_second: Some(summary.steps_per_second()),
        device: Some(crate::train::device_name(flow.device())),
        world_size: Some(config.run.world_size),
        backend: Some(config.run.backend.clone()),
        final_loss: summary.loss_curve.last().map(|p| p.loss),
        sample_seconds: Some(sample_seconds),
        sample_field_evals: Some(solution.stats.field_evals),
        ..RunMetrics::default()
    }
    .merge(run_dir)?;
    Ok(())
}

/// Writes a discrete run's loss curve, samples and metrics (see [`train_new_discrete`]).
fn finish_discrete(config: &RunConfig, run_dir: &Path, summary: &TrainSummary) -> Result<()> {
    use crate::discrete::{build_token_net, path_and_kappa, sample_tokens};
    let mut csv = String::from("step,loss\n");
    for point in &summary.loss_curve {
        csv.push_str(&format!("{},{}\n", point.step, point.loss));
    }
    write_atomic(&run_dir.join(LOSS_FILE), csv.as_bytes())?;
    let net = build_token_net(config)?;
    let weights = ferroflow_models::checkpoint::load_tensors(&run_dir.join(crate::train::MODEL_FILE))?;
    let params = net.params();
    let sampling = params.flat().zeros_like();
    params.load_named_into(&sampling, weights, &run_dir.join(crate::train::MODEL_FILE))?;
    let (path, kappa) = path_and_kappa(config)?;
    let started = Instant::now();
    let samples = sample_tokens(
        &*net,
        &params.views_of(&sampling),
        &path,
        &kappa,
        config.sample.n_samples,
        &crate::discrete::TokenSampling::of(config),
        &mut Stream::TrainSamples.rng(config.run.seed),
    )?;
    let sample_seconds = started.elapsed().as_secs_f64();
    write_npy(&run_dir.join(SAMPLES_FILE), samples.mapv(|t| t as f32).view())?;
    if matches!(config.data.target, crate::data::Dataset::Words { .. }) {
        let mut text = String::new();
        for row in samples.rows() {
            text.push_str(&crate::tokens::decode_word(&row.to_vec()));
            text.push('\n');
        }
        write_atomic(&run_dir.join(WORDS_FILE), text.as_bytes())?;
    }
    RunMetrics {
        train_steps: Some(summary.total_steps),
        train_seconds: Some(summary.total_seconds),
        train_steps_per_second: Some(summary.steps_per_second()),
        device: Some(crate::train::device_name(params.device())),
        world_size: Some(config.run.world_size),
        backend: Some(config.run.backend.clone()),
        final_loss: summary.loss_curve.last().map(|p| p.loss),
        sample_seconds: Some(sample_seconds),
        ..RunMetrics::default()
    }
    .merge(run_dir)?;
    Ok(())
}

/// The exact 2-Wasserstein distance between two equal-size `f32` samples (the coupling crate's
/// [`ferroflow_coupling::w2`] on their `f64` copies).
pub fn w2_f32(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Result<f64> {
    let widen = |x: ArrayView2<f32>| -> Array2<f64> { x.mapv(f64::from) };
    Ok(ferroflow_coupling::w2(widen(a).view(), widen(b).view())?)
}

/// Samples `sample.w2_samples` points from the run (source points from [`Stream::EvalSource`]) and measures
/// W2 against as many fresh target samples ([`Stream::EvalTarget`]); merges the result into `metrics.json`.
pub fn evaluate(run_dir: &Path) -> Result<RunMetrics> {
    let _lock = RunLock::acquire(run_dir)?;
    let flow = TrainedFlow::load(run_dir)?;
    if let Some(manifold) = flow.config.data.manifold.clone() {
        return evaluate_on_manifold(&flow, &manifold, run_dir);
    }
    let config = flow.config.clone();
    let n_samples = config.sample.w2_samples;
    let started = Instant::now();
    let x0 = flow.source_points(n_samples, Stream::EvalSource);
    let solution = flow.integrate(x0, &config.sample.ode_options(), None)?;
    let generated = to_array(&solution.state);
    let reference = reference_samples(&config, n_samples);
    let w2 = w2_f32(generated.view(), reference.view())?;
    RunMetrics {
        w2: Some(w2),
        w2_samples: Some(n_samples),
        eval_solver: Some(format!("{:?}", config.sample.solver).to_lowercase()),
        eval_seconds: Some(started.elapsed().as_secs_f64()),
        ..RunMetrics::default()
    }
    .merge(run_dir)
}

/// Held-out samples for the likelihood of a run on a manifold.
pub const MANIFOLD_NLL_SAMPLES: usize = 2000;
/// Samples of the Monte Carlo entropy of the target.
pub const ENTROPY_SAMPLES: usize = 200_000;

/// [`evaluate`] on a manifold: the exact W2 with geodesic cost between `sample.w2_samples` generated and
/// fresh target points, the held-out NLL (exact Riemannian divergence) of [`MANIFOLD_NLL_SAMPLES`] fresh target
/// points next to the target's entropy, and their difference, the estimate of KL(target || model).
fn evaluate_on_manifold(
    flow: &TrainedFlow,
    spec: &crate::manifold::ManifoldSpec,
    run_dir: &Path,
) -> Result<RunMetrics> {
    let config = &flow.config;
    let manifold = spec.build()?;
    let n_samples = config.sample.w2_samples;
    let started = Instant::now();
    let x0 = flow.source_points(n_samples, Stream::EvalSource);
    let solution = flow.integrate(x0, &config.sample.ode_options(), None)?;
    let generated = crate::sample::to_array(&solution.state).mapv(f64::from);
    let reference = manifold.project_batch(reference_samples(config, n_samples).mapv(f64::from).view())?;
    let w2 = crate::manifold::geodesic_w2(manifold.as_ref(), generated.view(), reference.view())
        .map_err(anyhow::Error::msg)?;
    let held_out = reference
        .slice(ndarray::s![..MANIFOLD_NLL_SAMPLES.min(n_samples), ..])
        .to_owned();
    let method = crate::manifold::ManifoldMethod::of(config.sample.solver)
        .context("the config's solver has no manifold version")?;
    let log_density = crate::manifold::log_likelihood_on_manifold(
        flow,
        spec,
        held_out.view(),
        ferroflow_models::DivergenceEstimator::Exact,
        config.sample.steps,
        method,
        config.run.seed,
    )
    .map_err(anyhow::Error::msg)?;
    let nll = -log_density.mean().unwrap_or(f64::NAN);
    let nll_stderr = (log_density.var(1.0) / log_density.len() as f64).sqrt();
    let density = crate::manifold::density_of(&config.data.target, "data.target")?;
    let entropy = density.entropy_monte_carlo(ENTROPY_SAMPLES, &mut Stream::Report.rng(config.run.seed))?;
    RunMetrics {
        w2: Some(w2),
        w2_samples: Some(n_samples),
        eval_solver: Some(format!("{:?}", config.sample.solver).to_lowercase()),
        nll: Some(nll),
        target_entropy: Some(entropy.estimate),
        kl_estimate: Some(nll - entropy.estimate),
        kl_stderr: Some(nll_stderr.hypot(entropy.standard_error)),
        eval_seconds: Some(started.elapsed().as_secs_f64()),
        ..RunMetrics::default()
    }
    .merge(run_dir)
}
