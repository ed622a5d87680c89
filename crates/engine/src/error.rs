//! Typed errors of the ferroflow library: configuration, data and training failures, each naming the file,
//! key or step that was wrong. The command-line program wraps them with anyhow context.

use std::path::PathBuf;

/// A configuration value that is out of range or inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {detail}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The TOML did not parse into the config (unknown key, wrong type, ...).
    #[error("{path}: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the key and line.
        detail: String,
    },
    /// A value is out of range.
    #[error("invalid value for `{key}`: {detail}")]
    Value {
        /// Dotted key.
        key: String,
        /// What is allowed.
        detail: String,
    },
}

impl ConfigError {
    /// A [`ConfigError::Value`].
    pub fn value(key: impl Into<String>, detail: impl Into<String>) -> Self {
        ConfigError::Value {
            key: key.into(),
            detail: detail.into(),
        }
    }
}

/// Refuses NaN and infinities for `key`.
pub fn ensure_finite(key: &str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(ConfigError::value(key, format!("{value} is not finite")))
    }
}

/// A failure while training or sampling.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The run was asked to stop (Ctrl-C, SIGTERM); the checkpoint of this step was written.
    #[error("interrupted at step {step}; its checkpoint is saved")]
    Interrupted {
        /// The last step taken and checkpointed.
        step: usize,
    },
    /// The loss became NaN or infinite.
    #[error("the loss became {value} at step {step}; the last good checkpoint (step {last_good}) is kept")]
    NonFiniteLoss {
        /// The step at which it happened.
        step: usize,
        /// The loss value.
        value: f64,
        /// The step of the last checkpoint written.
        last_good: usize,
    },
    /// The loss became NaN or infinite on one or more ranks of a data-parallel job; every rank stopped.
    #[error(
        "the loss on rank(s) {ranks:?} became non-finite at step {step}; every rank stopped, and the last good \
         checkpoint (step {last_good}) is kept"
    )]
    NonFiniteLossOnRanks {
        /// The step at which it happened.
        step: usize,
        /// The ranks whose loss was not finite.
        ranks: Vec<usize>,
        /// The step of the last checkpoint written.
        last_good: usize,
    },
    /// Another rank of the job failed; this rank stops with its message.
    #[error("rank {rank} failed: {message}")]
    OtherRank {
        /// The rank that failed.
        rank: usize,
        /// Its error.
        message: String,
    },
    /// The ranks' weights differ after a step (a replica check).
    #[error("after step {step} the ranks' weights differ: {detail}")]
    ReplicasDiverged {
        /// The step checked.
        step: usize,
        /// Which ranks hold which checksum.
        detail: String,
    },
    /// The launch does not fit the run (world size, backend, device).
    #[error("{0}")]
    Launch(String),
    /// A collective operation failed.
    #[error(transparent)]
    Collective(#[from] ferroflow_distributed::CollectiveError),
    /// A coupling failed (non-finite points, ...).
    #[error("coupling failed at step {step}: {detail}")]
    Coupling {
        /// The step.
        step: usize,
        /// The coupling crate's message.
        detail: String,
    },
    /// The configured device is not on this machine.
    #[error("run.device = {requested:?}: {detail}")]
    Device {
        /// The config's value.
        requested: String,
        /// What is missing and how to get it.
        detail: String,
    },
    /// A model error (shapes, checkpoints).
    #[error(transparent)]
    Model(#[from] ferroflow_models::ModelError),
    /// A file could not be written or read.
    #[error("{path}: {detail}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}
