//! The flow trainer: batches from a producer thread, the regression step, checkpoints and resume, run by the
//! one training loop of [`observe`] with the NaN guard, the loss curve and the checkpoints as observers.
//!
//! Conditional flow matching minimises E_{t, (x0, x1) ~ pi} |v_theta(x_t, t) - u_t(x_t | x0, x1)|^2
//! (Lipman et al. 2023, eq. 9; Tong et al. 2023, eq. 14). The batch of step k is a pure function of
//! `(seed, k)` ([`crate::batch`]); the model starts from libtorch's generator seeded with `seed` (under
//! `ferroflow_models::with_torch_seed`, so concurrent runs in one process keep their draws). A checkpoint
//! holds the weights, their EMA, both Adam moments, the step and the loss history in one safetensors file
//! written atomically, so resuming from it reproduces the uninterrupted run's loss curve exactly on the CPU.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use ferroflow_distributed::{Collective, to_host};

use ferroflow_models::checkpoint::{load_tensors, save_tensors};
use ferroflow_models::optim::{Ema, FlatAdam};
use ferroflow_models::unet::Unet;
use ferroflow_models::{Mlp, VelocityNet};
use tch::{Device, Kind, Tensor};

use crate::batch::{Batch, BatchMaker};
use crate::config::{ModelKind, RunConfig};
use crate::distributed::{Launch, ReplicaCheck, agree, broadcast_state};
use crate::error::TrainError;

pub mod observe;

pub use observe::{Journal, LossCurve, LossPoint, NanGuard, Observer, OnStep, StepInfo, Trainable, execute};

/// The file holding the full training state.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The file holding the weights used for sampling (the EMA when enabled), with PyTorch parameter names.
pub const MODEL_FILE: &str = "model.safetensors";

/// What a finished training run reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// Steps taken in this invocation.
    pub steps_run: usize,
    /// Total steps of the run.
    pub total_steps: usize,
    /// Wall time of the steps in this invocation.
    pub seconds: f64,
    /// Wall time of all the run's steps, over every invocation (each earlier one counted up to the
    /// checkpoint this one resumed from: steps redone after a crash are counted once).
    pub total_seconds: f64,
    /// The loss curve from step 1.
    pub loss_curve: Vec<LossPoint>,
    /// Seconds of this invocation's steps spent in the gradient all-reduce (0 in one process).
    pub allreduce_seconds: f64,
}

impl TrainSummary {
    /// Steps per second over the whole run.
    pub fn steps_per_second(&self) -> f64 {
        self.total_steps as f64 / self.total_seconds.max(1e-9)
    }
}

/// Where a call of [`train`] starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// From the seeded initialisation, in a folder that holds no checkpoint.
    Fresh,
    /// From the folder's checkpoint, or from step 0 when the folder has a config but no checkpoint yet.
    Resume,
}

/// The device `name` (`cpu`, `auto`, `cuda`, `cuda:N`) names on this machine. A requested GPU that is not
/// there is an error, never a silent fall back to the CPU; only `auto` falls back (see [`device_note`]).
pub fn resolve_device(name: &str) -> Result<Device, TrainError> {
    let missing = |detail: String| TrainError::Device {
        requested: name.to_owned(),
        detail,
    };
    let index = match name {
        "cpu" => return Ok(Device::Cpu),
        "auto" => return Ok(Device::cuda_if_available()),
        "cuda" => 0,
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| missing("allowed are cpu, auto, cuda, cuda:N".into()))?,
    };
    if !tch::Cuda::is_available() {
        return Err(missing(
            "this build of libtorch has no CUDA or sees no GPU; on a machine with an NVIDIA GPU run \
             `cargo xtask setup --cuda`, or set run.device = \"cpu\" (or \"auto\")"
                .into(),
        ));
    }
    let count = tch::Cuda::device_count() as usize;
    if index >= count {
        return Err(missing(format!(
            "this machine has {count} CUDA device(s): cuda:0 to cuda:{}",
            count.saturating_sub(1)
        )));
    }
    Ok(Device::Cuda(index))
}

