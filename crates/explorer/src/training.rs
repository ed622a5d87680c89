//! Live training from the page: a request becomes a normal run config, the engine's `run::train_new` trains it
//! into a run folder on a blocking thread, and an [`Observer`] of the training loop sends progress (loss,
//! steps/s) and sample snapshots of the current network into a channel that the server streams to the page.
//!
//! Progress is sent at most every [`PROGRESS_EVERY`] and dropped rather than waited for when the page reads
//! slowly, so a slow page never slows training; snapshots (a short Euler solve of the current network) cost
//! a few milliseconds every [`SNAPSHOT_EVERY`]. Raising the stop flag (the Stop button, or the page going
//! away) makes the engine checkpoint the current step and end the run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferroflow_coupling::{CouplingConfig, IndependentOrder, SinkhornConfig, SolverKind};
use ferroflow_engine::config::{
    DataSection, ModelSection, RunConfig, RunSection, SampleSection, TrainSection,
};
use ferroflow_engine::error::TrainError;
use ferroflow_engine::sample::output_velocity;
use ferroflow_engine::train::FlowModel;
use ferroflow_engine::train::observe::{Journal, Observer, StepInfo};
use ferroflow_paths::{ConditionalPath, Prediction};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
use tokio::sync::mpsc;

use crate::error::{ApiError, check_range, check_real};
use crate::views::{PathSpec, TargetSpec};

/// The shortest interval between two progress events (10 a second).
pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// The shortest interval between two sample snapshots.
pub const SNAPSHOT_EVERY: Duration = Duration::from_millis(400);
/// Points in a sample snapshot.
pub const SNAPSHOT_POINTS: usize = 400;
/// Euler steps of a sample snapshot.
pub const SNAPSHOT_STEPS: usize = 16;
/// The sources the page offers for training (the data sets; a drawn set is a target only).
pub const SOURCES: [&str; 7] = [
    "gaussian",
    "8gaussians",
    "moons",
    "scurve",
    "ring",
    "checkerboard",
    "mixtures",
];
/// The couplings the page offers.
pub const COUPLINGS: [&str; 3] = ["independent", "exact_ot", "sinkhorn"];

/// What the page asks to train.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    /// The page's client id (8 to 64 letters, digits, `-` or `_`): one training per client at a time.
    pub client: String,
    /// The target.
    pub target: TargetSpec,
    /// The source, one of [`SOURCES`] (default `gaussian`, N(0, I)). The engine trains from any of them
    /// (not with the `one_sided` path, which needs N(0, I)); the likelihood views need a Gaussian source.
    #[serde(default = "gaussian_source")]
    pub source: TargetSpec,
    /// The path.
    pub path: PathSpec,
    /// One of [`COUPLINGS`].
    pub coupling: String,
    /// Sinkhorn's entropic regularisation, in `[1e-3, 10]` (default 0.05).
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
    /// Hidden width of the MLP, 4..=256.
    pub width: i64,
    /// Hidden layers of the MLP, 1..=6.
    pub depth: i64,
    /// Optimizer steps, 1..=20000.
    pub steps: i64,
    /// Batch size, 8..=1024.
    pub batch_size: i64,
    /// Adam's learning rate, in `[1e-5, 0.1]` (default 1e-3).
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    /// The run's seed.
    #[serde(default)]
    pub seed: u64,
    /// What the network predicts: `velocity` (default), `x1`, or `epsilon` (DDPM's noise prediction; with the
    /// variance-preserving path and the `ddpm` sampler this is a DDPM).
    #[serde(default = "default_prediction")]
    pub prediction: String,
    /// Train a class-conditional network on the target's labels (8gaussians, moons, mixtures), labels dropped
    /// to the null class with probability [`LABEL_DROPOUT`], for classifier-free guidance.
    #[serde(default)]
    pub conditional: bool,
}

/// The predictions the page offers.
pub const PREDICTIONS: [&str; 3] = ["velocity", "x1", "epsilon"];
/// The label dropout of a class-conditional training (the unconditional model guidance needs).
pub const LABEL_DROPOUT: f64 = 0.2;

fn default_prediction() -> String {
    "velocity".into()
}

fn gaussian_source() -> TargetSpec {
    TargetSpec {
        kind: "gaussian".into(),
        points: Vec::new(),
    }
}

fn default_epsilon() -> f64 {
    0.05
}
fn default_lr() -> f64 {
    1e-3
}

