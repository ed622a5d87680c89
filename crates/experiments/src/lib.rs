//! ferroflow's benchmarks and studies, beside the library rather than in it (as candle keeps its examples):
//! each takes a plain settings struct, builds its run configs as typed values, and times with the one
//! helper in [`timing`].
//!
//! - [`bench`]: `ferroflow bench likelihood | train | guidance`, timings against the peers' figures.
//! - [`bench2d`]: the 2D benchmark of Tong et al. 2023 (W2, NPE and path-energy excess per method and task).
//! - [`image_eval`]: a Fashion-MNIST run measured with the project's classifier over guidance sweeps.
//! - [`guidance_study`]: the effect study of mode-seeking guidance on 2D Gaussian mixtures.
//! - [`roofline`]: this machine's matrix-multiply rate and the share of it each benchmark reached.
//! - [`timing`]: medians of wall and CPU time over repeats, and the machine's load.

pub mod bench;
pub mod bench2d;
pub mod guidance_study;
pub mod image_eval;
pub mod roofline;
pub mod timing;