/// What to tell the user about the device `name` resolved to, when it is not what they might assume: `auto`
/// without CUDA runs on the CPU.
pub fn device_note(name: &str, device: Device) -> Option<String> {
    (name == "auto" && device == Device::Cpu)
        .then(|| "run.device = \"auto\": no CUDA device here, running on the CPU".to_owned())
}

/// The name of a device as the config writes it (`cpu`, `cuda:N`).
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".to_owned(),
    }
}

/// Builds the run's network with its seeded initialisation.
pub fn build_model(config: &RunConfig) -> Result<Box<dyn VelocityNet>, TrainError> {
    let model = &config.model;
    let device = resolve_device(&config.run.device)?;
    ferroflow_models::with_torch_seed(config.run.seed, || -> Result<Box<dyn VelocityNet>, TrainError> {
        Ok(match model.kind {
            ModelKind::Mlp => {
                let mlp = model.mlp_config(config.data.target.dim(), config.data.manifold.as_ref());
                Box::new(Mlp::new(mlp, device)?)
            }
            ModelKind::Unet => Box::new(Unet::new(model.unet.clone(), device)?),
            ModelKind::TokenMlp | ModelKind::TokenTransformer => {
                return Err(TrainError::Model(ferroflow_models::ModelError::InvalidConfig {
                    key: "model.kind",
                    detail: "a token network is no velocity field; discrete runs train through \
                         `ferroflow_engine::discrete`"
                        .into(),
                }));
            }
        })
    })
}

/// Sets libtorch's thread count from the config (0 leaves libtorch's default).
pub fn apply_threads(config: &RunConfig) {
    if config.run.threads > 0 {
        tch::set_num_threads(config.run.threads as i32);
    }
}

/// A flow being trained: the network (its weights are `net.params().flat()`), the optimizer and the EMA of
/// the weights. Observers of the flow trainer see this.
pub struct FlowModel {
    /// The velocity network.
    pub net: Box<dyn VelocityNet>,
    /// Adam's state.
    pub adam: FlatAdam,
    /// The EMA of the weights, when `train.ema_decay > 0`.
    pub ema: Option<Ema>,
}

/// The flow trainer: takes batches from the producer thread and regresses the network onto their targets.
/// In a data-parallel job it trains on its rows of the global batch and mean-reduces the gradient.
struct FlowTrainer<'a> {
    model: FlowModel,
    batches: &'a mpsc::Receiver<Result<Batch, TrainError>>,
    recycle: mpsc::Sender<Batch>,
    /// The shape of this rank's slice of the batch.
    shape: Vec<i64>,
    /// On a manifold the output is projected onto the tangent space at x_t before the loss.
    manifold: Option<crate::manifold::ManifoldSpec>,
    ranks: RankSync<'a>,
}

/// What a rank of a data-parallel job shares after each backward pass (nothing in one process).
pub(crate) struct RankSync<'a> {
    comm: &'a dyn Collective,
    /// The rows `lo..hi` of the global batch this rank trains on.
    pub rows: (usize, usize),
    /// This rank's stop request (Ctrl-C, SIGTERM).
    stop: Option<&'a AtomicBool>,
    /// Raised on every rank when any rank asked to stop: what the checkpoint observer reads.
    agreed_stop: &'a AtomicBool,
    /// The ranks whose loss was not finite at the last step.
    non_finite: &'a RefCell<Vec<usize>>,
    /// Seconds spent in the all-reduce so far (waiting for the slowest rank included).
    allreduce_seconds: &'a std::cell::Cell<f64>,
}

