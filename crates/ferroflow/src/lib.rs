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
//! - [`guided`]: guided sampling (mode seeking, classifier-free guidance) and the guidance effect study.
//! - [`images`]: Fashion-MNIST files, the project's classifier, its Frechet distance, image grids.
//! - [`image_eval`]: `ferroflow image-eval`, a Fashion-MNIST run measured with that classifier (Frechet
//!   distance, class accuracy and confidence over guidance sweeps, bits/dim of test images).
//! - [`bench_guidance`]: `ferroflow bench guidance`, the cost of a guided sampling step.
//! - [`run`]: whole runs (train, finish, evaluate) and the exact W2 metric.
//! - [`report`]: a run's report: pictures (trajectories, velocity fields, density, loss, animation) and
//!   `report.md`.
//! - [`files`], [`plot`], [`progress`]: run folders, pictures, progress display.

pub mod batch;
pub mod bench;
pub mod bench2d;
pub mod bench_guidance;
pub mod bench_train;
pub mod config;
pub mod data;
pub mod error;
pub mod files;
pub mod guided;
pub mod image_eval;
pub mod images;
pub mod likelihood;
pub mod plot;
pub mod progress;
pub mod report;
pub mod run;
pub mod sample;
pub mod train;

pub use config::RunConfig;
pub use error::{ConfigError, TrainError};
