//! ferroflow: configs, data sets, training and evaluation of flow-matching models, wired from the workspace's
//! math crates (paths, coupling, solvers) and its torch crate (models).
//!
//! - [`config`]: the TOML run configuration, validated once.
//! - [`data`]: the 2D benchmark data sets and Gaussian mixtures, generated from a seed.
//! - [`batch`]: training batches as a pure function of `(seed, step)`, coupling included.
//! - [`train`]: the training engine, checkpoints and resume.
//! - [`sample`]: sampling a trained flow with any ODE method.
//! - [`likelihood`]: log-likelihood of points under a trained run (exact or Hutchinson divergence), bits/dim.
//! - [`bench`]: `ferroflow bench`, timings against the peers' figures.
//! - [`run`]: whole runs (train, finish, evaluate) and the exact W2 metric.
//! - [`files`], [`plot`], [`progress`]: run folders, pictures, progress display.

pub mod batch;
pub mod bench;
pub mod config;
pub mod data;
pub mod error;
pub mod files;
pub mod likelihood;
pub mod plot;
pub mod progress;
pub mod run;
pub mod sample;
pub mod train;

pub use config::RunConfig;
pub use error::{ConfigError, TrainError};