impl RankSync<'_> {
    /// The global batch's loss: in one process `local_loss`; across ranks see [`RankSync::reduce`].
    pub fn global_loss(&self, weights: &Tensor, local_loss: f64) -> Result<f64, TrainError> {
        if self.comm.world_size() > 1 {
            self.reduce(weights, local_loss)
        } else {
            Ok(local_loss)
        }
    }

    /// Mean-reduces the flat gradient of `weights` over the ranks in one all-reduce that also carries each
    /// rank's loss, stop request and non-finite flag; returns the global batch's loss.
    fn reduce(&self, weights: &Tensor, local_loss: f64) -> Result<f64, TrainError> {
        let comm = self.comm;
        let (rank, world) = (comm.rank(), comm.world_size());
        let mut extras = vec![0f32; 2 + world];
        extras[0] = local_loss as f32;
        extras[1] = f32::from(u8::from(
            self.stop.is_some_and(|flag| flag.load(Ordering::SeqCst)),
        ));
        extras[2 + rank] = f32::from(u8::from(!local_loss.is_finite()));
        let _guard = tch::no_grad_guard();
        let mut grad = weights.grad();
        let n = grad.numel() as i64;
        let extras_tensor = Tensor::from_slice(&extras).to_device(grad.device());
        let mut packed = Tensor::cat(&[grad.view(-1), extras_tensor], 0);
        let started = Instant::now();
        comm.all_reduce_sum(&mut packed)?;
        self.allreduce_seconds
            .set(self.allreduce_seconds.get() + started.elapsed().as_secs_f64());
        let mean = packed.narrow(0, 0, n) / world as f64;
        grad.copy_(&mean.view_as(&grad));
        let sums = to_host::<f32>(&packed.narrow(0, n, 2 + world as i64));
        self.agreed_stop.store(sums[1] > 0.0, Ordering::SeqCst);
        let bad: Vec<usize> = (0..world).filter(|&r| sums[2 + r] > 0.0).collect();
        let loss = if bad.is_empty() {
            f64::from(sums[0]) / world as f64
        } else {
            f64::NAN
        };
        *self.non_finite.borrow_mut() = bad;
        Ok(loss)
    }
}

impl Trainable for FlowTrainer<'_> {
    type Model = FlowModel;

    fn model(&self) -> &FlowModel {
        &self.model
    }

    fn step(&mut self, _step: usize) -> Result<f64, TrainError> {
        let batch = self
            .batches
            .recv()
            .expect("the producer sends one batch per step")?;
        let net = &self.model.net;
        let device = net.params().device();
        let shape = self.shape.as_slice();
        // This rank's rows of the global batch (all of it in one process).
        let (lo, hi) = self.ranks.rows;
        let row = batch.x_t.len() / batch.t.len().max(1);
        let x_t = Tensor::from_slice(&batch.x_t[lo * row..hi * row])
            .view(shape)
            .to_device(device);
        let t = Tensor::from_slice(&batch.t[lo..hi]).to_device(device);
        let target = Tensor::from_slice(&batch.target[lo * row..hi * row])
            .view(shape)
            .to_device(device);
        let labels =
            (!batch.labels.is_empty()).then(|| Tensor::from_slice(&batch.labels[lo..hi]).to_device(device));
        // The producer may already be gone after its last batch; then the buffer is simply dropped.
        let _ = self.recycle.send(batch);
        let mut output = net.forward_with(&net.params().views(), &x_t, &t, labels.as_ref());
        if let Some(manifold) = &self.manifold {
            output = manifold.project_tangent(&x_t, &output);
        }
        let loss = (output - target).square().mean(Kind::Float);
        loss.backward();
        let loss_value = self
            .ranks
            .global_loss(self.model.net.params().flat(), loss.double_value(&[]))?;
        // A non-finite loss must not reach the weights: the NaN guard stops the run after this step, and
        // the weights it leaves are never saved.
        if loss_value.is_finite() {
            let weights = self.model.net.params().flat();
            self.model.adam.step(weights);
            if let Some(ema) = self.model.ema.as_mut() {
                ema.update(weights);
            }
        }
        Ok(loss_value)
    }
}

/// Writes the full training state every `every` steps (0: only at the end), at the last step, and at the
/// current step when the stop flag is raised (Ctrl-C), after which it ends the run with
/// [`TrainError::Interrupted`].
pub struct Checkpoints<'a> {
    path: PathBuf,
    every: usize,
    stop: Option<&'a AtomicBool>,
    seconds_before: f64,
    started: Instant,
}