/// Checks a client id.
pub fn check_client(client: &str) -> Result<(), ApiError> {
    let ok = (8..=64).contains(&client.len())
        && client
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(ApiError::invalid(
            "client",
            "must be 8 to 64 ASCII letters, digits, `-` or `_`",
        ));
    }
    Ok(())
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TrainRequest {
    /// The run config of this request, training into a new folder under `runs_dir`.
    pub fn run_config(&self, runs_dir: &Path) -> Result<RunConfig, ApiError> {
        check_client(&self.client)?;
        let target = self.target.dataset("target")?;
        if !SOURCES.contains(&self.source.kind.as_str()) {
            return Err(ApiError::invalid(
                "source.kind",
                format!(
                    "unknown source `{}`; allowed: {}",
                    self.source.kind,
                    SOURCES.join(", ")
                ),
            ));
        }
        let source = self.source.dataset("source")?;
        if self.path.kind == "one_sided" && self.source.kind != "gaussian" {
            return Err(ApiError::invalid(
                "source.kind",
                "the one_sided path needs the gaussian source N(0, I)",
            ));
        }
        let mut flow = self.path.flow_section("path")?;
        flow.prediction = match self.prediction.as_str() {
            "velocity" => Prediction::Velocity,
            "x1" => Prediction::Target,
            "epsilon" => Prediction::Epsilon,
            other => {
                return Err(ApiError::invalid(
                    "prediction",
                    format!(
                        "unknown prediction `{other}`; allowed: {}",
                        PREDICTIONS.join(", ")
                    ),
                ));
            }
        };
        if flow.prediction != Prediction::Velocity
            && (self.path.sigma > 0.0 || self.path.kind == "schrodinger_bridge")
        {
            return Err(ApiError::invalid(
                "prediction",
                format!(
                    "{} prediction needs a path without extra noise (sigma = 0, not schrodinger_bridge)",
                    self.prediction
                ),
            ));
        }
        let num_classes = if self.conditional {
            if self.target.kind == "drawn" || target.num_classes() < 2 {
                return Err(ApiError::invalid(
                    "conditional",
                    format!(
                        "target `{}` has no class labels; a class-conditional network needs 8gaussians, moons or \
                         mixtures",
                        self.target.kind
                    ),
                ));
            }
            Some(target.num_classes())
        } else {
            None
        };
        flow.coupling = match self.coupling.as_str() {
            "independent" => CouplingConfig::Independent {
                order: IndependentOrder::Identity,
            },
            "exact_ot" => CouplingConfig::ExactOt {
                solver: SolverKind::Jv,
            },
            "sinkhorn" => CouplingConfig::Sinkhorn {
                sinkhorn: SinkhornConfig {
                    reg: check_real("epsilon", self.epsilon, 1e-3, 10.0)?,
                    ..SinkhornConfig::default()
                },
                scaling: Default::default(),
            },
            other => {
                return Err(ApiError::invalid(
                    "coupling",
                    format!("unknown coupling `{other}`; allowed: {}", COUPLINGS.join(", ")),
                ));
            }
        };
        let steps = check_range("steps", self.steps, 1, 20_000)?;
        let mut train = TrainSection {
            steps,
            batch_size: check_range("batch_size", self.batch_size, 8, 1_024)?,
            checkpoint_every: 0,
            log_every: (steps / 50).max(1),
            label_dropout: LABEL_DROPOUT,
            ..TrainSection::default()
        };
        train.optimizer.lr = check_real("learning_rate", self.learning_rate, 1e-5, 0.1)?;
        let unix_seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!(
            "explore-{}-{unix_seconds}-{}",
            self.target.kind,
            RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut run = RunSection::named(name, runs_dir);
        run.seed = self.seed;
        let config = RunConfig {
            run,
            data: DataSection {
                source,
                target,
                manifold: None,
            },
            model: ModelSection {
                width: check_range("width", self.width, 4, 256)?,
                depth: check_range("depth", self.depth, 1, 6)?,
                num_classes,
                ..ModelSection::default()
            },
            flow,
            train,
            sample: SampleSection {
                n_samples: 2_000,
                steps: 50,
                w2_samples: 1_000,
                ..SampleSection::default()
            },
        };
        config
            .validate()
            .map_err(|e| ApiError::invalid("config", e.to_string()))?;
        Ok(config)
    }
}

/// One message of the training stream.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrainEvent {
    /// Training started into `run`.
    Started {
        /// The run folder's name under the runs folder.
        run: String,
        /// Steps to train.
        total: usize,
    },
    /// Where training stands.
    Progress {
        /// The last step taken.
        step: usize,
        /// The last step of the run.
        total: usize,
        /// This step's loss.
        loss: f64,
        /// Steps per second since the start.
        steps_per_second: f64,
    },
    /// A message about the run before it starts (a Sinkhorn coupling that stops at its iteration cap, ...).
    Note {
        /// The message, naming the config keys involved.
        text: String,
    },
    /// Samples of the current network (an Euler solve of [`SNAPSHOT_STEPS`] steps).
    Snapshot {
        /// The step they were drawn at.
        step: usize,
        /// `[SNAPSHOT_POINTS * 2]` coordinates.
        points: Vec<f32>,
    },
    /// Training ended.
    Finished {
        /// The run folder's name.
        run: String,
        /// Whether the run trained all its steps and was finished (samples, metrics, model).
        completed: bool,
        /// Why not, when it did not.
        message: Option<String>,
        /// Wall seconds from start to end.
        seconds: f64,
    },
}

