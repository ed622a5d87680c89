//! The training engine: batches from a producer thread, the regression step, checkpoints and resume.
//!
//! Conditional flow matching minimises E_{t, (x0, x1) ~ pi} |v_theta(x_t, t) - u_t(x_t | x0, x1)|^2
//! (Lipman et al. 2023, eq. 9; Tong et al. 2023, eq. 14). The batch of step k is a pure function of
//! `(seed, k)` ([`crate::batch`]); the model starts from `tch::manual_seed(seed)`. A checkpoint holds the
//! weights, their EMA, both Adam moments, the step and the loss history in one safetensors file written
//! atomically, so resuming from it reproduces the uninterrupted run's loss curve exactly on the CPU.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use ferroflow_models::checkpoint::{load_tensors, save_tensors};
use ferroflow_models::optim::{Ema, FlatAdam};
use ferroflow_models::unet::Unet;
use ferroflow_models::{Mlp, MlpConfig, VelocityNet};
use tch::{Device, Kind, Tensor};

use crate::batch::{Batch, BatchMaker};
use crate::config::{ModelKind, RunConfig};
use crate::error::TrainError;
use crate::progress::Progress;

/// The file holding the full training state.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The file holding the weights used for sampling (the EMA when enabled), with PyTorch parameter names.
pub const MODEL_FILE: &str = "model.safetensors";

/// One recorded point of the loss curve: the mean loss over the `log_every` steps ending at `step`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossPoint {
    /// Last step of the window (1-based).
    pub step: usize,
    /// Mean training loss over the window.
    pub loss: f64,
}

/// What a finished training run reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// Steps taken in this invocation.
    pub steps_run: usize,
    /// Total steps of the run.
    pub total_steps: usize,
    /// Wall time of the steps in this invocation.
    pub seconds: f64,
    /// The loss curve from step 1.
    pub loss_curve: Vec<LossPoint>,
}

impl TrainSummary {
    /// Steps per second in this invocation.
    pub fn steps_per_second(&self) -> f64 {
        self.steps_run as f64 / self.seconds.max(1e-9)
    }
}

/// Parses `cpu`, `cuda`, `cuda:N`.
pub fn parse_device(name: &str) -> Device {
    match name {
        "cpu" => Device::Cpu,
        "cuda" => Device::cuda_if_available(),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .filter(|_| tch::Cuda::is_available())
            .map_or(Device::Cpu, Device::Cuda),
    }
}

/// Builds the run's network with its seeded initialisation.
pub fn build_model(config: &RunConfig) -> Result<Box<dyn VelocityNet>, TrainError> {
    tch::manual_seed(config.run.seed as i64);
    let model = &config.model;
    let device = parse_device(&config.run.device);
    Ok(match model.kind {
        ModelKind::Mlp => {
            let mlp = MlpConfig {
                dim: config.data.target.dim(),
                width: model.width,
                depth: model.depth,
                activation: model.activation,
                time_embedding: model.time_embedding,
            };
            Box::new(Mlp::new(mlp, device)?)
        }
        ModelKind::Unet => Box::new(Unet::new(model.unet.clone(), device)?),
    })
}

/// Sets libtorch's thread count from the config (0 leaves libtorch's default).
pub fn apply_threads(config: &RunConfig) {
    if config.run.threads > 0 {
        tch::set_num_threads(config.run.threads as i32);
    }
}