impl<'a> Checkpoints<'a> {
    /// Checkpoints at `path` every `every` steps; `seconds_before` is the training time of the steps before
    /// this invocation (recorded in each checkpoint with this invocation's time added).
    pub fn new(path: PathBuf, every: usize, stop: Option<&'a AtomicBool>, seconds_before: f64) -> Self {
        Self {
            path,
            every,
            stop,
            seconds_before,
            started: Instant::now(),
        }
    }
}

/// A model whose training state a checkpoint holds: the weights, Adam's state and the EMA.
pub trait TrainState {
    /// The parameters, the optimizer and the EMA (if any).
    fn state(&self) -> (&ferroflow_models::params::ParamStore, &FlatAdam, Option<&Ema>);

    /// The same, the optimizer and the EMA mutable (to load or broadcast them).
    fn state_mut(
        &mut self,
    ) -> (
        &ferroflow_models::params::ParamStore,
        &mut FlatAdam,
        Option<&mut Ema>,
    );
}

impl TrainState for FlowModel {
    fn state(&self) -> (&ferroflow_models::params::ParamStore, &FlatAdam, Option<&Ema>) {
        (self.net.params(), &self.adam, self.ema.as_ref())
    }

    fn state_mut(
        &mut self,
    ) -> (
        &ferroflow_models::params::ParamStore,
        &mut FlatAdam,
        Option<&mut Ema>,
    ) {
        (self.net.params(), &mut self.adam, self.ema.as_mut())
    }
}

impl<M: TrainState> Observer<M> for Checkpoints<'_> {
    fn on_start(&mut self, _: usize, _: usize) -> Result<(), TrainError> {
        self.started = Instant::now();
        Ok(())
    }

    fn on_step(&mut self, model: &M, info: &StepInfo, journal: &mut Journal) -> Result<(), TrainError> {
        let stop = self.stop.is_some_and(|flag| flag.load(Ordering::SeqCst));
        if stop || (self.every > 0 && info.step.is_multiple_of(self.every)) || info.step == info.total {
            journal.train_seconds = self.seconds_before + self.started.elapsed().as_secs_f64();
            save_checkpoint(&self.path, model, journal)?;
            journal.last_checkpoint = info.step;
        }
        if stop && info.step < info.total {
            return Err(TrainError::Interrupted { step: info.step });
        }
        Ok(())
    }
}

/// Adam's state and, when `train.ema_decay > 0`, the EMA for the flat weights `weights` of a new network: the
/// optimizer state of every trainer.
pub fn optimizer_state(config: &RunConfig, weights: &Tensor) -> Result<(FlatAdam, Option<Ema>), TrainError> {
    let adam = FlatAdam::new(config.train.optimizer.clone(), weights)?;
    let ema = if config.train.ema_decay > 0.0 {
        Some(Ema::new(config.train.ema_decay, weights)?)
    } else {
        None
    };
    Ok((adam, ema))
}

/// Refuses to resume from a checkpoint at `start_step` past `total` steps (naming the checkpoint).
pub fn check_start_step(checkpoint_path: &Path, start_step: usize, total: usize) -> Result<(), TrainError> {
    if start_step > total {
        return Err(TrainError::Io {
            path: checkpoint_path.to_path_buf(),
            detail: format!(
                "the checkpoint is at step {start_step}, beyond train.steps = {total}: ask for at least \
                 {start_step} steps"
            ),
        });
    }
    Ok(())
}

