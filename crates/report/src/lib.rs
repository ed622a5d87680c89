//! Every picture and report page of ferroflow. This crate alone knows plotters: the engine computes, this
//! crate draws. One font set-up (DejaVu Sans, shipped in `assets/`), and every file is written atomically
//! (drawn under a temporary name beside the target, then renamed), so a reader never sees half a picture.
//!
//! - [`plot`]: the picture primitives over plain arrays (samples, trajectories, velocity fields, densities,
//!   loss curves, animations, RGB images).
//! - [`samples`]: the pictures drawn right after training (`samples.png`).
//! - [`run_report`]: a trained run's pictures and its `report.md`.
//! - [`charts`]: line charts of measured series and grids of scatter plots, for studies and benchmarks.

pub mod charts;
pub mod plot;
pub mod run_report;
pub mod samples;

pub use run_report::write_report;
pub use samples::write_samples_picture;