/// Trains (or resumes training of) the run in `run_dir`, writing checkpoints there.
pub fn train(
    config: &RunConfig,
    run_dir: &Path,
    resume: bool,
    progress: &mut Progress,
) -> Result<TrainSummary, TrainError> {
    apply_threads(config);
    let net = build_model(config)?;
    let flat = net.params().flat().shallow_clone();
    let mut adam = FlatAdam::new(config.train.optimizer.clone(), &flat)?;
    let mut ema = if config.train.ema_decay > 0.0 {
        Some(Ema::new(config.train.ema_decay, &flat)?)
    } else {
        None
    };
    let mut loss_curve = Vec::new();
    let checkpoint_path = run_dir.join(CHECKPOINT_FILE);
    if resume {
        let state = load_checkpoint(&checkpoint_path, net.as_ref(), &mut adam, ema.as_mut())?;
        loss_curve = state;
    }
    let start_step = adam.step;
    let total = config.train.steps;
    if start_step > total {
        return Err(TrainError::Io {
            path: checkpoint_path,
            detail: format!("the checkpoint is at step {start_step}, beyond train.steps = {total}"),
        });
    }
    let mut maker = BatchMaker::new(config).map_err(|e| TrainError::Io {
        path: run_dir.to_path_buf(),
        detail: e.to_string(),
    })?;
    let batch_size = config.train.batch_size as i64;
    let shape: Vec<i64> = std::iter::once(batch_size).chain(net.sample_shape()).collect();
    let device = net.params().device();
    let log_every = config.train.log_every;
    let checkpoint_every = config.train.checkpoint_every;
    progress.start(start_step, total);
    let started = Instant::now();
    let mut window_sum = 0.0;
    let mut window_len = 0usize;
    let mut last_good = start_step;

    let result =
        std::thread::scope(|scope| -> Result<(), TrainError> {
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
            for step in start_step + 1..=total {
                let batch = from_producer
                    .recv()
                    .expect("the producer sends one batch per step")?;
                let x_t = Tensor::from_slice(&batch.x_t)
                    .view(shape.as_slice())
                    .to_device(device);
                let t = Tensor::from_slice(&batch.t).to_device(device);
                let target = Tensor::from_slice(&batch.target)
                    .view(shape.as_slice())
                    .to_device(device);
                let labels =
                    (!batch.labels.is_empty()).then(|| Tensor::from_slice(&batch.labels).to_device(device));
                let _ = recycle.send(batch);
                let output = net.forward_with(&net.params().views(), &x_t, &t, labels.as_ref());
                let loss = (output - target).square().mean(Kind::Float);
                loss.backward();
                let loss_value = loss.double_value(&[]);
                if !loss_value.is_finite() {
                    return Err(TrainError::NonFiniteLoss {
                        step,
                        value: loss_value,
                        last_good,
                    });
                }
                adam.step(&flat);
                if let Some(ema) = ema.as_mut() {
                    ema.update(&flat);
                }
                window_sum += loss_value;
                window_len += 1;
                if window_len == log_every || step == total {
                    loss_curve.push(LossPoint {
                        step,
                        loss: window_sum / window_len as f64,
                    });
                    window_sum = 0.0;
                    window_len = 0;
                }
                progress.update(step, loss_value);
                if (checkpoint_every > 0 && step % checkpoint_every == 0) || step == total {
                    save_checkpoint(&checkpoint_path, net.as_ref(), &adam, ema.as_ref(), &loss_curve)?;
                    last_good = step;
                }
            }
            Ok(())
        });
    progress.finish();
    result?;
    let seconds = started.elapsed().as_secs_f64();
    let sampling_weights = ema.as_ref().map_or(&flat, |e| &e.weights);
    save_tensors(
        &net.params().named_of(sampling_weights),
        &run_dir.join(MODEL_FILE),
    )?;
    Ok(TrainSummary {
        steps_run: total - start_step,
        total_steps: total,
        seconds,
        loss_curve,
    })
}

fn save_checkpoint(
    path: &Path,
    net: &dyn VelocityNet,
    adam: &FlatAdam,
    ema: Option<&Ema>,
    loss_curve: &[LossPoint],
) -> Result<(), TrainError> {
    let params = net.params();
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
    Ok(save_tensors(&named, path)?)
}

/// Restores weights, EMA, optimizer moments and step; returns the loss curve so far.
fn load_checkpoint(
    path: &Path,
    net: &dyn VelocityNet,
    adam: &mut FlatAdam,
    ema: Option<&mut Ema>,
) -> Result<Vec<LossPoint>, TrainError> {
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
    let params = net.params();
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
    adam.step = take("state.step")?.int64_value(&[0]) as usize;
    let steps = Vec::<i64>::try_from(take("state.loss_steps")?).map_err(|e| mismatch(e.to_string()))?;
    let losses = Vec::<f64>::try_from(take("state.loss_values")?).map_err(|e| mismatch(e.to_string()))?;
    Ok(steps
        .into_iter()
        .zip(losses)
        .map(|(s, l)| LossPoint {
            step: s as usize,
            loss: l,
        })
        .collect())
}