/// Trains (or resumes training of) the run in `run_dir`, writing checkpoints there; the caller holds the
/// folder's lock ([`crate::lock::RunLock`]).
///
/// The folder stays a valid run at every moment: a fresh run (or a resumed folder without a checkpoint)
/// first writes its step-0 checkpoint, and only then the config (`config.toml`, rewritten only when it
/// changed, as after `--steps`), so a config always describes a checkpoint that loaded or was written. When
/// `stop` is raised the current step is checkpointed and the run ends with [`TrainError::Interrupted`].
/// The engine's own observers (NaN guard, loss curve, checkpoints) run first, then `observers`.
///
/// In a data-parallel job (`launch` with more than one rank) every rank calls this with the same config:
/// rank 0 alone reads and writes the folder, its state is broadcast to the others, each rank trains on its
/// rows of the global batch, and `observers` should be given on rank 0 only.
pub fn train(
    config: &RunConfig,
    run_dir: &Path,
    start: Start,
    stop: Option<&AtomicBool>,
    launch: &Launch<'_>,
    observers: &mut [&mut dyn Observer<FlowModel>],
) -> Result<TrainSummary, TrainError> {
    apply_threads(config);
    let net = agree(launch.comm, build_model(&rank_config(config, launch.comm)))?;
    let (adam, ema) = optimizer_state(config, net.params().flat())?;
    let model = FlowModel { net, adam, ema };
    let mut maker = BatchMaker::new(config).map_err(|e| TrainError::Io {
        path: run_dir.to_path_buf(),
        detail: e.to_string(),
    })?;
    // An entropic coupling whose Sinkhorn stops at its cap is not an error (the pairs still follow a plan
    // close to it), but the user should know rather than find out from the samples. The probe solves one
    // batch, so it runs only where someone listens (rank 0 of a job; no other rank has observers).
    if !observers.is_empty()
        && let Some(note) = maker.sinkhorn_note()
    {
        for observer in observers.iter_mut() {
            observer.on_note(&note);
        }
    }
    let driven = drive(config, run_dir, start, stop, launch, model, observers, |run| {
        let shape: Vec<i64> = std::iter::once((run.ranks.rows.1 - run.ranks.rows.0) as i64)
            .chain(run.model.net.sample_shape())
            .collect();
        let (start_step, total) = (run.start_step, config.train.steps);
        std::thread::scope(|scope| -> Result<FlowModel, TrainError> {
            // The producer builds batches (and solves their OT couplings) while the model trains on the last one.
            let (to_trainer, from_producer) = mpsc::sync_channel::<Result<Batch, TrainError>>(4);
            let (recycle, recycled) = mpsc::channel::<Batch>();
            scope.spawn(move || {
                for step in start_step + 1..=total {
                    let mut batch = recycled.try_recv().unwrap_or_default();
                    let made = maker.make(step as u64, &mut batch).map(|()| batch).map_err(|e| {
                        TrainError::Coupling {
                            step,
                            detail: e.to_string(),
                        }
                    });
                    let failed = made.is_err();
                    if to_trainer.send(made).is_err() || failed {
                        return;
                    }
                }
            });
            let mut trainer = FlowTrainer {
                model: run.model,
                batches: &from_producer,
                recycle,
                shape,
                manifold: config.data.manifold.clone(),
                ranks: run.ranks,
            };
            execute(&mut trainer, start_step, total, run.journal, run.observers)?;
            Ok(trainer.model)
        })
    })?;
    Ok(driven)
}

/// What [`drive`] hands the trainer-specific loop: the model with its state loaded and broadcast, the rank's
/// share of each step, the journal and every observer (the engine's first).
pub(crate) struct Run<'r, 'o, 'a, M> {
    /// The model, identical on every rank.
    pub model: M,
    /// The step the run continues from.
    pub start_step: usize,
    /// This rank's rows and the step's all-reduce.
    pub ranks: RankSync<'a>,
    /// The run's journal.
    pub journal: &'r mut Journal,
    /// The observers, to pass to [`execute`].
    pub observers: &'r mut [&'o mut dyn Observer<M>],
}

