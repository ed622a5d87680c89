//! The ferroflow engine: everything a flow-matching run does, as a library with plain settings structs and
//! no command-line, plotting or terminal dependency. Data flows one way through it:
//! config -> data / batch -> train -> sample / likelihood -> metrics and run folders.
//!
//! - [`config`]: the TOML run configuration, its sections and their validation.
//! - [`data`]: the 2D benchmark data sets, Gaussian mixtures and Fashion-MNIST, sampled from a seed.
//! - [`stream`]: the run's named random streams (one enum, never an offset chosen by a caller).
//! - [`batch`]: training batches as a pure function of `(seed, step)`, coupling included.
//! - [`train`]: the training loop with its observer seam ([`train::observe`]), checkpoints and resume.
//! - [`sample`]: a trained flow ([`sample::TrainedFlow`]) and plain sampling with any ODE method.
//! - [`guided`]: guided sampling (mode seeking, classifier-free guidance) with validated settings.
//! - [`likelihood`]: log-likelihood of points under a trained run (exact or Hutchinson divergence), bits/dim.
//! - [`threads`]: libtorch threads for sampling and likelihoods, chosen by the work's size.
//! - [`images`]: Fashion-MNIST files, the project's classifier, its Frechet distance, image grids as pixels.
//! - [`metrics`]: a run's typed metrics (`metrics.json`).
//! - [`run`]: whole runs (train, finish, evaluate) in run folders, each a transaction under [`lock`].
//! - [`tokens`] and [`discrete`]: token targets (`tokens_2d`, `words`) and discrete runs: batches, the token
//!   trainer on the same loop, the Euler CTMC sampler on tensors.
//! - [`manifold`]: runs on spheres, tori and their products (`data.manifold`), on `ferroflow-manifolds`.
//! - [`distributed`]: data-parallel training over MPI or NCCL: shards of the global batch, ranks agreeing,
//!   rank 0's state broadcast, the replica check.
//! - [`lock`]: one process at a time in a run folder; leftovers of killed writers removed.
//! - [`files`]: atomic writes, `.npy` arrays and run folders.
//! - [`npy`]: the `.npy` reader, with every size checked before allocating.

pub mod batch;
pub mod config;
pub mod data;
pub mod discrete;
pub mod distributed;
pub mod error;
pub mod files;
pub mod guided;
pub mod images;
pub mod likelihood;
pub mod lock;
pub mod manifold;
pub mod metrics;
pub mod npy;
pub mod run;
pub mod sample;
pub mod stream;
pub mod threads;
pub mod tokens;
pub mod train;

pub use config::RunConfig;
pub use error::{ConfigError, TrainError};
