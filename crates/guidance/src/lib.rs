//! Guided velocity fields for sampling: divergence-based mode seeking and classifier-free guidance.
//!
//! Along a trajectory of a deterministic flow, `d/dt ln rho(x(t), t) = -div v(x(t), t)`. Mode seeking adds
//! `lambda(t) g(x, t)` to the velocity, with `g = grad_x [-div v]`: a step towards the points where the flow
//! compresses most, i.e. where the density grows fastest. The pieces:
//!
//! - [`estimator`]: `g` by autograd, exactly ([`divergence_gradient_exact`], `D` vector-Jacobian products with
//!   `create_graph`, then one more backward pass) or by Hutchinson's estimator
//!   ([`divergence_gradient_hutchinson`], `K` probes, one backward pass each, then one more), batched over
//!   samples, for any velocity closure `Fn(&Tensor) -> Tensor` at a fixed time.
//! - [`config`]: the settings as serde structs (`deny_unknown_fields`), validated once: [`ModeSeeking`]
//!   (lambda, [`DivergenceEstimator`] (the models crate's, re-exported), [`Schedule`], [`Normalize`]) and
//!   [`ClassifierFree`].
//! - [`field`]: [`ModeSeekingField`], `v + lambda(t) g` as a `ferroflow_solvers::Field<Tensor>`, so every ODE
//!   method of the solvers crate samples with it.
//! - [`cfg`]: classifier-free guidance `(1 + w) v(x, t | c) - w v(x, t | null)` over a class-conditional
//!   [`ferroflow_models::VelocityNet`]; its closure can be wrapped in a [`ModeSeekingField`].
//! - [`mixture`]: the closed-form marginal velocity of a Gaussian mixture target as a differentiable tensor
//!   field ([`MixtureVelocity`]), to study guidance without training error.
//!
//! ```no_run
//! use ferroflow_guidance::{ModeSeeking, ModeSeekingField};
//! use ferroflow_solvers::{Method, OdeOptions, solve};
//! use tch::{Device, Kind, Tensor};
//!
//! // Any closure that records the autograd graph: here an analytic field, usually a network's forward pass.
//! let velocity = |x: &Tensor, t: f64| (x * (1.0 - t)).tanh() - x;
//! let config: ModeSeeking = toml::from_str("lambda = 0.1\nestimator = { kind = \"exact\" }").unwrap();
//! let mut field = ModeSeekingField::new(velocity, config)?;
//! let x0 = Tensor::randn([256, 2], (Kind::Float, Device::Cpu));
//! let solution = solve(&mut field, x0, 0.0, 1.0, &OdeOptions::fixed(Method::Euler, 100))?;
//! # let _ = solution;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cfg;
pub mod config;
pub mod estimator;
pub mod field;
pub mod mixture;

pub use cfg::{classifier_free_velocity, combine_classifier_free};
pub use config::{ClassifierFree, ModeSeeking, Normalize, Schedule};
pub use estimator::{DivergenceGradient, divergence_gradient_exact, divergence_gradient_hutchinson};
// The estimator settings are the models crate's, shared with likelihoods; re-exported so guidance settings
// can be written with this crate alone.
pub use ferroflow_models::autograd::{DivergenceEstimator, ProbeDistribution};
pub use field::{GuidanceStats, ModeSeekingField, normalize_gradient};
pub use mixture::MixtureVelocity;

use ferroflow_models::ModelError;
use ferroflow_paths::PathsError;

/// Errors of the guidance crate.
#[derive(Debug, thiserror::Error)]
pub enum GuidanceError {
    /// A setting is out of range.
    #[error("invalid guidance setting `{key}`: {detail}")]
    InvalidConfig {
        /// The offending key (dotted for nested settings, e.g. `schedule.t_start`).
        key: &'static str,
        /// What was wrong and what is allowed.
        detail: String,
    },
    /// A class was asked of a model that has no class labels.
    #[error(
        "class {class} was asked for, but the model is unconditional (it has no class labels); classifier-free \
         guidance and --class need a class-conditional model"
    )]
    Unconditional {
        /// The class asked for.
        class: usize,
    },
    /// A class outside the model's range.
    #[error("class {class} is outside 0..{num_classes} (the model's classes)")]
    ClassOutOfRange {
        /// The class asked for.
        class: usize,
        /// The model's number of classes.
        num_classes: usize,
    },
    /// An autograd step or a model input failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A closed-form path or mixture quantity failed.
    #[error(transparent)]
    Paths(#[from] PathsError),
}