/// The training driver every trainer shares: loads the checkpoint on rank 0 and broadcasts the state, writes
/// the step-0 checkpoint and the config (rank 0), sets up the NaN guard, the loss curve, the checkpoints (rank
/// 0; other ranks stop with it) and the replica check, runs `train_loop` and writes the sampling weights. Every
/// step only some ranks take is agreed, so a failure there ends every rank.
#[allow(clippy::too_many_arguments)]
pub(crate) fn drive<M: TrainState>(
    config: &RunConfig,
    run_dir: &Path,
    start: Start,
    stop: Option<&AtomicBool>,
    launch: &Launch<'_>,
    mut model: M,
    observers: &mut [&mut dyn Observer<M>],
    train_loop: impl for<'r, 'o, 'a> FnOnce(Run<'r, 'o, 'a, M>) -> Result<M, TrainError>,
) -> Result<TrainSummary, TrainError> {
    let comm = launch.comm;
    let root = launch.is_root();
    let rows = crate::distributed::shard(config.train.batch_size, comm.rank(), comm.world_size())?;
    let mut journal = Journal::default();
    let checkpoint_path = run_dir.join(CHECKPOINT_FILE);
    // Only rank 0 looks at the folder; the others receive its state.
    let resumed = root && start == Start::Resume && checkpoint_path.exists();
    let loaded = if resumed {
        let (params, adam, ema) = model.state_mut();
        load_checkpoint_into(&checkpoint_path, params, adam, ema, &mut journal)
    } else {
        Ok(())
    };
    agree(comm, loaded)?;
    {
        let (params, adam, ema) = model.state_mut();
        broadcast_state(comm, params, adam, ema)?;
    }
    let seconds_before = journal.train_seconds;
    let start_step = model.state().1.step;
    let total = config.train.steps;
    check_start_step(&checkpoint_path, start_step, total)?;
    let prepared = if root {
        (if resumed {
            Ok(())
        } else {
            save_checkpoint(&checkpoint_path, &model, &journal)
        })
        .and_then(|()| commit_config(config, run_dir))
    } else {
        Ok(())
    };
    agree(comm, prepared)?;
    journal.last_checkpoint = start_step;
    let started = Instant::now();
    // One process reads its own stop flag; ranks read the flag they agreed on in the step's all-reduce.
    let agreed_stop = AtomicBool::new(false);
    let non_finite = RefCell::new(Vec::new());
    let allreduce_seconds = std::cell::Cell::new(0.0);
    let step_stop = if comm.world_size() > 1 {
        Some(&agreed_stop)
    } else {
        stop
    };
    let mut replica_check = ReplicaCheck::new(comm);
    let mut nan_guard = NanGuard;
    let mut loss_curve = LossCurve::new(config.train.log_every);
    let mut checkpoints = Checkpoints::new(
        checkpoint_path,
        config.train.checkpoint_every,
        step_stop,
        seconds_before,
    );
    let mut stop_rank = StopRank { stop: step_stop };
    // The replica check comes first, so every rank reaches its all-gather before any rank-0-only failure.
    let mut all: Vec<&mut dyn Observer<M>> = Vec::new();
    if launch.check_replicas {
        all.push(&mut replica_check);
    }
    all.push(&mut nan_guard);
    all.push(&mut loss_curve);
    if root {
        all.push(&mut checkpoints);
    } else {
        all.push(&mut stop_rank);
    }
    all.extend(observers.iter_mut().map(|o| &mut **o as &mut dyn Observer<M>));
    let ranks = RankSync {
        comm,
        rows,
        stop,
        agreed_stop: &agreed_stop,
        non_finite: &non_finite,
        allreduce_seconds: &allreduce_seconds,
    };
    let model = train_loop(Run {
        model,
        start_step,
        ranks,
        journal: &mut journal,
        observers: &mut all,
    })
    .map_err(|err| name_ranks(err, &non_finite.borrow()))?;
    let seconds = started.elapsed().as_secs_f64();
    if root {
        let (params, _, ema) = model.state();
        let sampling_weights = ema.map_or(params.flat(), |e| &e.weights);
        save_tensors(&params.named_of(sampling_weights), &run_dir.join(MODEL_FILE))?;
    }
    Ok(TrainSummary {
        steps_run: total - start_step,
        total_steps: total,
        seconds,
        // The last step always writes a checkpoint, which records the run's time up to it.
        total_seconds: journal.train_seconds,
        loss_curve: journal.loss_curve,
        allreduce_seconds: allreduce_seconds.get(),
    })
}