/// The observer that feeds the page.
pub struct StreamObserver {
    events: mpsc::Sender<TrainEvent>,
    started: Instant,
    first_step: usize,
    last_progress: Option<Instant>,
    last_snapshot: Option<Instant>,
    source: Tensor,
    /// The run's path and what its network predicts, to turn its output into a velocity.
    path: Box<dyn ConditionalPath + Send + Sync>,
    prediction: Prediction,
    /// Seconds spent drawing snapshots (to report the overhead).
    pub snapshot_seconds: f64,
}

impl StreamObserver {
    /// An observer of the training of `config` that sends into `events`; snapshots start from points of its
    /// source drawn with its seed and follow the velocity its network's output stands for.
    pub fn new(events: mpsc::Sender<TrainEvent>, config: &RunConfig) -> Result<Self, ApiError> {
        let points = config
            .data
            .source
            .sample(SNAPSHOT_POINTS, &mut ChaCha8Rng::seed_from_u64(config.run.seed));
        let path = config
            .flow
            .build_path()
            .map_err(|e| ApiError::invalid("path", e.to_string()))?;
        Ok(Self {
            path,
            prediction: config.flow.prediction,
            events,
            started: Instant::now(),
            first_step: 0,
            last_progress: None,
            last_snapshot: None,
            source: Tensor::from_slice(&points).view([SNAPSHOT_POINTS as i64, 2]),
            snapshot_seconds: 0.0,
        })
    }

    fn snapshot(&self, model: &FlowModel) -> Vec<f32> {
        tch::no_grad(|| {
            let net = &model.net;
            let device = net.params().device();
            let mut x = self.source.to_device(device);
            let dt = 1.0 / SNAPSHOT_STEPS as f64;
            for step in 0..SNAPSHOT_STEPS {
                let t = step as f64 * dt;
                let times = Tensor::full([SNAPSHOT_POINTS as i64], t, (Kind::Float, device));
                let velocity = output_velocity(
                    self.path.as_ref(),
                    self.prediction,
                    &x,
                    net.forward(&x, &times),
                    t,
                );
                x = &x + velocity * dt;
            }
            let flat = x.to_kind(Kind::Float).contiguous().view([-1]);
            Vec::<f32>::try_from(&flat).unwrap_or_default()
        })
    }
}

impl Observer<FlowModel> for StreamObserver {
    fn on_note(&mut self, note: &str) {
        let _ = self.events.try_send(TrainEvent::Note {
            text: note.to_owned(),
        });
    }

    fn on_start(&mut self, first_step: usize, _total: usize) -> Result<(), TrainError> {
        self.started = Instant::now();
        self.first_step = first_step;
        Ok(())
    }

    fn on_step(
        &mut self,
        model: &FlowModel,
        info: &StepInfo,
        _journal: &mut Journal,
    ) -> Result<(), TrainError> {
        let now = Instant::now();
        let last = info.step == info.total;
        if last || self.last_progress.is_none_or(|at| now - at >= PROGRESS_EVERY) {
            self.last_progress = Some(now);
            let seconds = (now - self.started).as_secs_f64().max(1e-9);
            // A full channel means the page reads slowly: skip this update rather than wait.
            let _ = self.events.try_send(TrainEvent::Progress {
                step: info.step,
                total: info.total,
                loss: info.loss,
                steps_per_second: (info.step - self.first_step) as f64 / seconds,
            });
        }
        if last || self.last_snapshot.is_none_or(|at| now - at >= SNAPSHOT_EVERY) {
            let drawing = Instant::now();
            let points = self.snapshot(model);
            self.snapshot_seconds += drawing.elapsed().as_secs_f64();
            self.last_snapshot = Some(Instant::now());
            let _ = self.events.try_send(TrainEvent::Snapshot {
                step: info.step,
                points,
            });
        }
        Ok(())
    }
}

/// A training in progress: its stop flag.
#[derive(Clone, Debug)]
pub struct Training {
    /// Raised to stop it (checkpointing the current step).
    pub stop: Arc<AtomicBool>,
}

/// Trains `config` on the current (blocking) thread, sending events into `events`; returns the run folder.
pub fn run_training(config: RunConfig, stop: Arc<AtomicBool>, events: mpsc::Sender<TrainEvent>) -> PathBuf {
    let started = Instant::now();
    let run_dir = Path::new(&config.run.out_dir).join(&config.run.name);
    let run = config.run.name.clone();
    let _ = events.blocking_send(TrainEvent::Started {
        run: run.clone(),
        total: config.train.steps,
    });
    // `config` passed `RunConfig::validate`, which builds its path, so this does not fail; if it did, the page
    // hears why.
    let result = match StreamObserver::new(events.clone(), &config) {
        Ok(mut observer) => ferroflow_engine::run::train_new(&config, &mut [&mut observer], Some(&stop))
            .map_err(|e| format!("{e:#}")),
        Err(e) => Err(e.to_string()),
    };
    let message = result.as_ref().err().cloned();
    let _ = events.blocking_send(TrainEvent::Finished {
        run,
        completed: result.is_ok(),
        message,
        seconds: started.elapsed().as_secs_f64(),
    });
    run_dir
}
