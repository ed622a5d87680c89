//! libtorch-backed velocity networks for flow matching, their parameters, optimizers and checkpoints, and the
//! token networks and losses of discrete flow matching ([`discrete`]).
//!
//! Models keep all parameters in one flat tensor ([`params::ParamStore`]) and compute their forward pass as
//! plain functions of parameter views, so the optimizer ([`optim`]) and the EMA of the weights update every
//! parameter with a handful of tensor operations. Checkpoints are safetensors files with PyTorch module names.
//! [`mlp_kernel`] evaluates a trained MLP (and its divergence) without libtorch, for sampling and likelihoods.

pub mod autograd;
pub mod checkpoint;
pub mod classifier;
pub mod discrete;
pub mod mlp;
pub mod mlp_kernel;
pub mod optim;
pub mod params;
pub mod unet;

use std::path::PathBuf;

use tch::Tensor;

pub use autograd::{DivergenceEstimator, ProbeDistribution};
pub use discrete::{
    TokenMlp, TokenMlpConfig, TokenNet, TokenSource, TokenTransformer, TokenTransformerConfig,
};
pub use mlp::{Activation, Mlp, MlpConfig, TimeEmbedding};
pub use params::{Init, ParamBuilder, ParamId, ParamStore, with_torch_seed};

/// Errors of the models crate.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration value is out of range.
    #[error("invalid model setting `{key}`: {detail}")]
    InvalidConfig {
        /// The offending key.
        key: &'static str,
        /// What was wrong and what is allowed.
        detail: String,
    },
    /// An input tensor has the wrong shape.
    #[error("input `{name}` has shape {actual:?}, expected {expected}")]
    Shape {
        /// Which input.
        name: &'static str,
        /// Its shape.
        actual: Vec<i64>,
        /// What was expected, in words.
        expected: String,
    },
    /// A checkpoint does not fit this model.
    #[error("checkpoint {path} does not fit this model: {detail}")]
    CheckpointMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The mismatching parameter.
        detail: String,
    },
    /// A backward pass was refused (e.g. an input that does not require a gradient).
    #[error("autograd: {detail}")]
    Autograd {
        /// What libtorch or the check reported.
        detail: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {detail}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// A file is not a well-formed safetensors file (truncated, a header beyond the file, an unknown dtype,
    /// a tensor whose shape does not fit its bytes, ...).
    #[error("{path}: not a valid safetensors file: {detail}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
}

/// A velocity network v_theta(x, t [, label]): maps a batch of states `x` (shape `[batch, ...]`), times `t`
/// (shape `[batch]`, or one time for the whole batch) and, for class-conditional networks, labels (`[batch]`,
/// int64; the value `num_classes` is the null label of classifier-free guidance) to outputs shaped like `x`.
pub trait VelocityNet {
    /// The network's parameters.
    fn params(&self) -> &ParamStore;

    /// The forward pass with explicit parameter views (from [`ParamStore::views_of`]), so the same network
    /// runs with its trained weights or with an EMA copy. `labels` is ignored by unconditional networks.
    fn forward_with(&self, params: &[Tensor], x: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Tensor;

    /// The forward pass with the trainable parameters, unconditional (or with the null label).
    fn forward(&self, x: &Tensor, t: &Tensor) -> Tensor {
        self.forward_with(&self.params().views(), x, t, None)
    }

    /// The number of classes of a class-conditional network (`None` when unconditional).
    fn num_classes(&self) -> Option<usize> {
        None
    }

    /// The shape of one sample (without the batch dimension).
    fn sample_shape(&self) -> Vec<i64>;

    /// The fused CPU kernel of this network with the weights `params`, where it has one (an MLP; see
    /// [`mlp_kernel`]); `None` otherwise.
    fn cpu_kernel(&self, params: &[Tensor]) -> Option<mlp_kernel::MlpKernel> {
        let _ = params;
        None
    }

    /// Floating-point operations of one forward pass per sample, at least (for choosing thread counts and for
    /// the benchmarks' roofline shares): `2 x` the parameter count, exact for an MLP, where every weight
    /// takes one multiply-add per sample.
    fn flops_per_sample(&self) -> f64 {
        2.0 * self.params().numel() as f64
    }

    /// The output and its divergence in forward mode, without autograd, for networks that can propagate
    /// tangents through their layers (`None`: the caller takes the autograd path). `x` is `[batch, D]` and
    /// the network unconditional. With `probes` (`[K, batch, D]`) the divergence is Hutchinson's
    /// `mean_k e_k^T J e_k`; without, it is exact (`D` tangents, one per coordinate). Both come back
    /// detached, the divergence shaped `[batch]`. A network may decline when the tangents would not fit
    /// `max_elements` floats.
    fn divergence_forward(
        &self,
        params: &[Tensor],
        x: &Tensor,
        t: &Tensor,
        probes: Option<&Tensor>,
        max_elements: i64,
    ) -> Option<(Tensor, Tensor)> {
        let _ = (params, x, t, probes, max_elements);
        None
    }
}

impl<N: VelocityNet + ?Sized> VelocityNet for Box<N> {
    fn params(&self) -> &ParamStore {
        (**self).params()
    }

    fn forward_with(&self, params: &[Tensor], x: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Tensor {
        (**self).forward_with(params, x, t, labels)
    }

    fn num_classes(&self) -> Option<usize> {
        (**self).num_classes()
    }

    fn sample_shape(&self) -> Vec<i64> {
        (**self).sample_shape()
    }

    fn flops_per_sample(&self) -> f64 {
        (**self).flops_per_sample()
    }

    fn cpu_kernel(&self, params: &[Tensor]) -> Option<mlp_kernel::MlpKernel> {
        (**self).cpu_kernel(params)
    }

    fn divergence_forward(
        &self,
        params: &[Tensor],
        x: &Tensor,
        t: &Tensor,
        probes: Option<&Tensor>,
        max_elements: i64,
    ) -> Option<(Tensor, Tensor)> {
        (**self).divergence_forward(params, x, t, probes, max_elements)
    }
}