/// The config a rank builds its network from: in a job of several ranks `cuda` means the GPU of the rank's
/// local index (one GPU per rank), as `torchrun` sets `LOCAL_RANK`.
fn rank_config(config: &RunConfig, comm: &dyn Collective) -> RunConfig {
    let mut config = config.clone();
    if comm.world_size() > 1 && config.run.device == "cuda" {
        config.run.device = format!("cuda:{}", comm.local_rank());
    }
    config
}

/// Names the ranks whose loss was not finite in the NaN guard's error.
fn name_ranks(err: TrainError, non_finite: &[usize]) -> TrainError {
    match err {
        TrainError::NonFiniteLoss { step, last_good, .. } if !non_finite.is_empty() => {
            TrainError::NonFiniteLossOnRanks {
                step,
                ranks: non_finite.to_vec(),
                last_good,
            }
        }
        err => err,
    }
}

/// Ends a rank other than 0 (which writes nothing) when the ranks agreed to stop, as [`Checkpoints`] ends
/// rank 0 after writing the step's checkpoint.
struct StopRank<'a> {
    stop: Option<&'a AtomicBool>,
}

impl<M: ?Sized> Observer<M> for StopRank<'_> {
    fn on_step(&mut self, _: &M, info: &StepInfo, _: &mut Journal) -> Result<(), TrainError> {
        if self.stop.is_some_and(|flag| flag.load(Ordering::SeqCst)) && info.step < info.total {
            return Err(TrainError::Interrupted { step: info.step });
        }
        Ok(())
    }
}

/// Writes `config` as the run's `config.toml` unless the file already says exactly that.
pub(crate) fn commit_config(config: &RunConfig, run_dir: &Path) -> Result<(), TrainError> {
    let path = run_dir.join(crate::run::CONFIG_FILE);
    let text = config.to_toml().map_err(|e| TrainError::Io {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    crate::files::write_atomic(&path, text.as_bytes()).map_err(|e| TrainError::Io {
        path,
        detail: format!("{e:#}"),
    })
}

pub(crate) fn save_checkpoint(
    path: &Path,
    model: &impl TrainState,
    journal: &Journal,
) -> Result<(), TrainError> {
    let loss_curve = &journal.loss_curve;
    let (params, adam, ema) = model.state();
    let mut named: Vec<(String, Tensor)> = params
        .named_of(params.flat())
        .into_iter()
        .map(|(n, t)| (format!("model.{n}"), t))
        .collect();
    if let Some(ema) = ema {
        named.extend(
            params
                .named_of(&ema.weights)
                .into_iter()
                .map(|(n, t)| (format!("ema.{n}"), t)),
        );
    }
    named.push(("optim.exp_avg".into(), adam.exp_avg.to(Device::Cpu)));
    named.push(("optim.exp_avg_sq".into(), adam.exp_avg_sq.to(Device::Cpu)));
    named.push(("state.step".into(), Tensor::from_slice(&[adam.step as i64])));
    let steps: Vec<i64> = loss_curve.iter().map(|p| p.step as i64).collect();
    let losses: Vec<f64> = loss_curve.iter().map(|p| p.loss).collect();
    named.push(("state.loss_steps".into(), Tensor::from_slice(&steps)));
    named.push(("state.loss_values".into(), Tensor::from_slice(&losses)));
    let (window_sum, window_len) = journal.loss_window;
    named.push(("state.loss_window_sum".into(), Tensor::from_slice(&[window_sum])));
    named.push((
        "state.loss_window_len".into(),
        Tensor::from_slice(&[window_len as i64]),
    ));
    named.push((
        "state.train_seconds".into(),
        Tensor::from_slice(&[journal.train_seconds]),
    ));
    Ok(save_tensors(&named, path)?)
}

/// Restores weights, EMA, optimizer moments, step, the loss curve, its open window and the training seconds
/// (0 for checkpoints older than that key) of any network into `params`, `adam`, `ema` and `journal`.
pub(crate) fn load_checkpoint_into(
    path: &Path,
    params: &ferroflow_models::params::ParamStore,
    adam: &mut FlatAdam,
    ema: Option<&mut Ema>,
    journal: &mut Journal,
) -> Result<(), TrainError> {
    let named = load_tensors(path)?;
    let mismatch = |detail: String| {
        TrainError::Model(ferroflow_models::ModelError::CheckpointMismatch {
            path: PathBuf::from(path),
            detail,
        })
    };
    let mut model = Vec::new();
    let mut ema_named = Vec::new();
    let mut rest = std::collections::BTreeMap::new();
    for (name, tensor) in named {
        if let Some(n) = name.strip_prefix("model.") {
            model.push((n.to_owned(), tensor));
        } else if let Some(n) = name.strip_prefix("ema.") {
            ema_named.push((n.to_owned(), tensor));
        } else {
            rest.insert(name, tensor);
        }
    }
    params.load_named_into(params.flat(), model, path)?;
    if let Some(ema) = ema {
        if ema_named.is_empty() {
            return Err(mismatch(
                "the config asks for an EMA but the checkpoint has none".into(),
            ));
        }
        params.load_named_into(&ema.weights, ema_named, path)?;
    }
    let mut take = |key: &str| {
        rest.remove(key)
            .ok_or_else(|| mismatch(format!("`{key}` is missing")))
    };
    let exp_avg = take("optim.exp_avg")?;
    let exp_avg_sq = take("optim.exp_avg_sq")?;
    if exp_avg.size() != params.flat().size() || exp_avg_sq.size() != params.flat().size() {
        return Err(mismatch(format!(
            "optimizer state has {:?} entries, the model {:?}",
            exp_avg.size(),
            params.flat().size()
        )));
    }
    let device = params.device();
    adam.exp_avg = exp_avg.to(device);
    adam.exp_avg_sq = exp_avg_sq.to(device);
    let scalar_i64 = |tensor: Tensor, key: &str| -> Result<i64, TrainError> {
        let values = Vec::<i64>::try_from(tensor).map_err(|e| mismatch(format!("`{key}`: {e}")))?;
        match values.as_slice() {
            [value] => Ok(*value),
            _ => Err(mismatch(format!(
                "`{key}` holds {} values, not one",
                values.len()
            ))),
        }
    };
    let scalar_f64 = |tensor: Tensor, key: &str| -> Result<f64, TrainError> {
        let values = Vec::<f64>::try_from(tensor).map_err(|e| mismatch(format!("`{key}`: {e}")))?;
        match values.as_slice() {
            [value] if value.is_finite() => Ok(*value),
            _ => Err(mismatch(format!("`{key}` is not one finite number"))),
        }
    };
    let step = scalar_i64(take("state.step")?, "state.step")?;
    adam.step = usize::try_from(step).map_err(|_| mismatch(format!("`state.step` is {step}")))?;
    let steps = Vec::<i64>::try_from(take("state.loss_steps")?).map_err(|e| mismatch(e.to_string()))?;
    let losses = Vec::<f64>::try_from(take("state.loss_values")?).map_err(|e| mismatch(e.to_string()))?;
    if steps.len() != losses.len() {
        return Err(mismatch(format!(
            "{} loss steps but {} loss values",
            steps.len(),
            losses.len()
        )));
    }
    journal.loss_curve = steps
        .into_iter()
        .zip(losses)
        .map(|(s, l)| LossPoint {
            step: s.max(0) as usize,
            loss: l,
        })
        .collect();
    // Keys added later: a checkpoint without them had no open loss window and no recorded time.
    if let (Some(sum), Some(len)) = (
        rest.remove("state.loss_window_sum"),
        rest.remove("state.loss_window_len"),
    ) {
        let len = scalar_i64(len, "state.loss_window_len")?;
        journal.loss_window = (
            scalar_f64(sum, "state.loss_window_sum")?,
            usize::try_from(len).map_err(|_| mismatch(format!("`state.loss_window_len` is {len}")))?,
        );
    }
    journal.train_seconds = rest
        .remove("state.train_seconds")
        .map_or(Ok(0.0), |t| scalar_f64(t, "state.train_seconds"))?;
    Ok(())
}
